"""An ordered worker pipeline: one reader thread, N workers, results handed back in input order.

    stats = run_ordered(items, workers=[f1, f2], consume=show, queue_size=5, keep_latest=False, stop=event)

- `items` is iterated on the reader thread and fed to the workers through a bounded `FrameFeed`.
  A file source must lose nothing (`keep_latest=False`: the reader blocks when the feed is full);
  a camera must not lag (`keep_latest=True`: the feed keeps only the newest item, dropping stale ones).
- Each worker callable runs on its own thread (give each its own detector: TFLite interpreters are not
  thread-safe). A result carries the sequence number its item got when a worker took it, so results
  can be put back in order by a `ReorderBuffer` even when the feed dropped items.
- `consume` runs on the calling (main) thread, in order; OpenCV windows must live there. It returns
  False to stop (the 'q' key).
- Stops on the end of `items`, on `stop` being set (Ctrl-C), on `consume` returning False, or on the
  first exception in the reader or a worker, which is re-raised as `PipelineError` (never swallowed).
No threads outlive `run_ordered`.
"""
from __future__ import annotations

import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# How often blocked threads wake up to look at the stop flag (seconds): bounds the reaction to Ctrl-C.
POLL_SECONDS = 0.05
# How long to wait for threads to finish their current item after a stop before giving up on them.
JOIN_SECONDS = 5.0


class PipelineError(RuntimeError):
    """A reader or worker raised; the original exception is the __cause__ and `traceback_text`."""

    def __init__(self, message: str, traceback_text: str = ""):
        super().__init__(message)
        self.traceback_text = traceback_text


class FrameFeed:
    """A bounded hand-off from the reader to the workers that numbers items as they are taken."""

    def __init__(self, maxsize: int, keep_latest: bool):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self.keep_latest = keep_latest
        self.dropped = 0           # stale items discarded (keep_latest only)
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._closed = False       # no more puts; gets drain what is left
        self._aborted = False      # stop now; what is left is discarded
        self._next_seq = 0

    def put(self, item: Any) -> bool:
        """Add an item (blocking while full unless keep_latest). False when the feed was aborted."""
        with self._cond:
            if self.keep_latest:
                while len(self._items) >= self.maxsize:
                    self._items.popleft()
                    self.dropped += 1
            else:
                while len(self._items) >= self.maxsize and not self._aborted:
                    self._cond.wait(POLL_SECONDS)
            if self._aborted:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self) -> tuple[int, Any] | None:
        """(sequence number, item), blocking until one is there; None at the end or after abort."""
        with self._cond:
            while not self._items and not self._closed and not self._aborted:
                self._cond.wait(POLL_SECONDS)
            if self._aborted or not self._items:
                return None
            item = self._items.popleft()
            seq, self._next_seq = self._next_seq, self._next_seq + 1
            self._cond.notify_all()
            return seq, item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._items.clear()
            self._cond.notify_all()


class ReorderBuffer:
    """Results keyed by sequence number, released strictly in order.

    `put` blocks while the result is more than `capacity` ahead of the next one due, so a slow worker
    cannot make the others pile up results without bound (the worker holding the next one due never
    blocks, so this cannot deadlock).
    """

    def __init__(self, capacity: int):
        self.capacity = max(1, capacity)
        self._pending: dict[int, Any] = {}
        self._next = 0
        self._cond = threading.Condition()
        self._closed = False

    def put(self, seq: int, result: Any) -> None:
        with self._cond:
            while seq >= self._next + self.capacity and not self._closed:
                self._cond.wait(POLL_SECONDS)
            if self._closed:
                return
            if seq < self._next or seq in self._pending:
                raise ValueError(f"result {seq} was already delivered")
            self._pending[seq] = result
            self._cond.notify_all()

    def get(self, timeout: float = POLL_SECONDS) -> tuple[bool, Any]:
        """(True, next result in order) if it arrives within `timeout`, else (False, None)."""
        with self._cond:
            if self._next not in self._pending:
                self._cond.wait(timeout)
            if self._next not in self._pending:
                return False, None
            result = self._pending.pop(self._next)
            self._next += 1
            self._cond.notify_all()
            return True, result

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    def close(self) -> None:
        """Unblock every put; later results are dropped (used when the run is failing)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class PipelineStats:
    delivered: int = 0                # results handed to `consume`
    dropped: int = 0                  # stale items the feed discarded (keep_latest)
    stopped_by: str = "end"           # "end", "consumer" (q) or "stop" (Ctrl-C / external)
    worker_counts: list[int] = field(default_factory=list)  # items each worker processed


def run_ordered(items: Iterable[Any], workers: Sequence[Callable[[Any], Any]], consume: Callable[[Any], bool],
                queue_size: int, keep_latest: bool, stop: threading.Event | None = None) -> PipelineStats:
    """Run the pipeline described in the module doc; returns when every thread has finished."""
    if not workers:
        raise ValueError("at least one worker is needed")
    stop = stop or threading.Event()
    feed = FrameFeed(1 if keep_latest else queue_size, keep_latest)
    results = ReorderBuffer(queue_size + len(workers))
    errors: list[tuple[str, BaseException, str]] = []
    error_lock = threading.Lock()
    stats = PipelineStats(worker_counts=[0] * len(workers))

    def fail(who: str, exc: BaseException) -> None:
        with error_lock:
            errors.append((who, exc, traceback.format_exc()))
        stop.set()
        feed.abort()
        results.close()

    def read() -> None:
        try:
            for item in items:
                if stop.is_set() or not feed.put(item):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread and re-raised there
            fail("reader", exc)
        finally:
            feed.close()

    def work(number: int, fn: Callable[[Any], Any]) -> None:
        try:
            while not stop.is_set():
                taken = feed.get()
                if taken is None:
                    return
                seq, item = taken
                results.put(seq, fn(item))
                stats.worker_counts[number] += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread and re-raised there
            fail(f"worker {number}", exc)

    threads = [threading.Thread(target=read, name="reader", daemon=True)]
    threads += [threading.Thread(target=work, args=(i, fn), name=f"worker-{i}", daemon=True)
                for i, fn in enumerate(workers)]
    for thread in threads:
        thread.start()
    consuming = True
    try:
        while True:
            ready, result = results.get()
            if ready:
                if consuming and not errors:
                    stats.delivered += 1
                    if not consume(result):
                        consuming = False
                        stats.stopped_by = "consumer"
                        stop.set()
                        feed.abort()
                continue
            if errors:
                break
            if stop.is_set() and stats.stopped_by == "end":
                stats.stopped_by = "stop"
                feed.abort()
            # Done when nothing is running and nothing is left to hand back.
            if not any(t.is_alive() for t in threads) and not len(results):
                break
    finally:
        stop.set()
        feed.abort()
        results.close()  # unblocks a worker waiting for room if `consume` raised
        for thread in threads:
            thread.join(JOIN_SECONDS)
    stats.dropped = feed.dropped
    if errors:
        who, exc, text = errors[0]
        raise PipelineError(f"{who} failed: {exc.__class__.__name__}: {exc}", text) from exc
    return stats
