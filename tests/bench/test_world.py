"""The world as it ran: results.json's world block from every rank's description, torchrun's world
overriding NUM_GPUS / NUM_SHARDS in the record (with a warning), and the score and the reference
maker counting the recorded devices, mixed hardware flagged. Multi-node runs: test_multinode.py."""
import json

import pytest

from vbench.bench.reference import make_reference
from vbench.bench.report import devices_line
from vbench.bench.results import ResultsWriter, load_results, validate_results, world_block
from vbench.bench.world import describe_world, mixed_hardware
from vbench.cli.score import score_main
from vbench.config import ConfigError, launcher_world, load_config, world_corrections
from vbench.engine.distributed import DistContext, gather_ranks
from vbench.engine.launch import follow_launcher
from vbench.errors import ScoreError

from scaffold import FAKE_SYSINFO, X3D, fake_results, results_cfg, save

H100 = ("NVIDIA H100 80GB HBM3", 79.19)
A100 = ("NVIDIA A100-SXM4-40GB", 39.39)


def gpu_ranks(per_node, kinds=(H100,), same_gpu=False):
    """Descriptions of ranks on len(per_node) nodes, as gather_ranks gives them; node n's GPUs
    are of kinds[n % len(kinds)]. `same_gpu`: every rank of a node on that node's GPU 0."""
    ranks = []
    for node, count in enumerate(per_node):
        model, memory = kinds[node % len(kinds)]
        for local in range(count):
            gpu = 0 if same_gpu else local
            ranks.append({"rank": len(ranks), "node": node, "local_rank": local, "host": f"host{node}",
                          "device": "cuda", "device_model": model, "memory_gib": memory,
                          "device_id": f"gpu-{node}-{gpu}"})
    return ranks


def cpu_ranks(nodes):
    return [{"rank": n, "node": n, "local_rank": 0, "host": "samehost", "device": "cpu",
             "device_model": "test cpu", "memory_gib": 4.0, "device_id": "samehost"} for n in range(nodes)]


# ------------------------------------------------------------------------------ the block
def test_two_nodes_of_four_gpus_are_eight_devices_whatever_the_config_said():
    world = world_block(gpu_ranks([4, 4]), "bf16", {"NUM_SHARDS": (1, 2)})
    assert (world["num_gpus"], world["num_devices"], world["world_size"]) == (8, 8, 8)
    assert (world["nodes"], world["num_shards"], world["procs_per_node"]) == (2, 2, [4, 4])
    assert world["same_hardware"] and world["config_corrected"] == {"NUM_SHARDS": {"config": 1, "launcher": 2}}
    assert [r["node"] for r in world["ranks"]] == [0] * 4 + [1] * 4
    assert describe_world(world) == "8 x NVIDIA H100 80GB HBM3 (79.19 GiB) on 2 nodes, 8 processes"
    assert mixed_hardware(world) == ""


def test_ranks_sharing_a_gpu_count_it_once():
    world = world_block(gpu_ranks([2], same_gpu=True), "fp32")
    assert (world["world_size"], world["num_gpus"], world["num_devices"]) == (2, 1, 1)


def test_different_gpu_models_are_recorded_as_mixed_hardware():
    world = world_block(gpu_ranks([2, 2], kinds=(A100, H100)), "bf16")
    assert world["num_devices"] == 4 and not world["same_hardware"]
    assert mixed_hardware(world) == ("the ranks ran on different hardware (node 0: 2 x NVIDIA A100-SXM4-40GB "
                                     "(39.39 GiB); node 1: 2 x NVIDIA H100 80GB HBM3 (79.19 GiB))")


def test_a_cpu_run_counts_as_one_device_on_any_number_of_nodes():
    world = world_block(cpu_ranks(2), "fp32")
    assert (world["num_gpus"], world["num_devices"], world["world_size"], world["nodes"]) == (0, 1, 2, 2)
    assert describe_world(world) == "CPU (test cpu; counted as 1 device) on 2 nodes, 2 processes"


def test_ranks_on_mixed_device_types_or_an_unresolved_precision_are_refused():
    with pytest.raises(ValueError, match="one device type"):
        world_block(gpu_ranks([1]) + cpu_ranks(1), "fp32")
    with pytest.raises(ValueError, match="'auto'"):
        world_block(cpu_ranks(1), "auto")


def test_this_process_describes_its_real_device_and_hashes_its_host():
    import socket

    (rank,) = gather_ranks(DistContext(), node=0)
    assert rank["device"] == "cpu" and rank["rank"] == 0 and rank["node"] == 0
    assert rank["device_model"] and rank["memory_gib"] > 0
    assert len(rank["host"]) == 12 and socket.gethostname() not in rank["host"]
    assert world_block([rank], "fp32")["ranks"] == [rank]


def test_old_results_without_gathered_ranks_still_validate_and_describe(tmp_path):
    old = fake_results(X3D, "cnn", 1000.0, num_devices=4)
    assert "ranks" not in old["world"]
    validate_results(old)
    assert describe_world(old["world"]) == "4 cuda device(s) on 1 node, 4 processes"


def test_a_run_resumed_on_fewer_gpus_keeps_the_most_devices_it_trained_on(tmp_path):
    cfg = results_cfg(tmp_path)
    first = ResultsWriter(str(tmp_path / "a.json"), cfg, world=world_block(gpu_ranks([4, 4]), "bf16"),
                          sysinfo=FAKE_SYSINFO)
    resumed = ResultsWriter(str(tmp_path / "b.json"), cfg, world=world_block(gpu_ranks([1]), "bf16"),
                            sysinfo=FAKE_SYSINFO)
    resumed.load_state_dict(first.state_dict())
    world = load_results(str(tmp_path / "b.json"))["world"]
    assert (world["num_devices"], world["num_gpus"], world["world_size"]) == (8, 8, 1)
    assert world["earlier_attempts"] == [{"num_devices": 8, "world_size": 8, "nodes": 2, "devices": (
        "8 x NVIDIA H100 80GB HBM3 (79.19 GiB) on 2 nodes, 8 processes")}]
    assert describe_world(world).endswith("; resumed from attempts on 8 x NVIDIA H100 80GB HBM3 "
                                          "(79.19 GiB) on 2 nodes, 8 processes")
    again = ResultsWriter(str(tmp_path / "c.json"), cfg, world=world_block(gpu_ranks([1]), "bf16"),
                          sysinfo=FAKE_SYSINFO)
    again.load_state_dict(resumed.state_dict())  # a second resume on the same single GPU
    assert again.data["world"]["earlier_attempts"] == world["earlier_attempts"]
    assert again.data["world"]["num_devices"] == 8
    same = ResultsWriter(str(tmp_path / "d.json"), cfg, world=world_block(gpu_ranks([4, 4]), "bf16"),
                         sysinfo=FAKE_SYSINFO)
    same.load_state_dict(first.state_dict())
    assert "earlier_attempts" not in same.data["world"] and same.data["world"]["num_devices"] == 8


# ------------------------------------------------------------------------------ torchrun's world
TORCHRUN_NODE_1 = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                   "GROUP_RANK": "1", "GROUP_WORLD_SIZE": "2"}


def test_the_launcher_world_comes_from_torchruns_environment():
    assert launcher_world({}) is None
    assert launcher_world(TORCHRUN_NODE_1) == {"world_size": 8, "procs_per_node": 4, "nodes": 2, "node_rank": 1}
    # another env:// launcher without torchrun's GROUP_* variables: nodes from the ranks
    plain = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert launcher_world(plain) == {"world_size": 4, "procs_per_node": 2, "nodes": 2, "node_rank": 1}


def test_config_world_keys_that_disagree_with_torchrun_are_listed():
    cfg = load_config(None, ["NUM_GPUS", "4"])
    assert world_corrections(cfg, launcher_world(TORCHRUN_NODE_1)) == {"NUM_SHARDS": (1, 2), "SHARD_ID": (0, 1)}
    cpu = load_config(None, ["NUM_GPUS", "0", "NUM_CPU_PROCS", "2", "NUM_SHARDS", "2", "SHARD_ID", "1"])
    assert world_corrections(cpu, launcher_world(TORCHRUN_NODE_1)) == {"NUM_CPU_PROCS": (2, 4)}


def test_torchrun_corrects_the_config_and_warns_on_each_nodes_first_process(monkeypatch, capsys):
    for name, value in TORCHRUN_NODE_1.items():
        monkeypatch.setenv(name, value)
    cfg = load_config(None, ["NUM_GPUS", "0", "NUM_CPU_PROCS", "3", "TRAIN.BATCH_SIZE", "16"])
    fixed, corrections = follow_launcher(cfg, launcher_world())
    assert (fixed.NUM_CPU_PROCS, fixed.NUM_SHARDS, fixed.SHARD_ID) == (4, 2, 1)
    assert corrections == {"NUM_CPU_PROCS": (3, 4), "NUM_SHARDS": (1, 2), "SHARD_ID": (0, 1)}
    assert capsys.readouterr().err == ""  # LOCAL_RANK 1: node 1's local rank 0 warns instead
    monkeypatch.setenv("LOCAL_RANK", "0")
    follow_launcher(cfg, launcher_world())
    warning = capsys.readouterr().err
    assert warning.startswith("vbench: warning: torchrun started 2 node(s) x 4 process(es) (WORLD_SIZE 8), "
                              "but the config says NUM_CPU_PROCS 3, NUM_SHARDS 1. This run uses what "
                              "torchrun started (NUM_CPU_PROCS 4, NUM_SHARDS 2)")
    assert "world.config_corrected" in warning and "SHARD_ID" not in warning  # left at 0, as torchrun users do


def test_under_torchrun_the_global_batch_must_divide_over_its_world_not_the_configs(monkeypatch):
    for name, value in TORCHRUN_NODE_1.items():
        monkeypatch.setenv(name, value)
    load_config(None, ["NUM_GPUS", "3", "TRAIN.BATCH_SIZE", "64"])  # 64 / 8 processes: fine
    with pytest.raises(ConfigError, match=r"TRAIN.BATCH_SIZE' = 12 .* over 8 processes \(torchrun's WORLD_SIZE\)"):
        load_config(None, ["NUM_GPUS", "4", "TRAIN.BATCH_SIZE", "12"])  # 12 / 4 would pass


# ------------------------------------------------------------------------------ score and reference
def torchrun_gpu_results(t_bench, ranks, **config):
    """A GPU run of 2 torchrun nodes whose config kept NUM_GPUS 4, NUM_SHARDS 1 (as torchrun users do)."""
    results = fake_results(X3D, "cnn", t_bench, num_devices=4, **config)
    results["world"] = world_block(ranks, "bf16")
    return validate_results(results)


def test_the_score_divides_by_the_gpus_that_trained_not_by_num_gpus(tmp_path, capsys):
    run = save(tmp_path, "run", torchrun_gpu_results(3657.96, gpu_ranks([4, 4])))
    assert score_main(["--cnn", run, "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["tracks"]["cnn"]["runs"]
    assert entry["n_gpu_bench"] == 8 and entry["score"] == pytest.approx(4 / 8)  # t_ref 4 GPUs, same time
    assert entry["world"] == "8 x NVIDIA H100 80GB HBM3 (79.19 GiB) on 2 nodes, 8 processes"
    assert entry["mixed_hardware"] is False


def test_the_score_flags_mixed_hardware_in_its_text_and_json(tmp_path, capsys):
    run = save(tmp_path, "run", torchrun_gpu_results(3657.96, gpu_ranks([4, 4], kinds=(A100, H100))))
    assert score_main(["--cnn", run]) == 0
    text = capsys.readouterr().out
    assert ("MIXED HARDWARE: the ranks ran on different hardware (node 0: 4 x NVIDIA A100-SXM4-40GB "
            "(39.39 GiB); node 1: 4 x NVIDIA H100 80GB HBM3 (79.19 GiB))") in text
    assert score_main(["--cnn", run, "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["tracks"]["cnn"]["runs"]
    assert entry["mixed_hardware"] is True and "node 0: 4 x NVIDIA A100" in entry["mixed_hardware_note"]


def test_the_report_names_the_world_and_mixed_hardware():
    line = devices_line(world_block(gpu_ranks([1, 1], kinds=(A100, H100)), "bf16"))
    assert line == ("- devices: 1 x NVIDIA A100-SXM4-40GB (39.39 GiB) + 1 x NVIDIA H100 80GB HBM3 (79.19 GiB) "
                    "on 2 nodes, 2 processes (n_gpu 2); MIXED HARDWARE: the ranks ran on different hardware "
                    "(node 0: 1 x NVIDIA A100-SXM4-40GB (39.39 GiB); node 1: 1 x NVIDIA H100 80GB HBM3 (79.19 GiB))")


def test_the_reference_maker_uses_the_recorded_devices_and_refuses_mixed_ones():
    table = make_reference({"cnn": [torchrun_gpu_results(1000.0, gpu_ranks([4, 4]))]}, "two nodes")
    assert table["tracks"]["cnn"]["n_gpu_ref"] == 8
    with pytest.raises(ScoreError, match="different hardware"):
        make_reference({"cnn": [torchrun_gpu_results(1000.0, gpu_ranks([4, 4], kinds=(A100, H100)))]}, "x")
    runs = [torchrun_gpu_results(1000.0, gpu_ranks([4, 4])), torchrun_gpu_results(1000.0, gpu_ranks([4]))]
    with pytest.raises(ScoreError, match=r"different numbers of devices \(\[4, 8\]"):
        make_reference({"cnn": runs}, "x")
