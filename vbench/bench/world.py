"""The results.json "world" block: the processes and devices that really trained (docs/PROTOCOL.md).

The engine gathers one description per rank at set-up (`vbench.engine.distributed.gather_ranks`:
rank, node, local rank, hashed host, device, device model, memory, device id) and hands the list
here; nothing is derived from the config, which under torchrun may not say what ran.

    world = world_block(ranks, precision="bf16", corrections={"NUM_SHARDS": (1, 2)})
    describe_world(world)    # '8 x NVIDIA H100 80GB HBM3 (79.2 GiB) on 2 nodes, 8 processes'
    resumed_world(earlier, world)  # a resumed run: the current world, counting the most devices
    mixed_hardware(world)    # '' or the device kinds and how many of each
"""
from collections import Counter

PRECISIONS = ("fp32", "fp16", "bf16")


def world_block(ranks, precision, corrections=None):
    """The "world" block from every rank's description, in rank order. `precision` is the one in
    use ("auto" resolved); `corrections`: {key: (config value, launcher value)} the launch made.

    num_devices, the n_gpu_bench of the score, counts the distinct GPUs that trained (two ranks on
    one GPU count once); a CPU run counts as 1 device, however many processes and nodes it used.
    """
    devices = {rank["device"] for rank in ranks}
    if precision not in PRECISIONS or len(devices) != 1 or not devices <= {"cuda", "cpu"}:
        raise ValueError(f"world_block needs ranks on one device type (cuda or cpu) and a resolved "
                         f"precision, got devices {sorted(devices)} and {precision!r}.")
    device = devices.pop()
    num_gpus = distinct_gpus(ranks) if device == "cuda" else 0
    nodes = sorted({rank["node"] for rank in ranks})
    block = {"num_gpus": num_gpus, "num_devices": max(num_gpus, 1), "world_size": len(ranks),
             "num_shards": len(nodes), "device": device, "precision": precision,
             "nodes": len(nodes),
             "procs_per_node": [sum(rank["node"] == node for rank in ranks) for node in nodes],
             "same_hardware": len(device_kinds(ranks)) == 1,
             "ranks": [dict(rank) for rank in ranks]}
    if corrections:
        block["config_corrected"] = {key: {"config": was, "launcher": now}
                                     for key, (was, now) in corrections.items()}
    return block


def attempt_summary(world):
    """What one attempt ran on (from its ranks: a resumed world's num_devices may be an earlier one's)."""
    ranks = world.get("ranks")
    own = distinct_gpus(ranks) if ranks and world["device"] == "cuda" else world["num_devices"]
    return {"num_devices": own, "world_size": world["world_size"],
            "nodes": world.get("nodes", world["num_shards"]),
            "devices": describe_world({k: v for k, v in world.items() if k != "earlier_attempts"})}


def resumed_world(earlier, current):
    """The world of a run resumed in `current` from a checkpoint of the `earlier` attempt(s).

    The same world: `current`. Another one: `current` with the earlier attempts' worlds under
    "earlier_attempts" and num_gpus / num_devices the largest of any attempt, so that a run cannot
    score on fewer devices than it trained on.
    """
    attempts = list(earlier.get("earlier_attempts", []))
    if attempt_summary(earlier) != attempt_summary(current):
        attempts.append(attempt_summary(earlier))
    if not attempts:
        return current
    merged = dict(current, earlier_attempts=attempts)
    merged["num_devices"] = max([current["num_devices"]] + [a["num_devices"] for a in attempts])
    if current["device"] == "cuda":
        merged["num_gpus"] = merged["num_devices"]
    return merged


def distinct_gpus(ranks):
    return len({rank["device_id"] for rank in ranks})


def device_kinds(ranks):
    """Counter of (device model, memory GiB) over the distinct devices of `ranks`."""
    devices = {rank["device_id"]: (rank["device_model"], rank["memory_gib"]) for rank in ranks}
    return Counter(devices.values())


def _kind_text(kind, count):
    model, memory = kind
    return f"{count} x {model}" + (f" ({memory} GiB)" if memory is not None else "")


def describe_world(world):
    """One line: the devices, nodes and processes of a results.json world block."""
    ranks = world.get("ranks")
    nodes = world.get("nodes", world["num_shards"])
    where = f"on {nodes} node{'s' if nodes != 1 else ''}, {world['world_size']} process" + (
        "es" if world["world_size"] != 1 else "")
    if not ranks:  # written before the world was gathered from the process group
        return f"{world['num_devices']} {world['device']} device(s) {where}"
    if world["device"] == "cpu":
        kinds = ", ".join(f"{model}" for model, _ in device_kinds(ranks))
        text = f"CPU ({kinds}; counted as 1 device) {where}"
    else:
        text = " + ".join(_kind_text(kind, n) for kind, n in sorted(device_kinds(ranks).items())) + f" {where}"
    earlier = world.get("earlier_attempts")
    if earlier:
        text += "; resumed from attempts on " + "; ".join(a["devices"] for a in earlier)
    return text


def mixed_hardware(world):
    """'' when every rank had the same hardware, else what the ranks ran on, per node."""
    if world.get("same_hardware", True):
        return ""
    per_node = {}
    for rank in world.get("ranks", []):
        per_node.setdefault(rank["node"], Counter())[(rank["device_model"], rank["memory_gib"])] += 1
    parts = [f"node {node}: " + ", ".join(_kind_text(kind, n) for kind, n in sorted(kinds.items()))
             for node, kinds in sorted(per_node.items())]
    return "the ranks ran on different hardware (" + "; ".join(parts) + ")"
