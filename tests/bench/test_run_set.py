"""Run sets and convergence (docs/PROTOCOL.md, "Run sets and convergence"): `vbench score` refuses
runs of one track that shared a seed and marks a run that converged faster than the reference's
runs allow as suspect."""
from pathlib import Path

import yaml

from vbench.bench.reference import load_reference
from vbench.bench.run_set import convergence_margin
from vbench.bench.score import score_track
from vbench.cli.score import score_main

from scaffold import X3D, fake_results, save


def run_at(tmp_path, name, epochs, seed=0, time=1000.0, config=X3D, track="cnn"):
    results = fake_results(config, track, time, RNG_SEED=seed)
    results["benchmark"]["epochs_to_target"] = epochs
    return save(tmp_path, name, results)


def reference_with_epochs(tmp_path, epochs):
    """The shipped table with `epochs` as the epochs to target of the cnn track's reference runs."""
    table = yaml.safe_load(open(load_reference().path))
    table["tracks"]["cnn"]["epochs_to_target"] = epochs
    shipped = Path(load_reference().path).parent.parent.parent
    for entry in table["tracks"].values():
        entry["config"] = str(shipped / entry["config"])
    path = tmp_path / "ref.yaml"
    path.write_text(yaml.safe_dump(table))
    return str(path)


def test_two_runs_with_one_seed_are_named_with_the_seed(tmp_path, capsys):
    runs = [run_at(tmp_path, "a", 3, seed=7), run_at(tmp_path, "b", 3, seed=7), run_at(tmp_path, "c", 3, seed=8)]
    ts = score_track("cnn", runs, load_reference())
    assert not ts.compliant and all(run.compliant for run in ts.runs)
    assert ts.seed_problems == [f"runs '{runs[0]}', '{runs[1]}' all used RNG_SEED 7: the runs of a track must use "
                                f"distinct seeds (set RNG_SEED per run; never pick a seed by looking at results)"]
    assert score_main(["--cnn", *runs]) == 0
    out = capsys.readouterr().out
    assert f"  run set: runs '{runs[0]}', '{runs[1]}' all used RNG_SEED 7" in out
    assert "cnn_score = 3.658 (NON-COMPLIANT" in out


def test_distinct_seeds_pass(tmp_path):
    runs = [run_at(tmp_path, f"r{seed}", 3, seed=seed) for seed in range(3)]
    ts = score_track("cnn", runs, load_reference())
    assert ts.compliant and ts.seed_problems == []


def test_a_run_faster_than_the_reference_allows_is_suspect_naming_run_and_epochs(tmp_path, capsys):
    reference = reference_with_epochs(tmp_path, [20, 19, 20, 20, 18])  # fastest 18, margin 1
    fast = run_at(tmp_path, "fast", 16, seed=1, time=500.0)
    edge = run_at(tmp_path, "edge", 17, seed=2, time=600.0)
    ts = score_track("cnn", [fast, edge], load_reference(reference))
    assert ts.runs[0].suspect == (
        f"'{fast}' reached the target in 16 epochs, fewer than the reference allows: its fastest run took 18 "
        f"(of [18, 19, 20, 20, 20]), and a run may be at most 1 faster (17 epochs); this time is suspect, not faster")
    assert ts.runs[1].suspect == "" and ts.suspect and ts.compliant
    assert score_main(["--cnn", fast, edge, "--reference", reference]) == 0
    out = capsys.readouterr().out
    assert f"  {fast}: t_bench 500.0 s, n_gpu 4, score 7.316  [SUSPECT]" in out
    assert f"      SUSPECT: '{fast}' reached the target in 16 epochs" in out
    assert "(SUSPECT: see the convergence above)" in out


def test_the_margin_grows_with_the_epochs_and_without_epochs_nothing_is_checked(tmp_path):
    assert [convergence_margin(e) for e in (2, 5, 10, 19, 20, 45)] == [1, 1, 1, 1, 2, 4]
    reference = reference_with_epochs(tmp_path, [25, 30])  # fastest 25, margin 2: 23 allowed, 22 is not
    runs = [run_at(tmp_path, "r23", 23, seed=1), run_at(tmp_path, "r22", 22, seed=2)]
    assert [bool(run.suspect) for run in score_track("cnn", runs, load_reference(reference)).runs] == [False, True]
    quick = run_at(tmp_path, "quick", 1, seed=3)  # the shipped table lists no epochs: not checked
    assert not score_track("cnn", [quick], load_reference()).suspect
    missed = fake_results(X3D, "cnn", 100.0, reached=False)  # never reached: nothing to check
    assert not score_track("cnn", [save(tmp_path, "missed", missed)], load_reference(reference)).suspect
