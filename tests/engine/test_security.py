"""Files from someone else never run code: a malicious `.pyth` (its unpickling creates a marker file)
given as TEST.CHECKPOINT_FILE_PATH, as TRAIN.CHECKPOINT_FILE_PATH, or dropped into
OUTPUT_DIR/checkpoints before an auto-resume is refused with a message naming it, and the marker
never appears (real runs of the tiny synthetic config); an older vbench's checkpoint (NumPy RNG
states) is refused, converted with `vbench checkpoint convert --trust`, then resumed; the launcher
reads a worker's error file without unpickling objects."""
import argparse
import fractions
import logging
import os
import pickle
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from vbench.bench.results import load_results
from vbench.engine.checkpoint import Checkpointer, load_checkpoint_file
from vbench.engine.checkpoint_convert import convert_trusted_file
from vbench.engine.failures import _read_traceback
from vbench.errors import CheckpointError, UnsafeFileError

from scaffold import REPO, run_net


class RunsCode:
    """Unpickling this runs a shell command that creates `marker` (the payload of the issue)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def plant(path, marker):
    """A file that looks like a vbench checkpoint and runs code when unpickled unsafely."""
    torch.save({"format": "vbench_checkpoint", "epoch": 2, "model": {}, "payload": RunsCode(marker)}, path)
    return str(path)


def finish(process):
    output = process.communicate(timeout=300)[0]
    return process.returncode, output


def refusal(path):
    return f"checkpoint '{path}' holds pickled Python objects other than tensors"


# ------------------------------------------------------------------------------ the planted file
def test_the_planted_file_runs_code_when_unpickled_unsafely(tmp_path):
    marker = tmp_path / "marker"
    path = plant(tmp_path / "evil.pyth", marker)
    torch.load(path, weights_only=False)  # what vbench did before: the payload runs
    assert marker.exists()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_planted_file_is_refused_by_name_in_either_torch_format(tmp_path, zip_format):
    marker, path = tmp_path / "marker", str(tmp_path / "evil.pyth")
    torch.save({"model": {}, "payload": RunsCode(marker)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeFileError, match=r"evil.pyth' holds pickled Python objects .*\(posix.system\)"):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_auto_resume_refuses_a_planted_checkpoint_and_resumes_from_the_previous_one(tmp_path, caplog):
    marker = tmp_path / "marker"
    ckpt = Checkpointer(str(tmp_path / "run"), keep=2)
    ckpt.save({"model": {"w": torch.ones(2)}}, 1)
    evil = plant(ckpt.path_for(7), marker)
    logging.getLogger("vbench").propagate = True
    with caplog.at_level(logging.WARNING, logger="vbench"):
        path, state = ckpt.load_newest()
    assert path == ckpt.path_for(1) and state["epoch"] == 1
    assert refusal(evil) in caplog.text and "(posix.system)" in caplog.text and "NOT load" in caplog.text
    assert not marker.exists()


def test_a_folder_holding_only_refused_checkpoints_stops_instead_of_starting_over(tmp_path):
    marker = tmp_path / "marker"
    ckpt = Checkpointer(str(tmp_path / "run"))
    evil = plant(ckpt.path_for(3), marker)
    with pytest.raises(UnsafeFileError, match="no checkpoint in .* can be resumed") as err:
        ckpt.load_newest()
    assert evil in str(err.value) and "vbench checkpoint convert --trust" in str(err.value)
    assert not marker.exists()


def test_the_launcher_reads_a_worker_error_file_without_unpickling_objects(tmp_path):
    marker = tmp_path / "marker"
    planted = tmp_path / "pytorch-errorfile-x.pickle"
    planted.write_bytes(pickle.dumps(RunsCode(marker)))
    assert _read_traceback(str(planted)) == "" and not marker.exists()
    assert not planted.exists()  # removed, as torch's own error files are
    written = tmp_path / "pytorch-errorfile-y.pickle"
    written.write_bytes(pickle.dumps("Traceback (most recent call last):\nValueError: x\n"))
    assert _read_traceback(str(written)).endswith("ValueError: x\n")


# ------------------------------------------------------------------------------ convert --trust
def test_convert_turns_numpy_values_and_namespaces_into_plain_data(tmp_path):
    path, out = str(tmp_path / "foreign.pth"), str(tmp_path / "plain.pth")
    model = torch.nn.BatchNorm1d(2).state_dict()  # an OrderedDict with version _metadata
    torch.save({"model_state": model, "best": np.float64(0.75), "ids": np.arange(3),
                "args": argparse.Namespace(lr=0.1, epochs=np.int64(5))}, path)
    message = convert_trusted_file(path, out)
    assert message == (f"converted '{path}' (a torch file): 2 NumPy number(s) to Python numbers, "
                       f"1 NumPy array(s) to tensors, 1 argparse.Namespace(s) to dicts. Wrote '{out}', "
                       f"which vbench's safe loader (torch.load with weights_only=True) reads.")
    loaded = torch.load(out, weights_only=True)
    assert loaded["best"] == 0.75 and type(loaded["best"]) is float
    assert torch.equal(loaded["ids"], torch.arange(3)) and loaded["args"] == {"lr": 0.1, "epochs": 5}
    assert loaded["model_state"]._metadata == model._metadata
    assert all(torch.equal(loaded["model_state"][k], v) for k, v in model.items())
    assert "nothing to convert" in convert_trusted_file(out)


def test_convert_writes_nothing_when_an_object_it_does_not_know_remains(tmp_path):
    path = str(tmp_path / "odd.pth")
    torch.save({"model": {"w": torch.ones(1)}, "ratio": fractions.Fraction(1, 3), "x": np.float32(1)}, path)
    before = open(path, "rb").read()
    with pytest.raises(CheckpointError, match=r"fractions.Fraction; at file\['ratio'\].*nothing was written"):
        convert_trusted_file(path)
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["odd.pth"]


# ------------------------------------------------------------------------------ real runs
@pytest.fixture(scope="module")
def one_epoch_run(tiny_cfg_file, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    out = tmp_path_factory.mktemp("one_epoch") / "run"
    run_net(tiny_cfg_file, out, "SOLVER.MAX_EPOCH", "1", "TEST.ENABLE", "False")
    return out


def test_vbench_test_refuses_a_malicious_test_checkpoint(tiny_cfg_file, tmp_path):  # noqa: F811
    marker = tmp_path / "marker"
    evil = plant(tmp_path / "evil.pyth", marker)
    process = subprocess.Popen(
        [sys.executable, "-m", "vbench.cli", "test", "--cfg", tiny_cfg_file, "OUTPUT_DIR",
         str(tmp_path / "out"), "TEST.CHECKPOINT_FILE_PATH", evil],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    code, output = finish(process)
    assert code == 1, output[-3000:]
    assert f"vbench: error: {refusal(evil)}" in output and "(posix.system)" in output, output[-3000:]
    assert "vbench did NOT load it" in output and "Traceback" not in output
    assert not marker.exists()


def test_training_refuses_a_malicious_initial_checkpoint(tiny_cfg_file, tmp_path):  # noqa: F811
    marker = tmp_path / "marker"
    evil = plant(tmp_path / "evil.pyth", marker)
    code, output = finish(run_net(tiny_cfg_file, tmp_path / "out", "SOLVER.MAX_EPOCH", "1",
                                  "TRAIN.CHECKPOINT_FILE_PATH", evil, wait=False))
    assert code == 1, output[-3000:]
    assert f"vbench: error: {refusal(evil)}" in output and "vbench did NOT load it" in output
    assert not marker.exists()
    assert not os.path.exists(tmp_path / "out" / "checkpoints" / "checkpoint_epoch_00001.pyth")  # no training


def test_auto_resume_skips_a_malicious_checkpoint_dropped_into_the_run_folder(
        one_epoch_run, tiny_cfg_file, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    shutil.copytree(one_epoch_run, out)
    marker = tmp_path / "marker"
    evil = plant(out / "checkpoints" / "checkpoint_epoch_00002.pyth", marker)
    output = run_net(tiny_cfg_file, out, "SOLVER.MAX_EPOCH", "2", "TEST.ENABLE", "False")
    assert f"refusing checkpoint: {refusal(evil)}" in output and "vbench did NOT load it" in output
    assert f"resumed from {out / 'checkpoints' / 'checkpoint_epoch_00001.pyth'}" in output
    assert not marker.exists()
    assert [e["epoch"] for e in load_results(str(out))["epochs"]] == [1, 2]
    assert load_checkpoint_file(evil)["epoch"] == 2  # epoch 2 trained again: a real checkpoint now


def make_old_style(path):
    """Rewrite a checkpoint's RNG states as vbench wrote them before plain data: Python's and
    NumPy's own tuples (NumPy's holds an ndarray, which the safe loader does not rebuild)."""
    state = torch.load(path, weights_only=True)
    for rng in state["rng_states"]:
        py, npy = rng["python"], rng["numpy"]
        rng["python"] = (py["version"], tuple(py["internal"]), py["gauss_next"])
        rng["numpy"] = (npy["bit_generator"], np.asarray(npy["key"], dtype=np.uint32), npy["pos"],
                        npy["has_gauss"], npy["gauss"])
    torch.save(state, path)


def test_an_older_checkpoint_is_refused_then_converted_with_trust_and_resumed(
        one_epoch_run, tiny_cfg_file, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    shutil.copytree(one_epoch_run, out)
    first = str(out / "checkpoints" / "checkpoint_epoch_00001.pyth")
    make_old_style(first)
    code, output = finish(run_net(tiny_cfg_file, out, "SOLVER.MAX_EPOCH", "2", "TEST.ENABLE", "False",
                                  wait=False))
    assert code == 1 and refusal(first) in output and "numpy" in output, output[-3000:]
    assert "can be resumed" in output and "vbench checkpoint convert --trust FILE" in output
    assert not os.path.exists(out / "checkpoints" / "checkpoint_epoch_00002.pyth")

    convert = [sys.executable, "-m", "vbench.cli", "checkpoint", "convert", first]
    refused = subprocess.run(convert, cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "Add --trust" in refused.stderr  # never without --trust
    converted = subprocess.run(convert + ["--trust"], cwd=REPO, capture_output=True, text=True)
    assert converted.returncode == 0, converted.stderr
    assert (f"converted '{first}' (a vbench training checkpoint (epoch 1)): 1 RNG state(s) of a process"
            in converted.stdout) and f"Wrote '{first}'" in converted.stdout
    torch.load(first, weights_only=True)  # the safe loader reads it now

    output = run_net(tiny_cfg_file, out, "SOLVER.MAX_EPOCH", "2", "TEST.ENABLE", "False")
    assert f"resumed from {first}" in output
    assert [e["epoch"] for e in load_results(str(out))["epochs"]] == [1, 2]
