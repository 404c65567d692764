"""The detection loop: frames -> processors (detect, draw, JSON record) -> a presenter, in frame order.

    with open_source("clip.mp4") as source:
        frames = FrameStream(source, width=320, height=240)
        stats = run(frames, [FrameProcessor(detector, min_score=0.2, max_hands=2)], present=outputs_and_window)

One processor runs on the calling thread (detect_single_threaded.py); several (or `threaded=True`) run on
worker threads through utils.runtime.pipeline, results still handed to `present` in frame order and on
the calling thread (detect_multi_threaded.py). bench.py times this same function.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from utils.common.boxes import normalized_to_pixels
from utils.runtime import detector as detector_utils
from utils.runtime.pipeline import run_ordered
from utils.runtime.sources import FrameSource, SourceFrame, fit_frame

DEFAULT_QUEUE_SIZE = 5   # the original's default
SCORE_DECIMALS = 4

# Why a run stopped, as the summary line says it.
STOPPED_AT_END = "end of stream"
STOPPED_AT_MAX_FRAMES = "--max-frames"
STOPPED_BY_QUIT = "'q'"
STOPPED_BY_CTRL_C = "Ctrl-C"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads_per_detector(model_path: Path, num_workers: int, requested: int = 0) -> int:
    """Threads for each detector: TFLite workers each get their own interpreter, so split the cores;
    TensorFlow backends share one session between workers, so it gets them all."""
    if requested > 0:
        return requested
    if model_path.suffix == ".tflite":
        return max(1, cpu_count() // max(1, num_workers))
    return cpu_count()


# --- Per-frame work ------------------------------------------------------------------------------

@dataclass
class FrameResult:
    index: int
    image: np.ndarray        # BGR, boxes drawn
    record: dict             # the JSON line
    num_boxes: int


def frame_record(frame: SourceFrame, kept: detector_utils.Detections, width: int, height: int,
                 class_names: dict[int, str]) -> dict:
    """The --json line of one frame: boxes in pixels of the (resized) frame."""
    pixels = normalized_to_pixels(kept.boxes, width, height).round().astype(int)
    record = {"index": frame.index,
              "timestamp": None if frame.timestamp is None else round(frame.timestamp, 6),
              "width": width, "height": height,
              "boxes": pixels.tolist(),
              "scores": [round(float(s), SCORE_DECIMALS) for s in kept.scores],
              "classes": [int(c) for c in kept.classes],
              "class_names": [class_names.get(int(c), str(int(c))) for c in kept.classes]}
    if frame.name is not None:
        record["file"] = frame.name
    return record


class FrameProcessor:
    """Detect, keep the best boxes, draw them on the frame and make its JSON record.
    One per thread: it owns its detector."""

    def __init__(self, detector: detector_utils.HandDetector, min_score: float, max_hands: int):
        self.detector = detector
        self.min_score = min_score
        self.max_hands = max_hands

    def __call__(self, frame: SourceFrame) -> FrameResult:
        import cv2

        image = frame.bgr
        height, width = image.shape[:2]
        kept = self.detector.detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), min_score=self.min_score,
                                    max_hands=self.max_hands)
        # Drawn on the BGR frame, so the window and the video show exactly BOX_COLOR_BGR.
        detector_utils.draw_box_on_image(len(kept.scores), -np.inf, kept.scores, kept.boxes, width, height,
                                         image, kept.classes, self.detector.class_names)
        return FrameResult(frame.index, image, frame_record(frame, kept, width, height,
                                                            self.detector.class_names), len(kept.scores))


class FrameStream:
    """The source's frames, resized / flipped, at most `max_frames`; corrupt ones skipped with a warning."""

    def __init__(self, source: FrameSource, width: int = 0, height: int = 0, flip: bool = False,
                 max_frames: int | None = None, warn: Callable[[str], None] = lambda message: None):
        self.source, self.width, self.height, self.flip = source, width, height, flip
        self.max_frames, self.warn = max_frames, warn
        self.skipped = 0
        self.delivered = 0

    @property
    def exhausted_max_frames(self) -> bool:
        return self.max_frames is not None and self.delivered >= self.max_frames

    def __iter__(self) -> Iterator[SourceFrame]:
        if self.exhausted_max_frames:
            return
        for frame in self.source.frames():
            if frame.bgr is None:
                self.skipped += 1
                where = frame.name or self.source.description
                self.warn(f"{where}: {frame.error}; frame {frame.index} skipped")
                continue
            yield replace(frame, bgr=fit_frame(frame.bgr, self.width, self.height, self.flip))
            self.delivered += 1
            if self.exhausted_max_frames:
                return
        ended_early = getattr(self.source, "ended_early", None)
        if ended_early:
            self.warn(f"{self.source.description}: {ended_early}")


# --- The loop ------------------------------------------------------------------------------------

@dataclass
class RunStats:
    frames: int = 0              # results handed to the presenter
    frames_with_boxes: int = 0
    seconds: float = 0.0
    skipped: int = 0             # corrupt frames
    dropped: int = 0             # stale live frames (threaded runs on a camera or live stream)
    stopped_by: str = STOPPED_AT_END

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run(frames: FrameStream, processors: Sequence[Callable[[SourceFrame], FrameResult]],
        present: Callable[[FrameResult], bool] | None = None, *, threaded: bool | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE, stop: threading.Event | None = None) -> RunStats:
    """Run every frame through a processor and hand the results, in order, to `present` (which
    returns False to quit). Threaded (default: with more than one processor) means one worker thread
    per processor and a reader thread; a live source then keeps only its newest frame. Stops at the
    end of the frames, on `present` returning False, or when `stop` is set (Ctrl-C). A worker's error
    is raised as utils.runtime.pipeline.PipelineError."""
    if not processors:
        raise ValueError("at least one processor is needed")
    stop = stop or threading.Event()
    stats = RunStats()

    def consume(result: FrameResult) -> bool:
        stats.frames += 1
        stats.frames_with_boxes += result.num_boxes > 0
        return present is None or present(result)

    start = time.perf_counter()
    try:
        if threaded if threaded is not None else len(processors) > 1:
            pipeline = run_ordered(frames, processors, consume, queue_size=queue_size,
                                   keep_latest=frames.source.live, stop=stop)
            stats.dropped = pipeline.dropped
            stats.stopped_by = {"consumer": STOPPED_BY_QUIT, "stop": STOPPED_BY_CTRL_C}.get(pipeline.stopped_by,
                                                                                           STOPPED_AT_END)
        else:
            stats.stopped_by = _run_single(frames, processors[0], consume, stop)
    finally:
        stats.seconds = time.perf_counter() - start
        stats.skipped = frames.skipped
    if stats.stopped_by == STOPPED_AT_END and frames.exhausted_max_frames:
        stats.stopped_by = STOPPED_AT_MAX_FRAMES
    return stats


def _run_single(frames: FrameStream, processor: Callable[[SourceFrame], FrameResult],
                consume: Callable[[FrameResult], bool], stop: threading.Event) -> str:
    for frame in frames:
        if stop.is_set():
            return STOPPED_BY_CTRL_C
        if not consume(processor(frame)):
            return STOPPED_BY_QUIT
    return STOPPED_BY_CTRL_C if stop.is_set() else STOPPED_AT_END
