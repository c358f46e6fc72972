"""Benchmark clock: untimed set-up, start/stop, heartbeat, resume accounting (fake time only)."""
import json
import os

import pytest

from vbench.bench.clock import HEARTBEAT_FILE, BenchmarkClock


class FakeTime:
    def __init__(self, now):
        self.now = float(now)

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def make_clock(tmp_path, mono_start=1000.0, wall=None, interval=10.0):
    mono = FakeTime(mono_start)
    wall = wall or FakeTime(1.7e9)
    clock = BenchmarkClock(str(tmp_path / HEARTBEAT_FILE), time_fn=mono, wall_fn=wall,
                           heartbeat_interval_s=interval)
    return clock, mono, wall


def heartbeat(tmp_path):
    with open(tmp_path / HEARTBEAT_FILE) as f:
        return json.load(f)


def test_setup_is_untimed_and_stop_freezes(tmp_path):
    clock, mono, _ = make_clock(tmp_path)
    mono.advance(30.0)  # imports, model build, dataset index
    assert clock.elapsed() == 0.0 and not clock.running
    clock.start()
    assert clock.setup_s == 30.0 and clock.elapsed() == 0.0 and clock.running
    mono.advance(100.0)
    assert clock.elapsed() == 100.0
    assert clock.stop() == 100.0 and clock.stopped and not clock.running
    mono.advance(50.0)  # after the target: not benchmark time, still run time
    assert clock.elapsed() == 100.0 and clock.stop() == 100.0
    assert clock.total_s() == 150.0
    summary = clock.summary()
    assert summary["setup_s"] == 30.0 and summary["total_s"] == 150.0 and summary["resumes"] == 0


def test_heartbeat_is_rate_limited_and_forced_by_checkpoint(tmp_path):
    clock, mono, _ = make_clock(tmp_path, interval=10.0)
    clock.beat()
    assert not os.path.exists(tmp_path / HEARTBEAT_FILE)  # nothing before start
    clock.start()
    assert heartbeat(tmp_path)["clock_s"] == 0.0
    mono.advance(4.0)
    clock.beat()
    assert heartbeat(tmp_path)["clock_s"] == 0.0  # within the interval: no write
    mono.advance(7.0)
    clock.beat()
    assert heartbeat(tmp_path)["clock_s"] == 11.0
    mono.advance(1.0)
    state = clock.state_dict()
    assert heartbeat(tmp_path)["clock_s"] == state["clock_s"] == 12.0
    assert heartbeat(tmp_path)["run_id"] == state["run_id"]
    assert [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] == []


def test_no_heartbeat_path_writes_nothing(tmp_path):
    clock = BenchmarkClock(None, time_fn=FakeTime(0.0))
    clock.start()
    clock.beat(force=True)
    clock.state_dict()
    assert os.listdir(tmp_path) == []


def crashed_attempt(tmp_path, after_checkpoint_s, beat_at_s):
    """First attempt: 100 s to a checkpoint, then runs on, last heartbeat at +beat_at_s, crashes."""
    clock, mono, wall = make_clock(tmp_path)

    def advance(seconds):  # real time passes for both clocks
        mono.advance(seconds)
        wall.advance(seconds)

    advance(20.0)
    clock.start()
    advance(100.0)
    state = clock.state_dict()
    advance(beat_at_s)
    clock.beat()
    advance(after_checkpoint_s - beat_at_s)  # unrecorded: between the last heartbeat and the crash
    return state, wall


def test_resume_adds_the_time_lost_after_the_checkpoint(tmp_path):
    state, wall = crashed_attempt(tmp_path, after_checkpoint_s=45.0, beat_at_s=40.0)
    assert state["clock_s"] == 100.0
    wall.advance(600.0)  # downtime before the restart: not charged when the heartbeat proves the loss
    clock, mono, _ = make_clock(tmp_path, mono_start=5.0, wall=wall)  # a new process: new monotonic base
    mono.advance(25.0)
    clock.resume_from(state)
    clock.start()
    assert clock.setup_s == 25.0
    assert clock.elapsed() == 140.0  # checkpoint 100 + 40 s proven by the heartbeat
    assert heartbeat(tmp_path)["clock_s"] == 140.0  # the resumed value is on disk at once
    summary = clock.summary()
    assert summary["resumes"] == 1 and summary["resume_added_s"] == 40.0 and summary["warnings"] == []
    mono.advance(10.0)
    assert clock.elapsed() == 150.0


def test_repeated_crashes_keep_the_clock_monotonic(tmp_path):
    state, wall = crashed_attempt(tmp_path, after_checkpoint_s=40.0, beat_at_s=40.0)
    seen = []
    for attempt in range(3):  # every attempt resumes from the same checkpoint and crashes again
        clock, mono, _ = make_clock(tmp_path, mono_start=attempt * 7.0, wall=wall)
        clock.resume_from(state)
        clock.start()
        seen.append(clock.elapsed())
        mono.advance(15.0)
        clock.beat(force=True)
    assert seen == [140.0, 155.0, 170.0]
    assert clock.summary()["resumes"] == 1  # resumes are counted from the checkpoint's record
    resumed = clock.state_dict()
    assert resumed["clock_s"] == 185.0 and len(resumed["resumes"]) == 1


def test_resume_count_accumulates_through_checkpoints(tmp_path):
    state, wall = crashed_attempt(tmp_path, after_checkpoint_s=10.0, beat_at_s=10.0)
    clock, mono, _ = make_clock(tmp_path, wall=wall)
    clock.resume_from(state)
    clock.start()
    mono.advance(50.0)
    second_state = clock.state_dict()  # checkpoint of the resumed attempt at 160
    mono.advance(5.0)
    clock.beat(force=True)
    clock, _, _ = make_clock(tmp_path, wall=wall)
    clock.resume_from(second_state)
    clock.start()
    assert clock.elapsed() == 165.0
    assert clock.summary()["resumes"] == 2 and clock.summary()["resume_added_s"] == 15.0


@pytest.mark.parametrize("damage, reason", [
    ("delete", "missing"), ("garble", "damaged"), ("other_run", "from another run")])
def test_unprovable_loss_charges_wall_clock_since_checkpoint_and_warns(tmp_path, damage, reason):
    state, wall = crashed_attempt(tmp_path, after_checkpoint_s=45.0, beat_at_s=40.0)
    path = tmp_path / HEARTBEAT_FILE
    if damage == "delete":
        os.remove(path)
    elif damage == "garble":
        path.write_text('{"clock_s": 14')
    else:
        path.write_text(json.dumps({"run_id": "someone-else", "clock_s": 1e6}))
    wall.advance(300.0)  # downtime: included, since nothing proves how long the crashed attempt ran
    clock, _, _ = make_clock(tmp_path, wall=wall)
    clock.resume_from(state)
    clock.start()
    assert clock.elapsed() == 100.0 + 45.0 + 300.0  # never less than the proven 100 + 40
    warning, = clock.summary()["warnings"]
    assert reason in warning and "cannot be proven" in warning
    assert clock.state_dict()["warnings"] == [warning]  # carried into the next checkpoint


def test_checkpoint_of_a_stopped_clock_stays_stopped(tmp_path):
    clock, mono, wall = make_clock(tmp_path)
    clock.start()
    mono.advance(70.0)
    clock.stop()
    mono.advance(30.0)
    state = clock.state_dict()
    clock, mono, _ = make_clock(tmp_path, wall=wall)
    clock.resume_from(state)
    clock.start()
    mono.advance(10.0)
    assert clock.stopped and clock.elapsed() == 70.0 and clock.total_s() == 110.0


def test_misuse_raises(tmp_path):
    clock, _, _ = make_clock(tmp_path)
    with pytest.raises(RuntimeError, match="before start"):
        clock.stop()
    clock.start()
    with pytest.raises(RuntimeError, match="twice"):
        clock.start()
    with pytest.raises(RuntimeError, match="before start"):
        clock.resume_from(clock.state_dict())
