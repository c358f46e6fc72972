"""Honest run sets (docs/PROTOCOL.md, "Run sets and convergence"), as MLPerf Training asks:

- the runs of one track must use distinct seeds (`RNG_SEED` of each run's config): runs that share
  a seed repeat one sample of the run-to-run spread instead of measuring it;
- a run must not converge faster than the reference runs allow (MLPerf's reference convergence
  points): a run that reached the target in fewer epochs than the reference's fastest run minus
  CONVERGENCE_MARGIN is suspect, not faster. Its time still counts, marked, until someone explains
  it (another recipe, a changed evaluation, a lucky seed far outside the reference spread).
"""
import math
import statistics

from vbench.errors import ScoreError

CONVERGENCE_MARGIN_FRACTION = 0.10  # the margin: 10% of the reference's fastest epochs to target,
CONVERGENCE_MARGIN_MIN_EPOCHS = 1  # rounded down, and at least one epoch


def seed_of(results):
    return (results.get("config") or {}).get("RNG_SEED")


def seed_problems(runs):
    """One message per seed that several runs used; `runs` are (path, results) pairs."""
    by_seed = {}
    for path, results in runs:
        by_seed.setdefault(seed_of(results), []).append(path)
    return [f"runs {', '.join(repr(p) for p in paths)} all used RNG_SEED {seed}: the runs of a track must use "
            f"distinct seeds (set RNG_SEED per run; never pick a seed by looking at results)"
            for seed, paths in by_seed.items() if len(paths) > 1]


def convergence_margin(fastest):
    """Epochs a run may be faster than the reference's fastest run."""
    return max(CONVERGENCE_MARGIN_MIN_EPOCHS, math.floor(CONVERGENCE_MARGIN_FRACTION * fastest))


def convergence_problem(path, results, reference_epochs):
    """A message when the run reached its target in fewer epochs than the reference allows, else "".
    `reference_epochs` are the epochs to target of the reference runs (empty: not checked)."""
    epochs = results["benchmark"].get("epochs_to_target")
    if not reference_epochs or not results["benchmark"].get("reached") or epochs is None:
        return ""
    fastest = min(reference_epochs)
    allowed = fastest - convergence_margin(fastest)
    if epochs >= allowed:
        return ""
    return (f"'{path}' reached the target in {epochs} epochs, fewer than the reference allows: its fastest run "
            f"took {fastest} (of {sorted(reference_epochs)}), and a run may be at most "
            f"{fastest - allowed} faster ({allowed} epochs); this time is suspect, not faster")


def aggregate_times(times):
    """(time, method): single run, median of 2-4, or MLPerf mean without fastest and slowest (>= 5)."""
    times = sorted(times)
    if not times:
        raise ScoreError("no runs to aggregate")
    if len(times) == 1:
        return times[0], "single run"
    if len(times) < 5:
        return statistics.median(times), f"median of {len(times)} runs"
    kept = times[1:-1]
    if any(math.isinf(t) for t in kept):
        return math.inf, f"mean of {len(kept)} runs (fastest and slowest dropped)"
    return sum(kept) / len(kept), f"mean of {len(kept)} runs (fastest and slowest dropped)"
