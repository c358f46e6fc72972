"""Does a run's data match its reference? (docs/PROTOCOL.md, "Data")

The reference table gives, per split, the clips a track is defined on ({videos, classes, sha256}
of the sorted clip IDs). A run's results.json "dataset" block gives the clips it listed
(`listed_sha256`), those it left out at index time (`excluded`), and "bad_videos" those that failed
later. A run is non-compliant when
- it listed another clip set than the reference in any split (another folder, another list, clips
  outside the list) or another number of classes;
- any validation clip was not evaluated (the target is measured on the whole validation set);
- more of the training list was missing or unreadable than the recipe's DATA.MAX_BAD_FRACTION.
A training list that lacked fewer clips is compliant, and the score says how many it lacked; a
run whose data was not evicted from the page cache before the clock gets a note too.
"""
import math


def _left_out(results, fingerprint, later):
    """{path: reason} of clips left out at index time plus those that failed later (`later` is a
    bad_videos list)."""
    left = {path: reason for path, reason in fingerprint["excluded"]}
    left.update({item["path"]: item["reason"] for item in (results.get("bad_videos") or {}).get(later, [])})
    return left


def _first(left):
    path = min(left)
    return f"{path}: {left[path]}"


def check_split(results, split, expected, roles, max_bad_fraction):
    """(problems, notes) of one split; `roles` holds "train" and/or "val"."""
    fingerprint = (results.get("dataset") or {}).get(split)
    videos = expected["videos"]
    if fingerprint is None:
        return [f"{split}: results.json has no dataset fingerprint for this split (a run of an older "
                f"vbench, or another split name); the data cannot be checked"], []
    if fingerprint["classes"] != expected["classes"]:
        return [f"{split}: {fingerprint['classes']} classes, the reference has {expected['classes']}"], []
    if fingerprint["listed_sha256"] != expected["sha256"]:
        used = "evaluated" if "val" in roles else "trained"
        return [f"{split}: the run {used} on another clip set than the reference: {fingerprint['videos_listed']} "
                f"clips listed ({fingerprint['videos_readable']} readable), the reference has {videos} (sha256 "
                f"{fingerprint['listed_sha256'][:12]}... vs {expected['sha256'][:12]}...)"], []
    problems, notes = [], []
    if "val" in roles:
        left = _left_out(results, fingerprint, "eval_excluded")
        if left:
            problems.append(f"{split}: {len(left)} of the {videos} reference clips were not evaluated "
                            f"({videos - len(left)} were; first left out: {_first(left)}); the target must "
                            f"be measured on the whole validation set")
    if "train" in roles:
        left = _left_out(results, fingerprint, "train")
        allowed = math.floor(max_bad_fraction * videos)
        if len(left) > allowed:
            problems.append(f"{split}: {len(left)} of the {videos} reference clips were missing or unreadable, "
                            f"more than the {allowed} that DATA.MAX_BAD_FRACTION = {max_bad_fraction} allows "
                            f"(first: {_first(left)})")
        elif left:
            notes.append(f"{split}: trained without {len(left)} of the {videos} reference clips (missing or "
                         f"unreadable; up to {allowed} allowed)")
    return problems, notes


def cache_note(results):
    """A note when the run's data was warm when the clock started (DATA.DROP_CACHE off), else None."""
    cache = results.get("data_cache")
    if not cache or cache["dropped"]:
        return None
    share = cache["resident_share"]
    resident = "an unmeasured share" if share is None else f"{100 * share:.0f}%"
    return (f"the page cache was not dropped before the clock (DATA.DROP_CACHE False): {resident} of "
            f"the data was in memory when the clock started")


def check_dataset(results, expected_dataset, recipe):
    """(problems, notes) of a run's data against a reference's `dataset` ({split: expected});
    `recipe` is the track's benchmark config as a dict (split roles, DATA.MAX_BAD_FRACTION)."""
    warm = [note for note in [cache_note(results)] if note]
    if not expected_dataset:
        return [], ["the reference table has no dataset fingerprint: the data was not checked"] + warm
    data = recipe["DATA"]
    problems, notes = [], []
    for split, expected in expected_dataset.items():
        roles = {role for role, key in (("train", "TRAIN_SPLIT"), ("val", "VAL_SPLIT")) if data[key] == split}
        split_problems, split_notes = check_split(results, split, expected, roles, data["MAX_BAD_FRACTION"])
        problems += split_problems
        notes += split_notes
    return problems, notes + warm
