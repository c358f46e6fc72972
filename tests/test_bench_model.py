"""benchmarks/bench_model.py --matrix: the cells it measures, the JSON it leaves (also when its
time budget runs out), on tiny X3D-M clips on the CPU. Timings are not checked, only shapes."""
import contextlib
import io
import itertools
import json
import os
import re
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import bench_model  # noqa: E402
import model_matrix  # noqa: E402

TINY = ["--matrix", "--device", "cpu", "--threads", "1", "--batch", "1", "--frames", "4",
        "--crop", "32", "--warmup", "1", "--steps", "1", "--rounds", "1", "--models", "x3d_m"]


def test_cells_cover_precision_and_layout_for_both_models_with_one_baseline():
    cpu = torch.device("cpu")
    for model in model_matrix.FAMILIES:
        cells = model_matrix.cells_of(model)
        assert cells[0] == model_matrix.Cell(model, "pytorchvideo")  # first: every ratio needs it
        assert [c.impl for c in cells].count("pytorchvideo") == 1
        grid = {(c.precision, c.channels_last) for c in cells if c.variant == "default" and c.impl == "vbench"}
        assert grid == set(itertools.product(("fp32", "bf16"), (False, True)))
        assert len(set(cells)) == len(cells) and model_matrix.auto_cell(model, cpu) in cells
    variants = {c.variant for c in model_matrix.cells_of("x3d_m")}
    assert variants == {"default", "contiguous", "contiguous_fp32"}


@pytest.fixture(scope="module")
def tiny_matrix(tmp_path_factory):
    """One tiny matrix run: the JSON it left and what it printed."""
    out = tmp_path_factory.mktemp("matrix") / "matrix.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        bench_model.main(TINY + ["--json", str(out)])
    return json.loads(out.read_text()), printed.getvalue()


def test_matrix_writes_every_cell_to_json(tiny_matrix):
    record, printed = tiny_matrix
    assert isinstance(record["device"], str) and record["torch"] == torch.__version__
    # Without PyTorchVideo (the "bench" extra) its cell is recorded as skipped, naming the package.
    assert all(s["impl"] == "pytorchvideo" and "pytorchvideo" in s["reason"] for s in record["skipped"])
    assert len(record["cells"]) + len(record["skipped"]) == len(model_matrix.cells_of("x3d_m"))
    vbench_cells = [c for c in model_matrix.cells_of("x3d_m") if c.impl == "vbench"]
    assert [c["impl"] for c in record["cells"]].count("vbench") == len(vbench_cells)
    for cell in record["cells"]:
        assert cell["model"] == "x3d_m" and cell["impl"] in ("vbench", "pytorchvideo")
        assert cell["precision"] in ("fp32", "bf16") and isinstance(cell["channels_last"], bool)
        assert cell["compile"] is False and cell["clips_per_s"] > 0 and cell["mfu"] is None  # no peak on CPU
    assert sum(cell["auto"] for cell in record["cells"]) == 1
    assert "| x3d_m | vbench fp32 contiguous (auto) |" in printed and "rule that picks it" in printed


@pytest.mark.extras
def test_matrix_measures_the_pytorchvideo_baseline_and_the_ratios_to_it(tiny_matrix):
    pytest.importorskip("pytorchvideo")
    record, printed = tiny_matrix
    assert record["skipped"] == [] and [c["impl"] for c in record["cells"]].count("pytorchvideo") == 1
    assert re.search(r"\| x3d_m \| vbench fp32 contiguous \(auto\) \| [0-9.]+ \| [0-9.]+x \|", printed), printed


def test_profile_names_the_top_ops_forward_and_backward():
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 2 * 6 * 6, 2))
    clips, labels = torch.randn(2, 3, 4, 8, 8), torch.tensor([0, 1])
    runner = bench_model.Runner(model, "cpu", clips, labels)
    runner.time_steps(1)
    ops = model_matrix.top_ops(runner, count=3)
    assert list(ops) == ["forward", "backward"] and all(list(kinds) == ["ops"] for kinds in ops.values())
    forward = dict(ops["forward"]["ops"])  # (CUDA adds the kernels)
    assert len(forward) == 3 and all(name.startswith("aten::") for name in forward)
    assert 0 < sum(forward.values()) <= 1 and any("conv" in name for name in forward)
    assert any("convolution_backward" in name for name, _ in ops["backward"]["ops"])


def test_a_spent_budget_skips_cells_and_still_writes_json(tmp_path):
    out = tmp_path / "matrix.json"
    bench_model.main(TINY + ["--json", str(out), "--budget", "0"])
    record = json.loads(out.read_text())
    assert record["cells"] == [] and len(record["skipped"]) == len(model_matrix.cells_of("x3d_m"))
    assert {cell["reason"] for cell in record["skipped"]} == {"time budget spent"}


def test_a_cell_past_its_time_limit_is_interrupted():
    with pytest.raises(model_matrix.CellTimeout, match="still running"):
        with model_matrix.time_limit(0.05):
            time.sleep(5)
