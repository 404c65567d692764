"""The ordered worker pipeline (utils.runtime.pipeline) with fake, deliberately slow and jittery workers."""
from __future__ import annotations

import random
import threading
import time

import pytest

from utils.runtime.pipeline import Handoff, PipelineError, run_ordered


def _jittery(seed: int, max_sleep: float = 0.004):
    rng = random.Random(seed)
    lock = threading.Lock()

    def work(item):
        with lock:
            pause = rng.uniform(0, max_sleep)
        time.sleep(pause)
        return item, threading.current_thread().name
    return work


def _no_pipeline_threads_left():
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if not [t for t in threading.enumerate() if t.name == "reader" or t.name.startswith("worker-")]:
            return True
        time.sleep(0.01)
    return False


@pytest.mark.timeout(60)
def test_four_jittery_workers_keep_every_item_once_and_in_order():
    got = []
    stats = run_ordered(range(300), [_jittery(seed) for seed in range(4)],
                        lambda result: got.append(result) or True, queue_size=5, keep_latest=False)
    assert [item for item, _ in got] == list(range(300))  # none lost, duplicated or reordered
    assert stats.delivered == 300 and stats.dropped == 0 and stats.stopped_by == "end"
    assert sum(stats.worker_counts) == 300
    assert len({worker for _, worker in got}) == 4, "every worker should have taken part"
    assert _no_pipeline_threads_left()


@pytest.mark.timeout(60)
def test_a_slow_consumer_applies_backpressure_without_loss():
    results = []

    def consume(result):
        time.sleep(0.002)
        results.append(result)
        return True

    run_ordered(range(60), [_jittery(s, 0.001) for s in range(3)], consume, queue_size=2, keep_latest=False)
    assert [item for item, _ in results] == list(range(60))


@pytest.mark.timeout(60)
def test_keep_latest_drops_stale_items_but_keeps_order():
    def fast_camera():
        for i in range(400):
            time.sleep(0.0005)
            yield i

    got = []
    stats = run_ordered(fast_camera(), [_jittery(s, 0.01) for s in range(2)],
                        lambda result: got.append(result[0]) or True, queue_size=5, keep_latest=True)
    assert stats.dropped > 0, "a live source must drop frames the workers cannot keep up with"
    assert got == sorted(got) and len(set(got)) == len(got)
    assert len(got) + stats.dropped == 400


@pytest.mark.timeout(30)
def test_a_worker_error_stops_everything_and_is_raised():
    def failing(item):
        if item == 7:
            raise ValueError("bad frame 7")
        time.sleep(0.001)
        return item

    got = []
    with pytest.raises(PipelineError, match=r"worker \d failed: ValueError: bad frame 7") as info:
        run_ordered(range(1000), [failing] * 3, lambda r: got.append(r) or True, queue_size=4,
                    keep_latest=False)
    assert isinstance(info.value.__cause__, ValueError)
    assert "bad frame 7" in info.value.traceback_text
    assert 7 not in got and len(got) < 1000
    assert _no_pipeline_threads_left()


@pytest.mark.timeout(30)
def test_a_reader_error_is_raised():
    def broken_source():
        yield 0
        yield 1
        raise OSError("disk gone")

    with pytest.raises(PipelineError, match="reader failed: OSError: disk gone"):
        run_ordered(broken_source(), [lambda x: x] * 2, lambda r: True, queue_size=2, keep_latest=False)
    assert _no_pipeline_threads_left()


@pytest.mark.timeout(30)
def test_consumer_can_stop_the_run():
    got = []
    stats = run_ordered(range(10_000), [_jittery(s, 0.001) for s in range(2)],
                        lambda r: got.append(r[0]) or len(got) < 25, queue_size=3, keep_latest=False)
    assert stats.stopped_by == "consumer"
    assert got == list(range(25))
    assert _no_pipeline_threads_left()


@pytest.mark.timeout(30)
def test_stop_event_ends_an_endless_source_quickly():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    stop = threading.Event()
    got = []
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    # an endless source: returning at all (within the test's timeout) shows the stop took
    stats = run_ordered(endless(), [_jittery(s, 0.002) for s in range(4)], lambda r: got.append(r[0]) or True,
                        queue_size=5, keep_latest=False, stop=stop)
    assert stats.stopped_by == "stop"
    assert got == list(range(len(got))) and got, "what was processed before the stop comes out, in order"
    assert _no_pipeline_threads_left()


@pytest.mark.parametrize("consume", [lambda r: True, lambda r: r[0] < 3], ids=["to the end", "consumer stops"])
def test_the_callers_stop_event_stays_unset_after_a_run(consume):
    # The detectors read their stop event after the run (--linger keeps the window until Ctrl-C): the
    # pipeline's own shutdown must not look like a Ctrl-C there.
    stop = threading.Event()
    run_ordered(range(10), [_jittery(s, 0.001) for s in range(2)], consume, queue_size=3, keep_latest=False,
                stop=stop)
    assert not stop.is_set()
    assert _no_pipeline_threads_left()


def test_file_handoff_is_bounded_lossless_and_in_order():
    handoff = Handoff(3, keep_latest=False)
    stop = threading.Event()
    for item in "abc":
        assert handoff.put(item, stop)
    blocked = threading.Thread(target=lambda: handoff.put("d", stop))  # full: waits for room, loses nothing
    blocked.start()
    time.sleep(0.1)
    assert blocked.is_alive()
    assert handoff.get() == "a"
    blocked.join(2)
    assert not blocked.is_alive()
    assert [handoff.get(), handoff.get(), handoff.get(), handoff.get(timeout=0.01)] == ["b", "c", "d", None]
    for item in "efg":
        handoff.put(item, stop)
    stop.set()
    assert not handoff.put("h", stop), "a stop ends a wait for room"


def test_latest_handoff_keeps_only_the_newest():
    handoff = Handoff(5, keep_latest=True)
    for item in range(5):
        handoff.put(item, threading.Event())
    assert handoff.get() == 4 and handoff.dropped == 4


@pytest.mark.timeout(30)
def test_a_stuck_consumer_bounds_what_is_read_ahead():
    queue_size, workers = 3, 2
    taken = []

    def source():
        for i in range(200):
            taken.append(i)
            yield i

    seen_while_stuck = []

    def consume(result):
        if result[0] == 0:  # stuck on the first result: the reader and workers must stop taking items
            time.sleep(0.3)
            seen_while_stuck.append(len(taken))
        got.append(result[0])
        return True

    got = []
    run_ordered(source(), [_jittery(s, 0.001) for s in range(workers)], consume, queue_size=queue_size,
                keep_latest=False)
    window = queue_size + workers  # futures in flight, the first one being consumed
    assert seen_while_stuck[0] <= window + queue_size + 1  # + the handoff + the item the reader holds
    assert got == list(range(200))
