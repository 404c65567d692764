"""Ray glue for detect_batch.py: one actor per worker, each loading the model once and taking one video at a
time; a local Ray (workers = cores) unless an address names a running cluster. `ray` is imported inside
the functions only (nothing heavy at import time).

    with RayEngine(EngineSettings(workers=2), model_path) as engine:
        not_done = engine.run(items, output_dir, options, settings, model_hash, stop, on_row, on_frames)

Why Ray (README "Batch detection"): it installs beside the pinned tensorflow 2.20 / protobuf 7 (Apache Beam
2.78 needs protobuf < 7 and does not resolve), its actors keep a loaded model per worker, and streaming
generators report each worker's frames while a video runs. Per-video work is utils.runtime.batch.detect_item.
"""
from __future__ import annotations

import os
import queue
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from utils.common import config
from utils.common.errors import UserError, one_line
from utils.common.fileio import recover_stale
from utils.runtime.batch import STATUS_FAILED, BatchItem, DetectOptions, detect_item, json_path

# The driver gets only small rows and frame counts back; Ray's minimum store is 75 MiB.
OBJECT_STORE_BYTES = 100 * 1024 * 1024
VIDEOS_PER_WORKER = 2         # handed to a worker at once: the one it runs and the next
POLL_SECONDS = 0.25           # how often the driver looks at Ctrl-C while waiting for workers
PROGRESS_SECONDS = 0.5        # a worker reports its frames this often
WORKER_EXIT_SECONDS = 10.0    # after shutdown: wait this long for local workers to end before cleaning up
# Shipped to a cluster's nodes (runtime_env working_dir): the code only, never data, models or the venv.
CODE_EXCLUDES = [".git", ".venv", ".cache", "data", "images", "model-checkpoint", "results", "videos",
                 "hand_inference_graph", "gesture_inference_graph", "*.record", "*_labels.csv", "out"]


@dataclass(frozen=True)
class EngineSettings:
    address: str | None = None    # None: start a local Ray; else ray.init(address=...) ("ray://head:10001", "auto")
    workers: int = 0              # 0: one per CPU (this machine's, or the cluster's)
    threads_per_worker: int = 1   # each worker's detector threads (and its Ray CPUs)
    ship_code: bool = True        # with an address: send this checkout to the nodes (runtime_env working_dir)


def _worker_class():
    import ray

    @ray.remote
    class BatchWorker:
        """One worker process: the model loaded once, then one video at a time."""

        def __init__(self, model_path: str, threads: int):
            import cv2

            # The per-video code is imported here, once, on the actor's own thread (not on each video's).
            import utils.runtime.cli  # noqa: F401
            import utils.runtime.outputs  # noqa: F401
            from utils.runtime.detector import load_inference_graph

            cv2.setNumThreads(threads)  # workers = cores already: no extra resize threads per process
            self.detector = load_inference_graph(Path(model_path), threads)

        def info(self) -> tuple[str, int]:
            return socket.gethostname(), os.getpid()

        def detect_row(self, item: BatchItem, output_dir: str, options: DetectOptions, settings: str,
                       model_hash: str) -> dict:
            """The video's row only (Ray Client, ray://, runs no streaming generators)."""
            return detect_item(item, Path(output_dir), options, self.detector, settings, model_hash)

        def detect(self, item: BatchItem, output_dir: str, options: DetectOptions, settings: str,
                   model_hash: str):
            """A streaming generator: frame counts while the video runs, then its row (a dict)."""
            done: queue.Queue = queue.Queue()
            result: dict = {}

            def work() -> None:
                try:
                    result["row"] = detect_item(item, Path(output_dir), options, self.detector, settings,
                                                model_hash, progress=done.put)
                finally:
                    done.put(None)  # the end: the row is returned at once, not after a progress tick

            thread = threading.Thread(target=work, name="detect", daemon=True)
            thread.start()
            frames, last = 0, time.monotonic()
            while True:
                try:
                    count = done.get(timeout=PROGRESS_SECONDS)
                except queue.Empty:
                    count = 0
                if count is None:
                    break
                frames += count
                if frames and time.monotonic() - last >= PROGRESS_SECONDS:
                    yield frames
                    frames, last = 0, time.monotonic()
            thread.join()
            if frames:
                yield frames
            yield result["row"]

    return BatchWorker


class RayEngine:
    """Start (or join) Ray and the workers; run() hands out the videos; exit kills the workers and, for a
    local Ray, shuts it down and removes what killed workers left half-written."""

    def __init__(self, settings: EngineSettings, model_path: Path, at_most: int | None = None):
        self.settings, self.model_path, self.at_most = settings, model_path, at_most  # at_most: videos to do
        # Ray Client (ray://) has no streaming generators: frames are then counted as each video ends.
        self.streaming = not (settings.address or "").startswith("ray://")
        self.workers = 0
        self._actors: list = []
        self._info_refs: list = []
        self._to_clean: list[Path] = []  # outputs a killed worker may have left half-written

    def __enter__(self) -> "RayEngine":
        import ray

        s = self.settings
        env = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}}
        if s.address is None:
            cpus = min(s.workers or _cpu_count(), self.at_most or 1 << 30) * s.threads_per_worker
            # address="local": a Ray of our own even where `ray start` left a cluster (or RAY_ADDRESS names one).
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                     runtime_env=env, logging_level="ERROR", log_to_driver=True)
        else:
            if s.ship_code:
                env.update(working_dir=str(config.ROOT), excludes=CODE_EXCLUDES)
            try:
                ray.init(address=s.address, runtime_env=env, logging_level="ERROR")
            except (ConnectionError, TimeoutError) as exc:
                raise UserError(f"--address {s.address}: cannot reach a Ray cluster ({one_line(exc)}); check the "
                                f"address and that it runs (`ray start --head` on its head node); a cluster with "
                                f"token authentication also needs RAY_AUTH_MODE=token here") from exc
        try:
            cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
            self.workers = min(s.workers or max(1, cluster_cpus // s.threads_per_worker), self.at_most or 1 << 30)
            worker = _worker_class().options(num_cpus=s.threads_per_worker)
            self._actors = [worker.remote(str(self.model_path), s.threads_per_worker) for _ in range(self.workers)]
            self._info_refs = [a.info.remote() for a in self._actors]
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _new_actor(self):
        actor = _worker_class().options(num_cpus=self.settings.threads_per_worker).remote(
            str(self.model_path), self.settings.threads_per_worker)
        self._info_refs.append(actor.info.remote())
        return actor

    def run(self, items: Sequence[BatchItem], output_dir: Path, options: DetectOptions, settings: str,
            model_hash: str, stop: threading.Event, on_row: Callable[[BatchItem, dict], None],
            on_frames: Callable[[int], None]) -> list[BatchItem]:
        """Each item through a free worker until all are done or `stop` is set; `on_row` gets each video's
        row as it finishes (in the order they finish), `on_frames` the frames done. Returns the items not
        finished (in flight or never started when `stop` came)."""
        import ray

        # Each worker gets its next video while it runs one (Ray runs an actor's calls in turn), so it never
        # waits for the driver between videos.
        pending, free = deque(items), [actor for actor in self._actors for _ in range(VIDEOS_PER_WORKER)]
        in_flight: dict = {}  # generator (an ObjectRef without streaming) -> (actor, item)
        reported: set = set()  # generators that sent something: their video was running
        retried: set[str] = set()
        while (pending or in_flight) and not stop.is_set():
            while pending and free:
                actor, item = free.pop(), pending.popleft()
                call = (actor.detect.options(num_returns="streaming") if self.streaming else actor.detect_row)
                generator = call.remote(item, str(output_dir), options, settings, model_hash)
                in_flight[generator] = (actor, item)
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_SECONDS)
            for generator in ready:
                actor, item = in_flight[generator]
                try:
                    value = ray.get(next(generator) if self.streaming else generator)
                    reported.add(generator)
                    if not self.streaming:
                        on_frames(value.get("frames") or 0)
                except (ray.exceptions.RayError, StopIteration) as exc:
                    # The worker died (killed, out of memory, a crash in native code) or hit a bug: this
                    # video fails; a dead worker is replaced.
                    reason = _reason(exc)
                    value = {"video": item.name, "source": item.source, "status": STATUS_FAILED,
                             "error": f"the worker stopped: {reason}", "output": json_path(output_dir, item).name}
                    died = not isinstance(exc, ray.exceptions.RayTaskError)  # a bug: the worker goes on
                    if died and actor in self._actors:  # its other video fails the same way; replaced once
                        ray.kill(actor)
                        self._actors.remove(actor)
                        free = [a for a in free if a is not actor]
                        replacement = self._new_actor()
                        self._actors.append(replacement)
                        free += [replacement] * VIDEOS_PER_WORKER
                    if died:
                        self._to_clean.append(json_path(output_dir, item))  # its temporary, once the worker is gone
                    if died and generator not in reported and item.name not in retried:
                        # Queued behind the video that took the worker down (or it, if it died before its
                        # first frames): tried once more on another worker.
                        retried.add(item.name)
                        del in_flight[generator]
                        pending.appendleft(item)
                        continue
                if isinstance(value, int):
                    on_frames(value)
                    continue
                del in_flight[generator]
                if actor in self._actors:
                    free.append(actor)
                on_row(item, value)
        self._to_clean += [json_path(output_dir, item) for _, item in in_flight.values()]
        return [item for _, item in in_flight.values()] + list(pending)

    def __exit__(self, *exc) -> None:
        import ray

        if not ray.is_initialized():
            return
        ready, _ = ray.wait(self._info_refs, num_returns=len(self._info_refs), timeout=0) if self._info_refs \
            else ([], [])
        workers = []
        for ref in ready:
            try:
                workers.append(ray.get(ref))
            except ray.exceptions.RayError:
                pass
        for actor in self._actors:
            ray.kill(actor)
        ray.shutdown()
        # A worker killed mid-video leaves its JSON's hidden temporary; once those processes are gone,
        # recover_stale removes it (a later run's first write of that video would do it too).
        host = socket.gethostname()
        local = [pid for name, pid in workers if name == host]
        deadline = time.monotonic() + WORKER_EXIT_SECONDS
        while any(_alive(pid) for pid in local) and time.monotonic() < deadline:
            time.sleep(0.1)
        for path in self._to_clean:
            recover_stale(path)


def _reason(exc: BaseException) -> str:
    """A worker's failure in one line: the original exception of a task, else Ray's message (no colours)."""
    cause = getattr(exc, "cause", None)
    text = f"{type(cause).__name__}: {cause}" if cause is not None else (str(exc) or type(exc).__name__)
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())
    return text.split(" class_name:")[0][:500]  # Ray's actor-death message: its first sentence says it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cpu_count() -> int:
    from utils.runtime.loop import cpu_count

    return cpu_count()
