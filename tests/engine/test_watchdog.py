"""The watchdog's verdict from heartbeats (fast, a hand-moved clock) and its message; the real
runs (a rank stopped with SIGSTOP, a run whose loader hangs) are in test_faults.py."""
from vbench.engine.heartbeats import LocalBoard, store_address
from vbench.engine.watchdog import StallDetector, Verdict, check_interval, describe


def beat(number, progress, state="armed", slowest_s=0.5):
    return {"beat": number, "progress": progress, "slowest_s": slowest_s, "state": state, "host": "h", "pid": 100}


def test_nothing_is_named_before_every_rank_has_made_its_first_step():
    detector = StallDetector(world=2, floor_s=10, factor=10, max_gap_s=100)
    # set-up (indexing, warm-up, compilation) may take any time: rank 1 has not finished a step
    for now in range(0, 60, 2):
        assert detector.observe(now, {0: beat(now, 5), 1: beat(now, 0, "setup")}) is None
    # rank 1 arms at 60: its clock starts then, not at the first beat
    assert detector.observe(60, {0: beat(60, 5), 1: beat(60, 2)}) is None
    assert detector.observe(69, {0: beat(69, 5), 1: beat(69, 2)}) is None  # 9 s < the 10 s floor
    verdict = detector.observe(71, {0: beat(71, 5), 1: beat(71, 2)})
    assert verdict is not None and verdict.kind == "no_progress"


def test_a_rank_whose_beats_stopped_is_named_not_the_one_waiting_for_it():
    detector = StallDetector(world=2, floor_s=10, factor=10, max_gap_s=100)
    for now in range(0, 20):  # both progress
        assert detector.observe(now, {0: beat(now, now), 1: beat(now, now)}) is None
    # at 20 rank 1 stops (its beat number freezes); rank 0 waits for it in a collective (alive, no progress)
    for now in range(20, 30):
        assert detector.observe(now, {0: beat(now, 20), 1: beat(19, 19)}) is None
    verdict = detector.observe(30.5, {0: beat(30, 20), 1: beat(19, 19)})
    assert verdict.ranks == (1,) and verdict.kind == "not_running" and verdict.silent_s == 11.5
    assert verdict.limit_s == 10 and verdict.slowest_s == 0.5


def test_of_ranks_that_all_run_the_one_with_the_least_progress_is_named_and_ties_name_all():
    detector = StallDetector(world=3, floor_s=10, factor=10, max_gap_s=100)
    # rank 2 hangs in its data loading: it fetched one batch less than the ranks in the all-reduce
    for now in range(0, 12):
        verdict = detector.observe(now, {0: beat(now, 41), 1: beat(now, 41), 2: beat(now, 40)})
    assert verdict.ranks == (2,) and verdict.kind == "no_progress"
    detector = StallDetector(world=2, floor_s=10, factor=10, max_gap_s=100)
    for now in range(0, 12):
        verdict = detector.observe(now, {0: beat(now, 41), 1: beat(now, 41)})
    assert verdict.ranks == (0, 1)


def test_the_limit_grows_with_the_slowest_step_and_done_ranks_are_not_watched():
    detector = StallDetector(world=2, floor_s=10, factor=10, max_gap_s=100)
    for now in range(0, 26):  # slowest step 2.5 s: limit 25 s
        assert detector.observe(now, {0: beat(now, 7, slowest_s=2.5), 1: beat(now, 7)}) is None
    assert detector.observe(26, {0: beat(26, 7, slowest_s=2.5), 1: beat(26, 7)}).limit_s == 25
    detector = StallDetector(world=2, floor_s=10, factor=10, max_gap_s=100)
    for now in range(0, 30):  # rank 0 finished training; rank 1 still works
        assert detector.observe(now, {0: beat(now, 9, "done"), 1: beat(now, now)}) is None


def test_a_pause_of_the_watching_process_itself_restarts_every_clock():
    detector = StallDetector(world=1, floor_s=10, factor=10, max_gap_s=5)
    assert detector.observe(0, {0: beat(0, 3)}) is None
    # the watcher was not scheduled for 60 s (a suspended machine): no verdict from that gap alone
    for now in range(60, 71):
        assert detector.observe(now, {0: beat(now, 3)}) is None
    assert detector.observe(71, {0: beat(71, 3)}).ranks == (0,)


def test_a_store_that_stops_answering_names_rank_0_after_the_limit():
    detector = StallDetector(world=2, floor_s=10, factor=10, max_gap_s=100)
    assert detector.store_failed(0) is None  # not armed yet
    for now in range(1, 5):
        detector.observe(now, {0: beat(now, now), 1: beat(now, now)})
    for now in range(5, 16):
        assert detector.store_failed(now) is None
    verdict = detector.store_failed(16)
    assert verdict.ranks == (0,) and verdict.kind == "store" and verdict.silent_s == 11
    assert detector.observe(17, {0: beat(17, 17), 1: beat(17, 17)}) is None  # it answers again


def test_the_message_names_rank_host_pid_and_the_limit():
    beats = {1: {"host": "node-b", "pid": 4242}}
    text = describe(Verdict((1,), "not_running", 61.2, 60.0, 1.25), beats, 4, 60.0, 10.0, "h:1")
    assert text == ("watchdog: rank 1 of 4 (host node-b, pid 4242) has not run for 61 s: its process is "
                    "stopped (SIGSTOP, a suspended job) or its machine froze. Limit 60 s = "
                    "max(WATCHDOG.STALL_TIMEOUT_S 60, WATCHDOG.STEP_FACTOR 10 x the slowest step 1.2 s).")
    text = describe(Verdict((0,), "store", 70, 60, 1), {}, 2, 60, 10, "10.0.0.1:29500")
    assert "rank 0 of 2 stopped answering: the process group's store at 10.0.0.1:29500" in text


def test_boards_and_addresses(monkeypatch):
    board = LocalBoard()
    assert board.claim("first") and not board.claim("second") and board.verdict() == "first"
    board.answer(0)
    assert board.answered(1) == {0}
    assert store_address("tcp://10.1.2.3:9999") == ("10.1.2.3", 9999)
    monkeypatch.setenv("MASTER_ADDR", "node0")
    monkeypatch.setenv("MASTER_PORT", "29561")
    assert store_address("env://") == ("node0", 29561) and store_address("file:///tmp/x") is None
    assert check_interval(300) == 5 and check_interval(12) == 0.6 and check_interval(1) == 0.2
