"""The machine a run used: the "hardware" and "software" blocks of results.json, and `vbench sysinfo`.

Nothing here fails on a machine without a GPU, nvidia-smi, /proc or /sys: unknown values are null.
Call `collect_sysinfo` in the training process (it may initialise CUDA), not in a parent that forks.
"""
import importlib.metadata
import os
import platform
import shutil
import subprocess

import psutil
import torch

GIB = 1024 ** 3


def _round(value, digits=2):
    return None if value is None else round(value, digits)


def _nvidia_smi(fields):
    """Rows of `nvidia-smi --query-gpu=fields` (one list per GPU), or [] when unavailable."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [[cell.strip() for cell in line.split(",")] for line in out.stdout.splitlines() if line.strip()]


def gpu_info():
    """{"model", "count", "memory_gib", "driver", "cuda", "cudnn"} or None without a usable GPU."""
    smi = _nvidia_smi("name,memory.total,driver_version")
    driver = smi[0][2] if smi and len(smi[0]) > 2 else None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        return {"model": props.name, "count": torch.cuda.device_count(),
                "memory_gib": _round(props.total_memory / GIB), "driver": driver,
                "cuda": torch.version.cuda, "cudnn": _cudnn_string(cudnn)}
    if smi:  # GPUs present but not usable by this torch build: still worth reporting
        memory_mib = _float_or_none(smi[0][1]) if len(smi[0]) > 1 else None
        return {"model": smi[0][0], "count": len(smi),
                "memory_gib": _round(memory_mib / 1024) if memory_mib else None, "driver": driver,
                "cuda": torch.version.cuda, "cudnn": None}
    return None


def _float_or_none(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _cudnn_string(version):
    """cuDNN's integer version (e.g. 90100, or 8902 for 8.x) as "9.1.0" / "8.9.2"."""
    if not version:
        return None
    if version >= 10000:
        major, minor, patch = version // 10000, version // 100 % 100, version % 100
    else:
        major, minor, patch = version // 1000, version // 100 % 10, version % 100
    return f"{major}.{minor}.{patch}"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def ram_gib():
    return _round(psutil.virtual_memory().total / GIB)


def _rotational(path):
    """Whether the block device holding `path` spins (True), is solid-state (False), or None."""
    try:
        dev = os.stat(path).st_dev
        sys_dev = os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    except OSError:
        return None
    # a partition's sysfs folder sits inside its disk's folder; the disk has queue/rotational
    for folder in (sys_dev, os.path.dirname(sys_dev)):
        try:
            with open(os.path.join(folder, "queue", "rotational")) as f:
                return f.read().strip() == "1"
        except OSError:
            continue
    return None


def storage_info(data_path):
    """Filesystem, device and rotational flag of the mount holding `data_path` (its nearest existing
    parent when the folder does not exist yet)."""
    path = os.path.realpath(data_path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    best = None
    try:
        for part in psutil.disk_partitions(all=True):
            mount = part.mountpoint
            inside = path == mount or path.startswith(mount.rstrip(os.sep) + os.sep)
            if inside and (best is None or len(mount) > len(best.mountpoint)):
                best = part
    except (OSError, RuntimeError):
        pass
    return {"data_path": os.path.abspath(data_path), "filesystem": best.fstype if best else None,
            "device": best.device if best else None, "rotational": _rotational(path)}


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def software_info():
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": _version("torchvision"), "av": _version("av"),
            "torchcodec": _version("torchcodec"), "numpy": _version("numpy"),
            "platform": platform.platform()}


def collect_sysinfo(data_path=None):
    """{"hardware": {...}, "software": {...}} exactly as in results.json (docs/PROTOCOL.md)."""
    hardware = {
        "gpu": gpu_info(),
        "cpu": {"model": cpu_model(), "physical_cores": psutil.cpu_count(logical=False),
                "logical_cores": psutil.cpu_count(logical=True) or os.cpu_count() or 1},
        "ram_gib": ram_gib(),
        "storage": storage_info(data_path) if data_path else None,
    }
    return {"hardware": hardware, "software": software_info()}


def describe_hardware(hardware):
    """One line for a results.json hardware block: the GPUs, else the CPU."""
    gpu, cpu = hardware.get("gpu"), hardware.get("cpu") or {}
    if gpu:
        return f"{gpu.get('count')} x {gpu.get('model')}"
    return f"CPU: {cpu.get('model', 'unknown')}, {cpu.get('logical_cores', '?')} logical cores"


def format_sysinfo(info):
    """A readable block of `collect_sysinfo` output."""
    hw, sw = info["hardware"], info["software"]
    gpu, cpu, storage = hw["gpu"], hw["cpu"], hw["storage"]
    lines = []
    if gpu:
        lines.append(f"GPU       {gpu['count']} x {gpu['model']}, {gpu['memory_gib']} GiB, driver {gpu['driver']}, "
                     f"CUDA {gpu['cuda']}, cuDNN {gpu['cudnn']}")
    else:
        lines.append("GPU       none usable")
    lines.append(f"CPU       {cpu['model']}, {cpu['physical_cores']} physical / {cpu['logical_cores']} logical cores")
    lines.append(f"RAM       {hw['ram_gib']} GiB")
    if storage:
        spin = {True: "rotational", False: "solid-state", None: "rotational: unknown"}[storage["rotational"]]
        lines.append(f"Storage   {storage['data_path']}: {storage['filesystem']} on {storage['device']} ({spin})")
    lines.append("Software  " + ", ".join(f"{key} {value}" for key, value in sw.items() if key != "platform"))
    lines.append(f"Platform  {sw['platform']}")
    return "\n".join(lines)
