"""Multi-node runs, on one machine: two torchrun "nodes" of one process each, and the SlowFast-style
launch of two shards (NUM_SHARDS 2, SHARD_ID 0/1, INIT_METHOD tcp://...), both real gloo training
of the tiny synthetic config for one epoch. results.json must count the processes and nodes that
ran, and the score the devices recorded."""
import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from vbench.bench.results import load_results
from vbench.config import load_config
from vbench.data.synthetic import ensure_synthetic

from scaffold import REPO, TINY_RUN

RUN_NET = str(REPO / "tools" / "run_net.py")
ONE_EPOCH = ("SOLVER.MAX_EPOCH", "1", "TEST.ENABLE", "False")


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    """The tiny config of the training tests, its data generated once (not by both nodes at once)."""
    root = tmp_path_factory.mktemp("multinode")
    path = root / "tiny.yaml"
    path.write_text(TINY_RUN.replace("{data}", str(root / "data")).replace("{cache}", str(root / "cache")))
    ensure_synthetic(load_config(str(path)))
    return str(path)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_nodes(commands, timeout_s=400):
    """Start every node's command at once; (outputs) once all have ended, each with exit code 0."""
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the two "nodes" share this machine's cores
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=env) for command in commands]
    try:
        outputs = [process.communicate(timeout=timeout_s)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for node, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"node {node}:\n{output[-3000:]}"
    return outputs


def check_two_node_world(results):
    world = results["world"]
    assert (world["world_size"], world["nodes"], world["num_shards"], world["procs_per_node"]) == (2, 2, 2, [1, 1])
    assert [(r["rank"], r["node"], r["local_rank"]) for r in world["ranks"]] == [(0, 0, 0), (1, 1, 0)]
    assert world["device"] == "cpu" and world["num_devices"] == 1 and world["same_hardware"]
    assert results["config"]["NUM_SHARDS"] == 2  # the config the run used
    for row in results["epochs"]:  # both ranks' figures
        assert len(row["data_wait_by_rank"]) == 2 and len(row["loader_clips_per_s_by_rank"]) == 2


def score_json(tmp_path, cfg_file, run):
    """`vbench score --json` of `run` against a reference made for the tiny config."""
    reference = tmp_path / "reference.yaml"
    reference.write_text(yaml.safe_dump({"name": "tiny", "tracks": {"cnn": {
        "config": cfg_file, "target_top1": 1.0, "t_ref_s": 100.0, "n_gpu_ref": 1}}}))
    out = subprocess.run([sys.executable, "-m", "vbench.cli", "score", "--cnn", str(run), "--reference",
                          str(reference), "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["tracks"]["cnn"]["runs"][0]


def test_two_torchrun_nodes_are_recorded_as_two_nodes_and_scored_on_the_recorded_devices(tiny_cfg, tmp_path):
    out, port = tmp_path / "run", free_port()
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--master-addr", "127.0.0.1", "--master-port", str(port)]
    outputs = run_nodes([node + ["--node-rank", str(rank), RUN_NET, "--cfg", tiny_cfg, "OUTPUT_DIR", str(out),
                                 *ONE_EPOCH] for rank in (0, 1)])
    for output in outputs:  # each node's first process names the key torchrun overrode
        assert ("vbench: warning: torchrun started 2 node(s) x 1 process(es) (WORLD_SIZE 2), but the "
                "config says NUM_SHARDS 1.") in output
    results = load_results(str(out))
    check_two_node_world(results)
    assert results["world"]["config_corrected"] == {"NUM_SHARDS": {"config": 1, "launcher": 2}}
    assert results["run"]["status"] == "reached"

    entry = score_json(tmp_path, tiny_cfg, out)
    assert entry["n_gpu_bench"] == results["world"]["num_devices"] == 1  # a CPU run counts as 1 device
    assert entry["world"].endswith("counted as 1 device) on 2 nodes, 2 processes")


def test_two_slowfast_style_shards_are_recorded_as_two_nodes(tiny_cfg, tmp_path):
    out, port = tmp_path / "run", free_port()
    shards = [[sys.executable, RUN_NET, "--cfg", tiny_cfg, "OUTPUT_DIR", str(out), "NUM_SHARDS", "2",
               "SHARD_ID", str(shard), "INIT_METHOD", f"tcp://127.0.0.1:{port}", *ONE_EPOCH] for shard in (0, 1)]
    outputs = run_nodes(shards)
    assert "process 0 of 2" in outputs[0] and "warning: torchrun" not in outputs[0]
    results = load_results(str(out))
    check_two_node_world(results)
    assert "config_corrected" not in results["world"]  # the config said what ran
