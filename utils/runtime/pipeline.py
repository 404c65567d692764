"""An ordered worker pipeline on concurrent.futures: a reader thread, N workers, results in input order.

    stats = run_ordered(items, workers=[f1, f2], consume=show, queue_size=5, keep_latest=False, stop=event)

- `items` is iterated on a reader thread (decoding overlaps detection) and handed over through a
  `Handoff`: bounded and lossless for a file (`keep_latest=False`: the reader waits when it is full), one
  slot holding only the newest item for a camera (`keep_latest=True`: stale items are dropped, counted).
- The calling thread submits items to a ThreadPoolExecutor with one thread per worker callable, keeping
  a bounded window of futures (`queue_size + workers` for a file; `workers` for a camera, so a frame
  is taken only when a worker is free and never waits behind others), and hands results to `consume`
  oldest first. Each callable is used by one thread at a time (give each its own detector: TFLite
  interpreters are not thread-safe).
- `consume` runs on the calling (main) thread, in order; OpenCV windows must live there. It returns
  False to stop (the 'q' key).
- Stops on the end of `items`, on `stop` being set (Ctrl-C: what already finished is still handed over,
  in order), on `consume` returning False, or on the first exception in the reader or a worker, which
  is re-raised as `PipelineError` (never swallowed). No threads outlive `run_ordered`.
"""
from __future__ import annotations

import queue
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

# How often blocked waits wake up to look at the stop flag (seconds): bounds the reaction to Ctrl-C.
POLL_SECONDS = 0.05
# How long to wait for the reader to notice a stop before giving up on it (it may sit in a slow read).
JOIN_SECONDS = 5.0
READER_THREAD = "reader"
WORKER_THREAD_PREFIX = "worker-"


class PipelineError(RuntimeError):
    """A reader or worker raised; the original exception is the __cause__ and `traceback_text`."""

    def __init__(self, message: str, traceback_text: str = ""):
        super().__init__(message)
        self.traceback_text = traceback_text


_END = object()  # the reader's last item


class Handoff:
    """Items from the reader thread to the submitting thread: bounded, or only the newest (`keep_latest`)."""

    def __init__(self, maxsize: int, keep_latest: bool):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.keep_latest = keep_latest
        self.dropped = 0  # stale items discarded (keep_latest only)
        self._queue: queue.Queue = queue.Queue(1 if keep_latest else maxsize)

    def put(self, item: Any, stop: threading.Event) -> bool:
        """Hand an item over; False when `stop` was set while waiting for room."""
        replace_stale = self.keep_latest and item is not _END  # the end mark waits; frames replace
        while not stop.is_set():
            try:
                self._queue.put(item, block=not replace_stale, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                if replace_stale:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        return False

    def get(self, timeout: float = POLL_SECONDS) -> Any:
        """The next item, `_END` after the last one, or None when none came within `timeout`."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


@dataclass
class PipelineStats:
    delivered: int = 0                # results handed to `consume`
    dropped: int = 0                  # stale items the handoff discarded (keep_latest)
    stopped_by: str = "end"           # "end", "consumer" (q) or "stop" (Ctrl-C / external)
    worker_counts: list[int] = field(default_factory=list)  # items each worker processed


class _AnyEvent:
    """Set while any of its events is: the caller's stop (only read here) and the pipeline's own halt, so
    the pipeline's shutdown never sets the caller's event (the detectors read it after the run: --linger)."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self.events)


class _WorkerFailed(Exception):
    def __init__(self, number: int, text: str):
        super().__init__(number)
        self.number, self.text = number, text


def run_ordered(items: Iterable[Any], workers: Sequence[Callable[[Any], Any]], consume: Callable[[Any], bool],
                queue_size: int, keep_latest: bool, stop: threading.Event | None = None) -> PipelineStats:
    """Run the pipeline described in the module doc; returns when every thread has finished."""
    if not workers:
        raise ValueError("at least one worker is needed")
    halt = threading.Event()
    stop = _AnyEvent(halt, stop) if stop is not None else halt
    handoff = Handoff(queue_size, keep_latest)
    window = len(workers) if keep_latest else queue_size + len(workers)
    stats = PipelineStats(worker_counts=[0] * len(workers))
    reader_error: list[tuple[BaseException, str]] = []
    free_workers: queue.SimpleQueue = queue.SimpleQueue()  # at most len(workers) tasks run at once
    for number in range(len(workers)):
        free_workers.put(number)

    def read() -> None:
        try:
            for item in items:
                if not handoff.put(item, stop):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread and re-raised there
            reader_error.append((exc, traceback.format_exc()))
        handoff.put(_END, stop)

    def task(item: Any) -> Any:
        number = free_workers.get()
        try:
            result = workers[number](item)
            stats.worker_counts[number] += 1
            return result
        except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread with the worker's number
            raise _WorkerFailed(number, traceback.format_exc()) from exc
        finally:
            free_workers.put(number)

    reader = threading.Thread(target=read, name=READER_THREAD, daemon=True)
    pending: deque[Future] = deque()
    reading = True
    with ThreadPoolExecutor(len(workers), thread_name_prefix=WORKER_THREAD_PREFIX) as pool:
        reader.start()
        try:
            while True:
                while reading and len(pending) < window and not stop.is_set():
                    item = handoff.get(0 if pending else POLL_SECONDS)
                    if item is None:
                        break
                    if item is _END:
                        reading = False
                    else:
                        pending.append(pool.submit(task, item))
                if reader_error:
                    exc, text = reader_error[0]
                    raise PipelineError(f"reader failed: {exc.__class__.__name__}: {exc}", text) from exc
                if stop.is_set() and stats.stopped_by == "end":
                    stats.stopped_by = "stop"
                    for future in pending:
                        future.cancel()  # the ones not started; what is done is still handed over
                if not pending:
                    if not reading or stop.is_set():
                        break
                    continue
                try:
                    result = pending[0].result(timeout=POLL_SECONDS)
                except FutureTimeout:
                    continue
                except CancelledError:
                    break  # stopping: everything after a cancelled one is cancelled or dropped
                except _WorkerFailed as failed:
                    cause = failed.__cause__
                    raise PipelineError(f"worker {failed.number} failed: {cause.__class__.__name__}: {cause}",
                                        failed.text) from cause
                pending.popleft()
                stats.delivered += 1
                if not consume(result):
                    stats.stopped_by = "consumer"
                    break
        finally:
            halt.set()  # the reader stops at its next item
            for future in pending:
                future.cancel()
            # Also when a worker failed: the caller closes the source next, and OpenCV aborts the process
            # (or hangs) when a capture is released while the reader is still inside read().
            reader.join(JOIN_SECONDS)
    stats.dropped = handoff.dropped
    return stats
