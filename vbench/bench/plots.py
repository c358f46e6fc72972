"""PNG plots for reports (matplotlib, headless)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _epochs(results):
    return results.get("epochs") or []


def plot_accuracy_vs_time(runs, path, metric="clip", target=None, t_ref_s=None, title=""):
    """Top-1 against the benchmark clock for each (label, results); target and reference marked."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, results in runs:
        rows = [r for r in _epochs(results) if r.get(f"{metric}_top1") is not None]
        ax.plot([r["clock_s"] for r in rows], [r[f"{metric}_top1"] for r in rows], marker="o", label=label)
    if target is not None:
        ax.axhline(target, color="red", linestyle="--", label=f"target {target}")
    if t_ref_s is not None:
        ax.axvline(t_ref_s, color="gray", linestyle=":", label=f"reference time {t_ref_s:.0f} s")
    ax.set_xlabel("benchmark clock (s)")
    ax.set_ylabel(f"{metric} top-1 (%)")
    ax.set_title(title or f"{metric} top-1 against wall-clock time")
    return _save(fig, [ax], path)


def plot_throughput(runs, path, title=""):
    """Clips/s and data-wait share per epoch for each (label, results)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for label, results in runs:
        rows = _epochs(results)
        epochs = [r["epoch"] for r in rows]
        top.plot(epochs, [r.get("clips_per_s") or 0 for r in rows], marker="o", label=label)
        bottom.plot(epochs, [100 * (r.get("data_wait_fraction") or 0) for r in rows], marker="o", label=label)
    bottom.axhline(20, color="red", linestyle="--", label="input-bound above 20%")
    top.set_ylabel("training clips/s")
    bottom.set_ylabel("data-wait share (%)")
    bottom.set_xlabel("epoch")
    top.set_title(title or "throughput per epoch")
    return _save(fig, [top, bottom], path)


def telemetry_series(results):
    """{gpu: {"clock_s", "power_w", "sm_clock_mhz"}} of a run's GPU telemetry, or {}."""
    telemetry = results.get("telemetry") or {}
    return telemetry.get("series") or {}


def plot_telemetry(runs, path, title=""):
    """Power and SM clock of every GPU against the benchmark clock for each (label, results) with
    telemetry; None (no file) when no run has any."""
    lines = [(f"{label} {gpu}" if len(runs) > 1 else gpu, series)
             for label, results in runs for gpu, series in sorted(telemetry_series(results).items())]
    if not lines:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for name, series in lines:
        top.plot(series["clock_s"], series["power_w"], label=name)
        bottom.plot(series["clock_s"], series["sm_clock_mhz"], label=name)
    top.set_ylabel("power (W)")
    bottom.set_ylabel("SM clock (MHz)")
    bottom.set_xlabel("benchmark clock (s)")
    top.set_title(title or "GPU power and SM clock")
    return _save(fig, [top, bottom], path)


def _save(fig, axes, path):
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
