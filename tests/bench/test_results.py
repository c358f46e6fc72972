"""results.json: writer round trip, schema validation, atomic writes, config hash, sysinfo blocks."""
import copy
import json
import os

import pytest
import torch

from vbench.bench import sysinfo
from vbench.bench.clock import BenchmarkClock
from vbench.bench.compliance_keys import is_resource_key
from vbench.bench.results import (
    RESULTS_FILE,
    ResultsError,
    atomic_write_json,
    config_hash,
    config_to_dict,
    load_results,
    target_reached,
    validate_results,
)
from vbench.cli.sysinfo import main as sysinfo_main
from vbench.config import get_cfg

from scaffold import CPU_RANK, make_writer, results_cfg, row


def test_round_trip_target_and_finish(tmp_path):
    writer = make_writer(tmp_path)
    assert load_results(str(tmp_path))["run"]["status"] == "running"  # valid from the first moment
    clock = BenchmarkClock(None, time_fn=lambda: 5.0)
    clock.start()
    writer.add_epoch(row(1, 12.0, 20.0, loss=torch.tensor(float("nan"))), clock)
    writer.add_epoch(row(2, 24.0, 55.0), clock)
    writer.add_epoch(row(3, 36.0, 70.0), clock)  # later epochs do not move the target
    writer.set_bad_videos(train=[("train/a/x.mp4", "no video stream")], eval_excluded=[])
    writer.finish(clock=clock, peak_gpu_memory_gib=None)
    data = load_results(str(tmp_path / RESULTS_FILE))
    assert data == json.loads(json.dumps(writer.data))  # the file holds exactly the writer's record
    bench = data["benchmark"]
    assert (bench["reached"], bench["time_to_target_s"], bench["epochs_to_target"]) == (True, 24.0, 2)
    assert data["run"]["status"] == "reached" and data["run"]["finished_at"]
    assert data["epochs"][0]["loss"] is None  # NaN becomes null, the file stays strict JSON
    assert data["bad_videos"]["train"] == [{"path": "train/a/x.mp4", "reason": "no video stream"}]
    assert data["world"] == {"num_gpus": 0, "num_devices": 1, "world_size": 1, "num_shards": 1,
                             "device": "cpu", "precision": "fp32", "nodes": 1, "procs_per_node": [1],
                             "same_hardware": True, "ranks": [CPU_RANK]}
    assert data["config"]["BENCHMARK"]["TARGET_TOP1"] == 50.0
    assert data["config_hash"] == config_hash(data["config"])
    assert data["git_commit"] is None or len(data["git_commit"]) == 40


def test_state_dict_restores_epochs_on_resume(tmp_path):
    writer = make_writer(tmp_path)
    writer.add_epoch(row(1, 12.0, 20.0))
    state = writer.state_dict()
    writer.add_epoch(row(2, 24.0, 30.0))  # lost in the crash: the resumed run redoes epoch 2
    resumed = make_writer(tmp_path)
    resumed.load_state_dict(state)
    assert [r["epoch"] for r in load_results(str(tmp_path))["epochs"]] == [1]
    resumed.add_epoch(row(2, 25.0, 60.0))
    resumed.finish()
    data = load_results(str(tmp_path))
    assert [r["clock_s"] for r in data["epochs"]] == [12.0, 25.0]
    assert data["benchmark"]["time_to_target_s"] == 25.0 and data["run"]["status"] == "reached"


def test_not_reached_and_failed_status(tmp_path):
    writer = make_writer(tmp_path, results_cfg(tmp_path, target=0.0))  # target 0: no benchmark target
    writer.add_epoch(row(1, 12.0, 99.0))
    assert not writer.data["benchmark"]["reached"]
    writer.finish("failed")
    assert load_results(str(tmp_path))["run"]["status"] == "failed"
    with pytest.raises(ValueError, match="running"):
        writer.finish("running")
    with pytest.raises(ValueError, match="clip_top1"):
        writer.add_epoch({**row(2, 1.0, 1.0), "clip_top1": "high"})


def test_target_reached_uses_the_configured_metric(tmp_path):
    cfg = results_cfg(tmp_path, target=16.75)
    assert target_reached({"clip_top1": 16.75, "video_top1": 1.0}, cfg)
    assert not target_reached({"clip_top1": 16.7, "video_top1": 99.0}, cfg)
    cfg.BENCHMARK.METRIC = "video"
    assert target_reached({"clip_top1": 1.0, "video_top1": 17.0}, cfg)
    assert not target_reached({"clip_top1": 99.0, "video_top1": None}, cfg)


def valid_results(tmp_path):
    writer = make_writer(tmp_path)
    writer.add_epoch(row(1, 12.0, 20.0))
    return copy.deepcopy(load_results(str(tmp_path)))


def test_validate_names_missing_and_wrong_typed_keys(tmp_path):
    data = valid_results(tmp_path)
    del data["benchmark"]["target_top1"]
    data["world"]["num_gpus"] = "4"
    data["world"]["world_size"] = True  # a bool is not an integer here
    data["epochs"][0]["clip_top1"] = "high"
    data["run"]["status"] = "done"
    with pytest.raises(ResultsError) as err:
        validate_results(data, source="run1/results.json")
    message = str(err.value)
    for key in ("run1/results.json.benchmark.target_top1' is missing", "world.num_gpus", "world.world_size",
                "epochs[0].clip_top1", "run.status"):
        assert key in message
    data = valid_results(tmp_path)
    data["hardware"]["gpu"] = {"model": "X", "count": 1}
    with pytest.raises(ResultsError, match=r"hardware\.gpu\.memory_gib' is missing"):
        validate_results(data)
    data = valid_results(tmp_path)
    data["schema_version"] = 2
    with pytest.raises(ResultsError, match="update vbench"):
        validate_results(data)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ResultsError, match="has no results.json"):
        load_results(str(tmp_path))
    with pytest.raises(ResultsError, match="does not exist"):
        load_results(str(tmp_path / "nope.json"))
    bad = tmp_path / RESULTS_FILE
    bad.write_text('{"schema_version": 1,\n "run": ')
    with pytest.raises(ResultsError, match=r"results\.json' is not valid JSON \(line 2"):
        load_results(str(tmp_path))
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ResultsError, match="not UTF-8"):
        load_results(str(bad))
    bad.write_text("[]")
    with pytest.raises(ResultsError, match="must be an object"):
        load_results(str(bad))


def test_atomic_write_keeps_the_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(str(path), {"ok": 1})
    for unserialisable in ({"bad": object()}, {"nan": float("nan")}):
        with pytest.raises((TypeError, ValueError)):
            atomic_write_json(str(path), unserialisable)
        assert json.loads(path.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["x.json"]  # no temporary files left behind


def test_config_hash_is_canonical():
    cfg = get_cfg()
    as_dict = config_to_dict(cfg)
    reordered = dict(reversed(list(as_dict.items())))
    assert config_hash(cfg) == config_hash(as_dict) == config_hash(reordered)
    cfg.SOLVER.BASE_LR = 0.02
    assert config_hash(cfg) != config_hash(as_dict)
    assert isinstance(as_dict["DATA"]["MEAN"], list) and type(as_dict["SOLVER"]) is dict


def test_resource_keys():
    for key in ("NUM_GPUS", "DATA_LOADER.NUM_WORKERS", "TRAIN.PRECISION", "DATA.PATH_TO_DATA_DIR"):
        assert is_resource_key(key)
    for key in ("SOLVER.BASE_LR", "TRAIN.BATCH_SIZE", "TRAIN.CHECKPOINT_FILE_PATH", "MODEL.WEIGHTS",
                "BENCHMARK.TARGET_TOP1", "TEST.SAMPLING", "DATA_LOADER"):
        assert not is_resource_key(key)


def test_sysinfo_blocks_follow_the_schema(tmp_path, capsys):
    info = sysinfo.collect_sysinfo(str(tmp_path / "not-yet-created"))
    assert set(info) == {"hardware", "software"}
    hw = info["hardware"]
    assert hw["cpu"]["logical_cores"] > 0 and hw["ram_gib"] > 0
    assert hw["cpu"]["physical_cores"] is None or 0 < hw["cpu"]["physical_cores"] <= hw["cpu"]["logical_cores"]
    gpu = hw["gpu"]
    if torch.cuda.is_available():
        assert gpu["count"] == torch.cuda.device_count() and gpu["model"]
    else:
        assert gpu is None or gpu["count"] >= 1
    assert hw["storage"]["data_path"] == str(tmp_path / "not-yet-created")
    assert hw["storage"]["rotational"] in (True, False, None)
    assert info["software"]["torch"] == torch.__version__
    writer = make_writer(tmp_path, sysinfo_block=info)
    validate_results(writer.data)  # the real blocks pass the schema
    assert sysinfo_main(["--json", "--data", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["hardware"]["storage"]["data_path"] == str(tmp_path)
    sysinfo_main([])
    assert "CPU" in capsys.readouterr().out
    assert sysinfo._cudnn_string(90100) == "9.1.0" and sysinfo._cudnn_string(8902) == "8.9.2"
