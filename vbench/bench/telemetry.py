"""GPU telemetry and energy to target, read through NVML (docs/PROTOCOL.md, "Telemetry and energy").

A time with no clocks, power or throttle reasons cannot be explained: a throttling GPU looks like a
slow one. The first process of each node samples every GPU of its node once a second
(`TelemetrySampler` over an `NvmlReader`): power, SM and memory clocks, temperature, utilisation,
memory used, the clock-event (throttle) reasons and the energy counter
(`nvmlDeviceGetTotalEnergyConsumption`, Volta and newer). A sample is a dict:

    {"t": benchmark-clock seconds, "attempt": 1, "gpu": "host:0", "power_w": 612.0, "sm_mhz": 1980,
     "mem_mhz": 2619, "temp_c": 61, "util_pct": 100, "mem_used_gib": 41.2, "reasons": 0x4,
     "energy_j": 1.2e6}      # any reading NVML refuses is None; energy_j: the counter, or None

The pure functions below turn a list of samples into per-GPU statistics (`summarize`), add them up
over intervals (`merge`), and shape results.json's `telemetry` block and the epoch record.
An interval's list opens with its opening sample (the clock start, or the previous interval's
closing sample), which marks time and energy only; every later sample stands for the time since
the one before it. Energy is the counter's difference over each attempt (or the power integral
where the GPU has no counter).
"""
import math
import os
import statistics
import threading
import time

try:
    import pynvml  # nvidia-ml-py, optional: pip install "vbench[gpu]"
except ImportError:
    pynvml = None

# NVML clock-event reasons (nvmlClocksEventReason*): bit -> name. SLOWDOWN ones lower the clocks
# below what the work asks for (power or thermal limits, hardware slowdown); the others are not
# throttling (idle, clocks set by an application or for the display, sync boost).
REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
           0x10: "sync_boost", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake",
           0x100: "display_clocks"}
SLOWDOWN_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
SLOWDOWN_NAMES = {name for bit, name in REASONS.items() if bit & SLOWDOWN_MASK}
SERIES_POINTS = 200  # most points per GPU of the power and SM-clock series in results.json


# ---------------------------------------------------------------------------------- sampling
def open_reader(devices, host):
    """(NvmlReader, None) for `devices` [(cuda index, uuid or None)], or (None, why not)."""
    if pynvml is None:
        return None, "nvidia-ml-py is not installed (pip install \"vbench[gpu]\")"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return None, f"NVML could not start ({error}): no NVIDIA driver here?"
    try:
        return NvmlReader(devices, host), None
    except pynvml.NVMLError as error:
        pynvml.nvmlShutdown()
        return None, f"NVML could not open the run's GPUs ({error})"


def _read(function, *args):
    """`function(*args)`, or None when NVML refuses (not supported, GPU lost, ...)."""
    try:
        return function(*args)
    except pynvml.NVMLError:
        return None


def _text(value):
    """NVML strings: bytes in older nvidia-ml-py releases, str in newer ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_handle(index, uuid):
    """The NVML handle of CUDA device `index`: by its UUID, else through CUDA_VISIBLE_DEVICES (NVML
    numbers every GPU of the machine, CUDA only the visible ones), else by the index itself."""
    if uuid:
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(uuid)
        except pynvml.NVMLError:
            pass
    visible = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    if index < len(visible):
        entry = visible[index]
        return (pynvml.nvmlDeviceGetHandleByIndex(int(entry)) if entry.isdigit()
                else pynvml.nvmlDeviceGetHandleByUUID(entry))
    return pynvml.nvmlDeviceGetHandleByIndex(index)


class NvmlReader:
    """NVML handles of one node's GPUs (NVML must be initialised); `read` samples them all."""

    def __init__(self, devices, host):
        self.handles = {f"{host}:{index}": nvml_handle(index, uuid) for index, uuid in devices}
        self.names = {key: _text(pynvml.nvmlDeviceGetName(h)) for key, h in self.handles.items()}
        self.driver = _text(pynvml.nvmlSystemGetDriverVersion())
        self.reasons_of = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons",
                                  getattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None))

    def read(self, t, attempt):
        samples = []
        for key, h in self.handles.items():
            power = _read(pynvml.nvmlDeviceGetPowerUsage, h)  # mW
            energy = _read(pynvml.nvmlDeviceGetTotalEnergyConsumption, h)  # mJ since the driver loaded
            util = _read(pynvml.nvmlDeviceGetUtilizationRates, h)
            memory = _read(pynvml.nvmlDeviceGetMemoryInfo, h)
            samples.append({
                "t": t, "attempt": attempt, "gpu": key,
                "power_w": None if power is None else power / 1000.0,
                "sm_mhz": _read(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM),
                "mem_mhz": _read(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_MEM),
                "temp_c": _read(pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU),
                "util_pct": None if util is None else util.gpu,
                "mem_used_gib": None if memory is None else memory.used / 2**30,
                "reasons": (_read(self.reasons_of, h) or 0) if self.reasons_of else 0,
                "energy_j": None if energy is None else energy / 1000.0})
        return samples

    def close(self):
        pynvml.nvmlShutdown()


class TelemetrySampler:
    """Samples `reader` every `interval_s` seconds on a daemon thread (no device sync: NVML reads
    the driver's counters). Sample times are benchmark-clock seconds: `offset_s` (the clock when
    this attempt started) plus the time since `start`. `cut` closes the current interval."""

    def __init__(self, reader, interval_s=1.0, time_fn=time.monotonic):
        self.reader, self.interval_s, self.time_fn = reader, interval_s, time_fn
        self.lock = threading.Lock()
        self.current = []
        self.stop_event = threading.Event()
        self.thread = None

    def start(self, offset_s, attempt):
        """Take the opening sample now and sample every `interval_s` seconds from here on."""
        self.offset_s, self.attempt, self.mark = offset_s, attempt, self.time_fn()
        self.sample()
        self.thread = threading.Thread(target=self._run, name="vbench-telemetry", daemon=True)
        self.thread.start()

    def sample(self):
        with self.lock:  # a read and its append together: samples stay in time order
            samples = self.reader.read(self.offset_s + self.time_fn() - self.mark, self.attempt)
            self.current.extend(samples)
        return samples

    def cut(self):
        """The current interval's samples (opening sample first) closed by a sample taken now,
        which opens the next interval; [] before `start`."""
        if self.thread is None:
            return []
        with self.lock:
            closing = self.reader.read(self.offset_s + self.time_fn() - self.mark, self.attempt)
            interval, self.current = self.current + closing, list(closing)
        return interval

    def stop(self):
        if self.thread is not None:
            self.stop_event.set()
            self.thread.join()
            self.thread = None

    def _run(self):
        while not self.stop_event.wait(self.interval_s):
            self.sample()


# ---------------------------------------------------------------------------------- aggregation
def _new_stats():
    return {"seconds": 0.0, "energy_j": 0.0, "energy_source": "counter", "power_sum": 0.0, "power_n": 0,
            "power_max": None, "temp_max": None, "util_sum": 0.0, "util_n": 0, "mem_used_max": None,
            "sm_hist": {}, "throttle_s": {}, "slowdown_s": 0.0, "samples": 0}


def _max(a, b):
    return b if a is None else a if b is None else max(a, b)


def _attempt_energy(run):
    """(joules, source) over one attempt's time-ordered samples of one GPU."""
    first, last = run[0]["energy_j"], run[-1]["energy_j"]
    if first is not None and last is not None:
        return last - first, "counter"
    pairs = [(a, b) for a, b in zip(run, run[1:]) if a["power_w"] is not None and b["power_w"] is not None]
    return sum((b["t"] - a["t"]) * (a["power_w"] + b["power_w"]) / 2 for a, b in pairs), "power integral"


def _add_run(stats, run):
    """Add one attempt's time-ordered samples of one GPU (opening sample first) to `stats`."""
    energy, source = _attempt_energy(run)
    stats["energy_j"] += energy
    if source != "counter":
        stats["energy_source"] = source
    stats["seconds"] += run[-1]["t"] - run[0]["t"]
    for before, sample in zip(run, run[1:]):
        dt = sample["t"] - before["t"]
        stats["samples"] += 1
        if sample["power_w"] is not None:
            stats["power_sum"] += sample["power_w"]
            stats["power_n"] += 1
            stats["power_max"] = _max(stats["power_max"], sample["power_w"])
        if sample["util_pct"] is not None:
            stats["util_sum"] += sample["util_pct"]
            stats["util_n"] += 1
        stats["temp_max"] = _max(stats["temp_max"], sample["temp_c"])
        stats["mem_used_max"] = _max(stats["mem_used_max"], sample["mem_used_gib"])
        if sample["sm_mhz"] is not None:
            stats["sm_hist"][sample["sm_mhz"]] = stats["sm_hist"].get(sample["sm_mhz"], 0) + 1
        for bit, name in REASONS.items():
            if sample["reasons"] & bit:
                stats["throttle_s"][name] = stats["throttle_s"].get(name, 0.0) + dt
        if sample["reasons"] & SLOWDOWN_MASK:
            stats["slowdown_s"] += dt


def summarize(samples):
    """{gpu: statistics} of one interval's samples (see the module docstring)."""
    by_run = {}
    for sample in samples:
        by_run.setdefault(sample["gpu"], {}).setdefault(sample["attempt"], []).append(sample)
    result = {}
    for gpu, runs in by_run.items():
        stats = result[gpu] = _new_stats()
        for run in runs.values():
            _add_run(stats, sorted(run, key=lambda s: s["t"]))
    return result


SUMMED = ("seconds", "energy_j", "power_sum", "power_n", "util_sum", "util_n", "slowdown_s", "samples")


def merge(*parts):
    """{gpu: statistics} adding up several intervals' `summarize` results."""
    total = {}
    for part in parts:
        for gpu, stats in part.items():
            if gpu not in total:
                total[gpu] = _new_stats()
            into = total[gpu]
            for key in SUMMED:
                into[key] += stats[key]
            for key in ("power_max", "temp_max", "mem_used_max"):
                into[key] = _max(into[key], stats[key])
            if stats["energy_source"] != "counter":
                into["energy_source"] = stats["energy_source"]
            for mhz, count in stats["sm_hist"].items():
                into["sm_hist"][mhz] = into["sm_hist"].get(mhz, 0) + count
            for name, seconds in stats["throttle_s"].items():
                into["throttle_s"][name] = into["throttle_s"].get(name, 0.0) + seconds
    return total


def histogram_median(hist):
    """Median of the values counted in {value: count}, or None when empty."""
    n = sum(hist.values())
    if not n:
        return None
    middle, seen, picked = ((n - 1) // 2, n // 2), 0, []
    for value in sorted(hist):
        count = hist[value]
        picked += [value for index in middle if seen <= index < seen + count]
        seen += count
    return sum(picked) / 2


def gpu_result(stats):
    """One GPU's entry of results.json's telemetry.gpus (without its name)."""
    return {"energy_kj": stats["energy_j"] / 1000.0, "energy_source": stats["energy_source"],
            "seconds": stats["seconds"],
            "mean_power_w": stats["power_sum"] / stats["power_n"] if stats["power_n"] else None,
            "max_power_w": stats["power_max"], "median_sm_clock_mhz": histogram_median(stats["sm_hist"]),
            "max_temp_c": stats["temp_max"],
            "mean_util_pct": stats["util_sum"] / stats["util_n"] if stats["util_n"] else None,
            "max_memory_used_gib": stats["mem_used_max"],
            "throttled_s": {name: seconds for name, seconds in sorted(stats["throttle_s"].items())},
            "slowdown_s": stats["slowdown_s"], "samples": stats["samples"]}


def epoch_fields(per_gpu):
    """The epoch record's `telemetry`: over the node's GPUs, or None without samples."""
    if not any(stats["samples"] for stats in per_gpu.values()):
        return None
    results = [gpu_result(stats) for stats in per_gpu.values()]
    powers = [r["mean_power_w"] for r in results if r["mean_power_w"] is not None]
    utils = [r["mean_util_pct"] for r in results if r["mean_util_pct"] is not None]
    temps = [r["max_temp_c"] for r in results if r["max_temp_c"] is not None]
    return {"energy_kj": sum(r["energy_kj"] for r in results),
            "power_w": statistics.mean(powers) if powers else None,
            "sm_clock_mhz": histogram_median(_all_hist(per_gpu)),
            "temp_c": max(temps) if temps else None,
            "util_pct": statistics.mean(utils) if utils else None,
            "slowdown_s": max(r["slowdown_s"] for r in results)}


def _all_hist(per_gpu):
    """The SM-clock histograms of every GPU added up."""
    hist = {}
    for stats in per_gpu.values():
        for mhz, count in stats["sm_hist"].items():
            hist[mhz] = hist.get(mhz, 0) + count
    return hist


def series_points(samples, max_points=SERIES_POINTS):
    """{gpu: {"clock_s", "power_w", "sm_clock_mhz"}}: bucket means of the samples, at most
    `max_points` buckets per GPU over the samples' time span."""
    by_gpu = {}
    for sample in samples:
        by_gpu.setdefault(sample["gpu"], []).append(sample)
    series = {}
    for gpu, items in by_gpu.items():
        items.sort(key=lambda s: s["t"])
        start, span = items[0]["t"], items[-1]["t"] - items[0]["t"]
        width = max(span / max_points, 1e-9)
        buckets = {}
        for s in items:
            buckets.setdefault(min(int((s["t"] - start) / width), max_points - 1), []).append(s)
        series[gpu] = {key: [] for key in ("clock_s", "power_w", "sm_clock_mhz")}
        for bucket in buckets.values():
            for key, field in (("clock_s", "t"), ("power_w", "power_w"), ("sm_clock_mhz", "sm_mhz")):
                values = [s[field] for s in bucket if s[field] is not None]
                series[gpu][key].append(statistics.mean(values) if values else None)
    return series


def thin_series(series, max_points=SERIES_POINTS):
    """`series` with every GPU's lists shortened to at most `max_points` by averaging neighbours."""
    thinned = {}
    for gpu, lists in series.items():
        step = max(1, math.ceil(len(lists["clock_s"]) / max_points))
        thinned[gpu] = {key: [_mean_or_none(values[i:i + step]) for i in range(0, len(values), step)]
                        for key, values in lists.items()}
    return thinned


def _mean_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def telemetry_block(per_gpu, names, series, reached, driver, interval_s, notes=()):
    """results.json's `telemetry` with data: per-GPU results to the target (or over the whole
    timed run when the target was not reached), the series for plots and any nodes without data."""
    gpus = [dict(gpu=gpu, name=names.get(gpu), **gpu_result(stats)) for gpu, stats in sorted(per_gpu.items())]
    return {"available": True, "reason": None, "source": "nvml", "driver": driver, "interval_s": interval_s,
            "scope": "to target" if reached else "whole timed run (target not reached)",
            "seconds": max((g["seconds"] for g in gpus), default=0.0),
            "energy_kj": sum(g["energy_kj"] for g in gpus),
            "throttled": any(g["slowdown_s"] > 0 for g in gpus), "gpus": gpus,
            "series": thin_series(series), "notes": list(notes)}


def absent_block(reason):
    """results.json's `telemetry` when nothing could be sampled, saying why."""
    return {"available": False, "reason": reason}


# ---------------------------------------------------------------------------------- reading
def energy_text(results):
    """"energy 123.4 kJ" for a run with telemetry, "energy n/a (why)" without, "" for a run of
    an older vbench."""
    telemetry = results.get("telemetry")
    if telemetry is None:
        return ""
    if not telemetry["available"]:
        return f"energy n/a ({telemetry['reason']})"
    return f"energy {telemetry['energy_kj']:.1f} kJ ({telemetry['scope']})"


def throttle_warnings(telemetry):
    """One line per GPU that was slowed down (power, thermal or hardware limits)."""
    lines = []
    for gpu in (telemetry or {}).get("gpus", []):
        if gpu["slowdown_s"] <= 0:
            continue
        share = gpu["slowdown_s"] / gpu["seconds"] if gpu["seconds"] else 0.0
        reasons = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in gpu["throttled_s"].items()
                            if seconds > 0 and name in SLOWDOWN_NAMES)
        lines.append(f"GPU {gpu['gpu']} ({gpu['name']}) was throttled {gpu['slowdown_s']:.0f} s of "
                     f"{gpu['seconds']:.0f} s {telemetry['scope']} ({100 * share:.1f}%): {reasons}")
    return lines

