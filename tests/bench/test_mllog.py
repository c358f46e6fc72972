"""`vbench export --mllog RUN` (vbench/bench/mlperf_log.py): a real tiny CPU run written as an
MLPerf-format log, read back with mlperf-logging's own parser and checked with its compliance
checker's common Training rules. Skipped (with the reason) when mlperf-logging is not installed."""
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

from vbench.bench.mlperf_log import parse_json_stats
from vbench.bench.results import load_results
from vbench.cli.export import export_main
from vbench.cli.train import train_main

from scaffold import TINY_RUN

RULESET = "6.1.0"  # mlperf-logging's Training rules this log is checked against


def mlperf_logging_or_skip():
    return pytest.importorskip("mlperf_logging", reason="mlperf-logging is not installed "
                                                        "(pip install 'vbench[mllog]')")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real 3-epoch CPU run on generated videos (target top-1 1%: reached at epoch 1, training goes on)."""
    logger = logging.getLogger("vbench")
    handlers, propagate = list(logger.handlers), logger.propagate
    root = tmp_path_factory.mktemp("mllog")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_RUN.replace("{data}", str(root / "data")).replace("{cache}", str(root / "cache")))
    assert train_main(["--cfg", str(cfg), "OUTPUT_DIR", str(root / "run")]) == 0
    for handler in list(logger.handlers):  # train_main set the logger up for its run: restore it
        logger.removeHandler(handler)
        handler.close()
    for handler in handlers:
        logger.addHandler(handler)
    logger.propagate = propagate
    return root / "run"


def parse(path):
    from mlperf_logging.compliance_checker.mlp_parser import parse_file

    lines, errors = parse_file(str(path), ruleset=RULESET)
    assert errors == []
    return lines


def common_rule_messages(lines):
    """What mlperf-logging's compliance checker says about `lines` under its common Training rules
    (warnings count); the benchmark-specific rules name MLPerf's own benchmarks and are not run."""
    from mlperf_logging.compliance_checker import mlp_compliance

    rules = Path(mlp_compliance.__file__).parent / f"training_{RULESET}" / "common.yaml"
    if not rules.is_file():
        pytest.skip(f"this mlperf-logging has no training_{RULESET} rules")
    checker = mlp_compliance.ComplianceChecker("training", RULESET, quiet=False, werror=True)
    try:
        checker.configured_checks(lines, str(rules))
    finally:
        mlp_compliance.enqueued_configs.clear()  # submission_division queued the division's rules
    return [*checker.not_overwritable, *checker.overwritable.values()]


def by_key(lines, key):
    return [line for line in lines if line.key == key]


def test_a_real_run_exports_a_log_mlperf_logging_reads_and_accepts(tiny_run, capsys):
    mlperf_logging_or_skip()
    results = load_results(str(tiny_run))
    assert results["dataset"]["train"]["encoding"]["codecs"] == {"h264": 6}  # the CPU run's fingerprint
    bench = results["benchmark"]
    assert bench["reached"] and bench["epochs_to_target"] == 1 and len(results["epochs"]) == 3
    assert export_main(["--mllog", str(tiny_run)]) == 0
    assert f"to {tiny_run / 'mlperf_log.txt'}" in capsys.readouterr().out
    lines = parse(tiny_run / "mlperf_log.txt")
    assert common_rule_messages(lines) == []
    keys = [line.key for line in lines]
    assert keys[:2] == ["cache_clear", "init_start"] and keys[-1] == "run_stop"
    assert keys.index("init_stop") + 1 == keys.index("run_start") < keys.index("epoch_start")
    assert by_key(lines, "cache_clear")[0].value["value"] is False  # this run recorded no eviction
    assert by_key(lines, "seed")[0].value["value"] == 3 and by_key(lines, "global_batch_size")[0].value["value"] == 4
    assert by_key(lines, "train_samples")[0].value["value"] == results["dataset"]["train"]["clips_per_epoch"]
    assert by_key(lines, "eval_samples")[0].value["value"] == results["dataset"]["val"]["clips_per_epoch"]
    assert by_key(lines, "submission_division")[0].value["value"] == "open"  # not a benchmark config
    # only the benchmark part: epoch 1, whose evaluation reached the target
    assert [line.value["metadata"]["epoch_num"] for line in by_key(lines, "epoch_start")] == [1]
    (accuracy,) = by_key(lines, "eval_accuracy")
    assert accuracy.value["value"] == pytest.approx(results["epochs"][0]["clip_top1"] / 100)
    (start,), (stop,) = by_key(lines, "run_start"), by_key(lines, "run_stop")
    assert stop.value["metadata"]["status"] == "success"
    assert stop.timestamp - start.timestamp == pytest.approx(1000 * bench["time_to_target_s"], abs=1)
    assert start.timestamp - by_key(lines, "init_start")[0].timestamp == pytest.approx(1000 * bench["setup_s"], abs=1)
    stats_lines = (tiny_run / "json_stats.log").read_text().splitlines()
    iters = [json.loads(line.split("json_stats:")[1]) for line in stats_lines]
    epoch_one = [r for r in iters if r["_type"] == "train_iter" and r["epoch"].startswith("1/")]
    stats = [line.value for line in by_key(lines, "tracked_stats") if "step_num" in line.value["metadata"]]
    assert [s["value"]["loss"] for s in stats] == [r["loss"] for r in epoch_one] and epoch_one
    times = [line.timestamp for line in lines]
    assert times == sorted(times)


def test_a_run_that_missed_its_target_logs_every_epoch_and_aborted(tiny_run, tmp_path, capsys):
    mlperf_logging_or_skip()
    missed = tmp_path / "missed"
    shutil.copytree(tiny_run, missed, ignore=shutil.ignore_patterns("checkpoints", "mlperf_log.txt"))
    results = json.loads((missed / "results.json").read_text())
    results["benchmark"].update(reached=False, time_to_target_s=None, epochs_to_target=None)
    results["data_cache"]["dropped"] = True  # a run whose data was evicted from the page cache
    (missed / "results.json").write_text(json.dumps(results))
    (missed / "json_stats.log").unlink()
    out = tmp_path / "log.txt"
    assert export_main(["--mllog", str(missed / "results.json"), "--out", str(out), "--org", "lab"]) == 0
    assert "no json_stats.log" in capsys.readouterr().err
    assert not [line for line in parse(out) if line.key == "tracked_stats"]
    lines = parse(out)
    assert common_rule_messages(lines) == []
    assert [line.value["metadata"]["epoch_num"] for line in by_key(lines, "epoch_stop")] == [1, 2, 3]
    assert len(by_key(lines, "eval_accuracy")) == 3 and by_key(lines, "submission_org")[0].value["value"] == "lab"
    assert by_key(lines, "cache_clear")[0].value["value"] is True
    (start,), (stop,) = by_key(lines, "run_start"), by_key(lines, "run_stop")
    assert stop.value["metadata"]["status"] == "aborted"
    assert stop.timestamp - start.timestamp == pytest.approx(1000 * results["benchmark"]["total_time_s"], abs=1)


def test_json_stats_keeps_the_last_line_of_each_step_and_counts_unreadable_lines():
    lines = ['json_stats: {"_type": "train_iter", "epoch": "2/3", "iter": "2/4", "loss": 1.5}',
             'json_stats: {"_type": "val_epoch", "epoch": "2/3", "clip_top1": 50.0}',
             'json_stats: {"_type": "train_iter", "epoch": "2/3", "iter": "2/4", "loss": 0.5}',  # after a resume
             'json_stats: {"_type": "train_epoch", "epoch": "2/3", "loss": 0.7}',
             'json_stats: {"_type": "train_iter", "epoch": "2/3", "iter": "two/4", "loss": 9.0}',
             'json_stats: {"_type": "train_iter", "epoch": "2/3", "iter"', "", "not a stats line"]
    steps, skipped = parse_json_stats(lines)
    assert skipped == 3 and list(steps) == [2]
    assert [(done, total, r["loss"]) for done, total, r in steps[2]["iters"]] == [(2, 4, 0.5)]
    assert steps[2]["epoch"]["loss"] == 0.7


def test_without_mlperf_logging_the_command_names_the_pip_line(tmp_path, monkeypatch, capsys):
    for name in [name for name in sys.modules if name.startswith("mlperf_logging")] + ["mlperf_logging"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    assert export_main(["--mllog", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs the mlperf-logging package" in err and "pip install 'vbench[mllog]'" in err


def test_a_folder_without_results_is_a_clear_error(tmp_path, capsys):
    mlperf_logging_or_skip()
    assert export_main(["--mllog", str(tmp_path)]) == 2
    assert f"run folder '{tmp_path}' has no results.json" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "mlperf_log.txt")
