"""benchmarks/bench_model.py --matrix: the cells it measures, the JSON it leaves (also when its
time budget runs out), on tiny X3D-M clips on the CPU. Timings are not checked, only shapes."""
import contextlib
import io
import json
import re
import time

import pytest
import torch

import bench_model
import model_matrix

TINY = ["--matrix", "--device", "cpu", "--threads", "1", "--batch", "1", "--frames", "4",
        "--crop", "32", "--warmup", "1", "--steps", "1", "--rounds", "1", "--models", "x3d_m"]


def test_cells_cover_the_kernel_and_attention_paths_with_one_baseline():
    cpu = torch.device("cpu")
    for model in model_matrix.FAMILIES:
        cells = model_matrix.cells_of(model)
        assert cells[0] == model_matrix.Cell(model, "pytorchvideo")  # first: every ratio needs it
        assert [c.impl for c in cells].count("pytorchvideo") == 1
        assert len(set(cells)) == len(cells) and model_matrix.auto_cell(model, cpu) in cells
        assert {c.batch for c in cells} == {16}
    x3d = model_matrix.cells_of("x3d_m")
    triton = {c.precision for c in x3d if c.variant == "triton" and c.channels_last}
    assert triton == {"bf16", "fp16"}  # the kernel in both half precisions, channels-last
    assert {(c.precision, c.channels_last) for c in x3d if c.variant == "default" and c.impl == "vbench"} \
        == {("fp32", False), ("bf16", False)}
    mvit = model_matrix.cells_of("mvit_b_16x4")
    assert {c.sdpa for c in mvit} == {"default", "flash", "efficient", "cudnn", "math"}
    assert any(c.variant == "triton" and c.precision == "bf16" for c in mvit)


def test_later_batches_take_the_baseline_auto_and_the_fastest_other_cell():
    args = bench_model.parse_args(["--matrix", "--batch", "16,recipe,16,2"])
    assert model_matrix.batch_sizes(args, "x3d_m") == [16, 64, 2]  # the recipe: 64 clips on one GPU
    assert model_matrix.batch_sizes(args, "mvit_b_16x4") == [16, 48, 2]
    first = [dict(vars(cell), clips_per_s=rate) for cell, rate in zip(
        model_matrix.cells_of("x3d_m"), (100, 120, 300, 290, 150))]
    cells = model_matrix.later_cells("x3d_m", 64, first, torch.device("cpu"))
    auto = model_matrix.auto_cell("x3d_m", torch.device("cpu"))
    fastest = model_matrix.cells_of("x3d_m")[2]  # bf16 channels_last triton, 300 clips/s
    assert cells == [model_matrix.Cell("x3d_m", "pytorchvideo", batch=64),
                     model_matrix.replace(auto, batch=64), model_matrix.replace(fastest, batch=64)]


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
    cells = model_matrix.cells_of("x3d_m", 1)
    triton = [c for c in cells if c.variant == "triton"]  # the interpreter gives no figure
    skipped = {model_matrix.cell_of(s): s["reason"] for s in record["skipped"]}
    assert all(c in skipped and "Triton's interpreter" in skipped[c] for c in triton)
    # Without PyTorchVideo (the "bench" extra) its cell is skipped too, naming the package.
    others = {c: reason for c, reason in skipped.items() if c not in triton}
    assert all(c.impl == "pytorchvideo" and "pytorchvideo" in reason for c, reason in others.items())
    assert len(record["cells"]) == len(cells) - len(skipped)
    for cell in record["cells"]:
        assert cell["model"] == "x3d_m" and cell["impl"] in ("vbench", "pytorchvideo") and cell["batch"] == 1
        assert cell["precision"] in ("fp32", "bf16", "fp16") and isinstance(cell["channels_last"], bool)
        assert cell["compile"] is False and cell["clips_per_s"] > 0 and cell["mfu"] is None  # no peak on CPU
    assert sum(cell["auto"] for cell in record["cells"]) == 1
    assert "| x3d_m | 1 | vbench fp32 contiguous (auto) |" in printed and "rule that picks it" in printed


@pytest.mark.extras
def test_matrix_measures_the_pytorchvideo_baseline_and_the_ratios_to_it(tiny_matrix):
    pytest.importorskip("pytorchvideo")
    record, printed = tiny_matrix
    assert all(s["variant"] == "triton" for s in record["skipped"])  # the interpreter gives no figure
    assert [c["impl"] for c in record["cells"]].count("pytorchvideo") == 1
    assert re.search(r"\| x3d_m \| 1 \| vbench fp32 contiguous \(auto\) \| [0-9.]+ \| [0-9.]+x \|", printed), printed


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
