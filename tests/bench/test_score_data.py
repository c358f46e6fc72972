"""`vbench score` checks the data (docs/PROTOCOL.md, "Data"): a run's results.json "dataset" block
against the reference table's fingerprints."""
import os
from pathlib import Path

import pytest
import yaml

from vbench.bench.reference import ScoreError, load_reference
from vbench.bench.score import score_track
from vbench.cli.score import score_main as main
from vbench.data.clip_list import MISSING_REASON, read_clip_list
from vbench.data.fingerprint import ids_sha256

from scaffold import MVIT, REPO, X3D, fake_results, save

LISTS = REPO / "configs" / "datasets" / "kinetics20"


def listed(split):
    return [clip.rel_path for clip in read_clip_list(str(LISTS / f"{split}.txt"), split)]


def leave_out(results, split, paths, reason=MISSING_REASON):
    """The run's list was the reference's, but `paths` were missing from its copy."""
    fingerprint = results["dataset"][split]
    fingerprint["excluded"] = [[path, reason] for path in paths]
    fingerprint["videos_readable"] -= len(paths)
    kept = [path for path in listed(split) if path not in set(paths)]
    fingerprint["sha256"] = ids_sha256(Path(path).stem for path in kept)
    return results


def score(tmp_path, results, track="cnn", reference=None, name="run"):
    return score_track(track, [save(tmp_path, name, results)], reference or load_reference()).runs[0]


def test_shipped_reference_fingerprints_are_the_shipped_clip_lists():
    for track in ("cnn", "transformer"):
        expected = load_reference().tracks[track].dataset
        for split, videos in (("train", 1276), ("val", 100)):
            clips = read_clip_list(str(LISTS / f"{split}.txt"), split)
            assert expected[split] == {"videos": videos, "classes": 20,
                                       "sha256": ids_sha256(clip.clip_id for clip in clips)}
            assert len({clip.class_name for clip in clips}) == 20


def test_a_run_on_a_validation_subset_is_refused_naming_split_and_counts(tmp_path, capsys):
    subset = fake_results(X3D, "cnn", 1000.0, **{"DATA.CLIP_LIST": ""})  # its own folder of 5 val clips
    five = listed("val")[:5]
    subset["dataset"]["val"].update(videos_listed=5, videos_readable=5, clips_per_epoch=45,
                                    sha256=ids_sha256(Path(p).stem for p in five),
                                    listed_sha256=ids_sha256(Path(p).stem for p in five))
    run = score(tmp_path, subset)
    assert not run.compliant
    (problem,) = run.data_problems
    assert problem.startswith("val: the run evaluated on another clip set than the reference: 5 clips listed")
    assert "the reference has 100" in problem
    assert main(["--cnn", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "data differs from the reference: val: the run evaluated on another clip set" in out
    assert "NON-COMPLIANT" in out and "DATA.CLIP_LIST" in out


def test_validation_clips_missing_from_the_copy_are_non_compliant(tmp_path):
    results = leave_out(fake_results(X3D, "cnn", 1000.0, **{"DATA.MAX_VAL_EXCLUDED_FRACTION": 1.0}),
                        "val", listed("val")[5:])
    run = score(tmp_path, results)
    (problem,) = run.data_problems
    assert problem.startswith("val: 95 of the 100 reference clips were not evaluated (5 were; first left out:")


def test_a_few_missing_training_clips_take_part_and_the_score_says_how_many(tmp_path, capsys):
    results = leave_out(fake_results(X3D, "cnn", 1000.0), "train", listed("train")[:3])
    run = score(tmp_path, results)
    assert run.compliant and run.data_notes == [
        "train: trained without 3 of the 1276 reference clips (missing or unreadable; up to 12 allowed)"]
    assert main(["--cnn", str(tmp_path / "run"), "--report", str(tmp_path / "report")]) == 0
    assert "data: train: trained without 3 of the 1276" in capsys.readouterr().out
    report = (tmp_path / "report" / "report.md").read_text()
    assert "trained without 3 of the 1276" in report and "train: 1273 of 1276 listed clips used" in report


def test_a_run_with_warm_data_is_compliant_with_a_note(tmp_path):
    cold = fake_results(X3D, "cnn", 1000.0)
    cold["data_cache"] = {"dropped": True, "nodes": 1, "files": 1376, "bytes": 8 << 20, "measured_bytes": 8 << 20,
                          "resident_bytes": 0, "resident_share": 0.0, "seconds": 0.2, "problem_count": 0,
                          "problems": []}
    assert score(tmp_path, cold, name="cold").data_notes == []
    warm = fake_results(X3D, "cnn", 1000.0)
    warm["data_cache"] = dict(cold["data_cache"], dropped=False, resident_bytes=7 << 20, resident_share=0.875)
    run = score(tmp_path, warm, name="warm")
    assert run.compliant and run.data_notes == [
        "the page cache was not dropped before the clock (DATA.DROP_CACHE False): 88% of the data was in "
        "memory when the clock started"]


def test_too_many_missing_training_clips_or_clips_outside_the_list_are_non_compliant(tmp_path):
    results = leave_out(fake_results(MVIT, "transformer", 1000.0), "train", listed("train")[:13])
    results["bad_videos"]["train"] = [{"path": listed("train")[20], "reason": "failed to decode"}]
    (problem,) = score(tmp_path, results, "transformer").data_problems
    assert problem.startswith("train: 14 of the 1276 reference clips were missing or unreadable, more than the "
                              "12 that DATA.MAX_BAD_FRACTION = 0.01 allows")
    outside = fake_results(X3D, "cnn", 1000.0)
    extra = [Path(p).stem for p in listed("train")] + ["zzzextra_000000_000010"]
    outside["dataset"]["train"].update(videos_listed=1277, videos_readable=1277,
                                       sha256=ids_sha256(extra), listed_sha256=ids_sha256(extra))
    (problem,) = score(tmp_path, outside, name="outside").data_problems
    assert problem.startswith("train: the run trained on another clip set than the reference: 1277 clips")


def test_results_without_a_fingerprint_and_references_without_one(tmp_path):
    old = fake_results(X3D, "cnn", 1000.0)
    del old["dataset"]
    run = score(tmp_path, old)
    assert not run.compliant and all("no dataset fingerprint" in p for p in run.data_problems)
    table = yaml.safe_load(open(load_reference().path))
    for entry in table["tracks"].values():
        del entry["dataset"]
        entry["config"] = os.path.join(os.path.dirname(load_reference().path), "..", "..", entry["config"])
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(table))
    run = score(tmp_path, fake_results(X3D, "cnn", 1000.0), reference=load_reference(str(bare)), name="other")
    assert run.compliant
    assert run.data_notes == ["the reference table has no dataset fingerprint: the data was not checked"]


def test_make_reference_writes_the_fingerprint_of_its_runs(tmp_path, capsys):
    runs = [save(tmp_path, f"r{i}", fake_results(X3D, "cnn", t, RNG_SEED=i)) for i, t in enumerate([90.0, 110.0])]
    out = tmp_path / "ref.yaml"
    assert main(["--make-reference", "--cnn", *runs, "--out", str(out)]) == 0
    assert load_reference(str(out)).tracks["cnn"].dataset == load_reference().tracks["cnn"].dataset
    other = fake_results(X3D, "cnn", 100.0, RNG_SEED=7)
    other["dataset"]["val"]["listed_sha256"] = "0" * 64
    assert main(["--make-reference", "--cnn", runs[0], save(tmp_path, "r9", other), "--out", str(out)]) == 2
    assert "did not use the same clips" in capsys.readouterr().err


def test_bad_dataset_block_in_a_reference_file(tmp_path):
    bad = tmp_path / "ref.yaml"
    bad.write_text("tracks:\n  cnn:\n    config: configs/Kinetics/X3D_M.yaml\n    target_top1: 1.0\n"
                   "    t_ref_s: 10.0\n    n_gpu_ref: 1\n    dataset: {val: {videos: 100, classes: 20}}\n")
    with pytest.raises(ScoreError, match="tracks.cnn.dataset.val must hold videos"):
        load_reference(str(bad))
