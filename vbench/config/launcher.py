"""The world a launcher started, and the config keys that must agree with it.

Under torchrun (or any launcher that sets RANK / WORLD_SIZE / LOCAL_RANK, "env://") the processes
exist before the config is read: torchrun's --nnodes and --nproc-per-node decide the world, and
NUM_GPUS (NUM_CPU_PROCS on the CPU), NUM_SHARDS and SHARD_ID must follow them. `launcher_world()`
reads what the launcher started; `world_corrections(cfg, launched)` lists the keys that disagree,
which the launch replaces, names in a warning and records in results.json (world.config_corrected).
"""
import os

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launcher_world(environ=None):
    """{"world_size", "procs_per_node", "nodes", "node_rank"} as torchrun set them, or None
    outside an env:// launcher. Without torchrun's GROUP_* variables, nodes and node rank follow
    from the ranks (every node with LOCAL_WORLD_SIZE processes)."""
    env = os.environ if environ is None else environ
    if not all(name in env for name in TORCHRUN_ENV):
        return None
    world = int(env["WORLD_SIZE"])
    per_node = int(env.get("LOCAL_WORLD_SIZE", world))
    return {"world_size": world, "procs_per_node": per_node,
            "nodes": int(env.get("GROUP_WORLD_SIZE", max(1, world // per_node))),
            "node_rank": int(env.get("GROUP_RANK", int(env["RANK"]) // per_node))}


def per_node_key(cfg):
    """The key that counts this node's processes: NUM_GPUS on GPUs, NUM_CPU_PROCS on the CPU."""
    return "NUM_GPUS" if cfg.NUM_GPUS > 0 else "NUM_CPU_PROCS"


def world_corrections(cfg, launched):
    """{key: (config value, launcher value)} for each world key of `cfg` that disagrees with the
    `launched` world (`launcher_world`)."""
    wanted = {per_node_key(cfg): launched["procs_per_node"], "NUM_SHARDS": launched["nodes"],
              "SHARD_ID": launched["node_rank"]}
    return {key: (cfg[key], value) for key, value in wanted.items() if cfg[key] != value}
