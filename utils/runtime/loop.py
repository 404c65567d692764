"""The detection loop: frames -> processors (detect, draw, JSON record) -> a presenter, in frame order.

    with open_source("clip.mp4") as source:
        frames = FrameStream(source, width=320, height=240)
        stats = run(frames, [FrameProcessor(detector, min_score=0.2, max_hands=2)], present=outputs_and_window)

The detector sees each frame at --width x --height; what is drawn, shown and written is the source
frame itself (or a same-aspect resize, `output_size`), and the JSON boxes are in source pixels.
With a `tracker` (utils.runtime.tracking.HandTracker) the workers only detect; tracking, drawing and
the JSON record happen in frame order on the calling thread, so IDs do not depend on the threads.
With `FrameStream(detect_every=N)` the detector runs on every Nth frame only; the frames between
never reach a worker (they wait for their detection frame's result and take the tracker's boxes).

One processor runs on the calling thread (detect_single_threaded.py); several (or `threaded=True`) run on
worker threads through utils.runtime.pipeline, results still handed to `present` in frame order and on
the calling thread (detect_multi_threaded.py). bench.py times this same function.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from utils.common.boxes import normalized_to_pixels
from utils.runtime import detector as detector_utils
from utils.runtime.pipeline import POLL_SECONDS, run_ordered
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


def make_processors(model_path: Path, workers: int, min_score: float, max_hands: int,
                    gesture_path: Path | None = None, merge_options: Any = None, side_by_side: bool = False,
                    num_threads: int = 0) -> list["FrameProcessor"]:
    """One FrameProcessor per worker, each with its own copy of the model(s) (the detectors' and
    bench.py's way). With a `gesture_path` each frame goes through both models, side by side (two
    threads per worker) or one after the other; the cores are split between the interpreters that
    run at the same time."""
    side_by_side = side_by_side and gesture_path is not None
    running_at_once = workers * (2 if side_by_side else 1)
    detector = detector_utils.load_inference_graph(model_path,
                                                   threads_per_detector(model_path, running_at_once, num_threads))
    gesture = None if gesture_path is None else detector_utils.load_inference_graph(
        gesture_path, threads_per_detector(gesture_path, running_at_once, num_threads))
    first = FrameProcessor(detector, min_score, max_hands, gesture, merge_options, side_by_side)
    return [first] + [first.clone() for _ in range(workers - 1)]


# --- Per-frame work ------------------------------------------------------------------------------

@dataclass
class FrameResult:
    index: int
    image: np.ndarray        # BGR, boxes drawn
    record: dict             # the JSON line
    num_boxes: int


@dataclass(frozen=True)
class LoopFrame:
    """One frame of a FrameStream: `source.bgr` is the picture to draw on, show and write (the source
    frame, flipped if asked, at `output_size` if given); `detector_bgr` is what the detector sees
    (--width x --height), None on frames it skips; `motion_gray` the same view in grey on every frame,
    for the tracker's optical flow (FrameStream(motion=True)), else None."""

    source: SourceFrame
    detector_bgr: np.ndarray | None
    source_size: tuple[int, int]    # (width, height) of the frame as the source gave it
    detector_size: tuple[int, int]  # (width, height) the detector sees
    position: int                   # 0, 1, 2... in the order the stream delivered frames
    motion_gray: np.ndarray | None = None

    @property
    def index(self) -> int:
        return self.source.index


def frame_record(frame: SourceFrame, kept: detector_utils.Detections, width: int, height: int,
                 class_names: dict[int, str], gestures: list[str | None] | None = None,
                 objects: list | None = None) -> dict:
    """The --json line of one frame: boxes in pixels of a `width` x `height` frame (the source's); with
    the gesture model (`gestures` given) also `gestures` (parallel to boxes) and `objects`."""
    pixels = normalized_to_pixels(kept.boxes, width, height).round().astype(int)
    record = {"index": frame.index,
              "timestamp": None if frame.timestamp is None else round(frame.timestamp, 6),
              "width": width, "height": height,
              "boxes": pixels.tolist(),
              "scores": [round(float(s), SCORE_DECIMALS) for s in kept.scores],
              "classes": [int(c) for c in kept.classes],
              "class_names": [class_names.get(int(c), str(int(c))) for c in kept.classes]}
    track_ids = getattr(kept, "track_ids", None)
    if track_ids is not None:  # tracked hands (utils.runtime.tracking.TrackedHands)
        record["track_ids"] = [int(t) if t > 0 else None for t in track_ids]  # None: not confirmed yet
        record["predicted"] = [bool(p) for p in kept.predicted]
    if gestures is not None:
        from utils.runtime.multi_model import objects_record

        record["gestures"] = list(gestures)
        record["objects"] = objects_record(objects or [], width, height, SCORE_DECIMALS)
    if frame.name is not None:
        record["file"] = frame.name
    return record


@dataclass
class Detected:
    """A worker's detections for a frame, before drawing; None where the detector did not run. With the
    gesture model also its raw detections (`gestures`) and the merge (`merged`: the hand boxes kept,
    each one's gesture, the faces and fingertips)."""

    frame: LoopFrame
    detections: detector_utils.Detections | None
    gestures: detector_utils.Detections | None = None
    merged: Any = None  # utils.runtime.multi_model.MultiDetections


class FrameProcessor:
    """Detect, keep the best boxes, draw them on the frame and make its JSON record.
    One per thread: it owns its detector(s).

    With a `gesture` detector (--models hand,gesture) both models see each frame: one after the other,
    or with `side_by_side` the gesture model on a helper thread of this processor while the hand model
    runs on the caller's; their outputs are merged (utils.runtime.multi_model.merge_detections, with
    `merge_options`). Call close() when done (it ends the helper thread)."""

    def __init__(self, detector: detector_utils.HandDetector, min_score: float, max_hands: int,
                 gesture: detector_utils.HandDetector | None = None, merge_options: Any = None,
                 side_by_side: bool = False):
        self.detector = detector
        self.min_score = min_score
        self.max_hands = max_hands
        self.gesture, self.side_by_side = gesture, side_by_side and gesture is not None
        self.merge_options = merge_options
        self._helper = ThreadPoolExecutor(1, thread_name_prefix="gesture-") if self.side_by_side else None
        self._memory = None  # multi_model.GestureMemory, made on the first tracked frame

    def clone(self) -> "FrameProcessor":
        """Another thread's processor: its own copies of the models, the same settings."""
        return FrameProcessor(self.detector.clone(), self.min_score, self.max_hands,
                              None if self.gesture is None else self.gesture.clone(), self.merge_options,
                              self.side_by_side)

    def close(self) -> None:
        if self._helper is not None:
            self._helper.shutdown(wait=True)

    def detect(self, frame: LoopFrame) -> Detected:
        import cv2

        if frame.detector_bgr is None:
            return Detected(frame, None)
        rgb = cv2.cvtColor(frame.detector_bgr, cv2.COLOR_BGR2RGB)
        if self.gesture is None:
            return Detected(frame, self.detector.detect(rgb, min_score=self.min_score, max_hands=self.max_hands))
        from utils.runtime.multi_model import merge_detections

        pending = self._helper.submit(self.gesture.detect, rgb) if self._helper is not None else None
        hands = self.detector.detect(rgb, min_score=self.min_score, max_hands=self.max_hands)
        gestures = pending.result() if pending is not None else self.gesture.detect(rgb)
        merged = merge_detections(hands, gestures, self.gesture.class_names, self.merge_options)
        # The tracker sees the hand boxes left after --suppress-faces: a face never becomes a track.
        return Detected(frame, merged.hand_detections(), gestures, merged)

    def finish(self, detected: Detected, tracker: Any = None) -> FrameResult:
        """Draw and record `detected`; with a tracker (in frame order!) its tracked hands instead."""
        frame = detected.frame
        kept = detected.detections
        if tracker is not None:
            kept = tracker.update(kept, frame.detector_size, index=frame.position, image=frame.motion_gray)
        elif kept is None:
            kept = detector_utils.Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                             np.zeros(0, np.int32))
        gestures = objects = None
        if self.gesture is not None:
            gestures, objects = self._gestures_for(kept, detected, tracker is not None)
        image = frame.source.bgr
        draw_hands(image, kept, self.detector.class_names, gestures, objects)
        width, height = frame.source_size
        return FrameResult(frame.index, image, frame_record(frame.source, kept, width, height,
                                                            self.detector.class_names, gestures, objects),
                           len(kept.scores))

    def _gestures_for(self, kept, detected: Detected, tracked: bool) -> tuple[list, list]:
        if not tracked:  # the merge's own boxes, gestures and objects
            merged = detected.merged
            return (list(merged.gestures), list(merged.objects)) if merged is not None else ([], [])
        from utils.runtime.multi_model import GestureMemory

        if self._memory is None:
            self._memory = GestureMemory(self.gesture.class_names, self.merge_options)
        return self._memory.update(kept, detected.gestures,
                                   None if detected.merged is None else detected.merged.objects)

    def __call__(self, frame: LoopFrame) -> FrameResult:
        return self.finish(self.detect(frame))


def draw_hands(image: np.ndarray, kept, class_names: dict[int, str], gestures: list[str | None] | None = None,
               objects: list | None = None) -> None:
    """Boxes on the BGR picture in place (so the window and the video show exactly BOX_COLOR_BGR);
    tracked hands get their ID in the label; with the gesture model each hand's gesture under its box,
    and the faces and fingertips in their own colours (drawn first: hands stay on top)."""
    height, width = image.shape[:2]
    if objects:
        from utils.runtime.multi_model import draw_objects

        draw_objects(image, objects)
    if getattr(kept, "track_ids", None) is not None:
        from utils.runtime.tracking import draw_tracked_hands

        draw_tracked_hands(image, kept, class_names)
    else:
        detector_utils.draw_box_on_image(len(kept.scores), -np.inf, kept.scores, kept.boxes, width, height,
                                         image, kept.classes, class_names)
    if gestures:
        from utils.runtime.multi_model import draw_gestures

        draw_gestures(image, kept.boxes, gestures)


def fit_size(width: int, height: int, want_width: int, want_height: int) -> tuple[int, int]:
    """The size utils.runtime.sources.fit_frame gives a width x height frame (0: keep that side's aspect)."""
    if want_width > 0 and want_height <= 0:
        return want_width, max(1, round(height * want_width / width))
    if want_height > 0 and want_width <= 0:
        return max(1, round(width * want_height / height)), want_height
    if want_width > 0:
        return want_width, want_height
    return width, height


def fit_within(width: int, height: int, box: tuple[int, int] | None) -> tuple[int, int]:
    """(width, height) scaled to fit `box` (bw, bh; 0 for a side leaves it free), aspect kept."""
    if box is None:
        return width, height
    bw, bh = box
    scale = min(bw / width if bw > 0 else np.inf, bh / height if bh > 0 else np.inf)
    if not np.isfinite(scale):
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


class FrameStream:
    """The source's frames, flipped if asked, at most `max_frames`; corrupt ones skipped with a warning.

    Each comes with its copy for the detector at `width` x `height` (0 for one side keeps the aspect
    ratio, both 0 the source size) on every `detect_every`th frame, and is itself kept at the source's
    size, or fitted into `output_size` (width, height; aspect kept) for drawing, showing and writing.
    `motion` (default: whenever `detect_every` > 1) adds the detector's view in grey on every frame, from
    which the tracker moves the boxes on the frames the detector skips."""

    def __init__(self, source: FrameSource, width: int = 0, height: int = 0, flip: bool = False,
                 max_frames: int | None = None, warn: Callable[[str], None] = lambda message: None,
                 output_size: tuple[int, int] | None = None, detect_every: int = 1, motion: bool | None = None):
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.source, self.width, self.height, self.flip = source, width, height, flip
        self.max_frames, self.warn = max_frames, warn
        self.output_size, self.detect_every = output_size, detect_every
        self.motion = detect_every > 1 if motion is None else motion
        self.skipped = 0
        self.delivered = 0

    @property
    def exhausted_max_frames(self) -> bool:
        return self.max_frames is not None and self.delivered >= self.max_frames

    def __iter__(self) -> Iterator[LoopFrame]:
        import cv2

        if self.exhausted_max_frames:
            return
        for frame in self.source.frames():
            if frame.bgr is None:
                self.skipped += 1
                where = frame.name or self.source.description
                self.warn(f"{where}: {frame.error}; frame {frame.index} skipped")
                continue
            source_size = (frame.bgr.shape[1], frame.bgr.shape[0])
            detector_size = fit_size(*source_size, self.width, self.height)
            shown = fit_within(*source_size, self.output_size)
            detect = self.delivered % self.detect_every == 0
            small = (fit_frame(frame.bgr, *detector_size, self.flip)
                     if detect or self.motion or shown == detector_size else None)
            # Grey before anything is drawn on `small` (it may be the picture itself).
            gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if self.motion else None
            if shown == detector_size:
                picture = small  # drawn on only after the detector has read it
            elif shown == source_size:
                picture = cv2.flip(frame.bgr, 1) if self.flip else frame.bgr
            else:
                picture = fit_frame(frame.bgr, *shown, self.flip)
            yield LoopFrame(replace(frame, bgr=picture), small if detect else None, source_size, detector_size,
                            self.delivered, gray)
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


def run(frames: FrameStream, processors: Sequence[FrameProcessor], present: Callable[[FrameResult], bool] | None = None,
        *, threaded: bool | None = None, queue_size: int = DEFAULT_QUEUE_SIZE, stop: threading.Event | None = None,
        tracker: Any = None) -> RunStats:
    """Run every frame through a processor and hand the results, in order, to `present` (which
    returns False to quit). Threaded (default: with more than one processor) means one worker thread
    per processor and a reader thread; a live source then keeps only its newest frame. Stops at the
    end of the frames, on `present` returning False, or when `stop` is set (Ctrl-C). A worker's error
    is raised as utils.runtime.pipeline.PipelineError.

    With a `tracker` (utils.runtime.tracking.HandTracker), or when `frames` skips the detector on
    some frames, the workers only detect and the rest happens here, in frame order."""
    if not processors:
        raise ValueError("at least one processor is needed")
    stop = stop or threading.Event()
    stats = RunStats()
    in_order = tracker is not None or frames.detect_every > 1

    def consume(result: FrameResult) -> bool:
        stats.frames += 1
        stats.frames_with_boxes += result.num_boxes > 0
        return present is None or present(result)

    def consume_detected(detected: Detected) -> bool:
        return consume(processors[0].finish(detected, tracker))

    start = time.perf_counter()
    try:
        if threaded if threaded is not None else len(processors) > 1:
            if not in_order:
                items, workers, on_result = frames, processors, consume
            elif frames.detect_every == 1:
                items, workers, on_result = frames, [p.detect for p in processors], consume_detected
            else:
                items = _groups(frames)
                workers = [lambda group, p=p: (group, p.detect(group.first)) for p in processors]

                def on_result(done: tuple[_Group, Detected]) -> bool:
                    group, detected = done
                    if not consume_detected(detected):
                        return False
                    while not group.complete.wait(POLL_SECONDS):  # the reader is still reading them
                        if stop.is_set():
                            return True
                    return all(consume_detected(Detected(f, None)) for f in group.followers)
            pipeline = run_ordered(items, workers, on_result, queue_size=queue_size,
                                   keep_latest=frames.source.live, stop=stop)
            stats.dropped = pipeline.dropped
            stats.stopped_by = {"consumer": STOPPED_BY_QUIT, "stop": STOPPED_BY_CTRL_C}.get(pipeline.stopped_by,
                                                                                           STOPPED_AT_END)
        else:
            processor = processors[0]
            one = (lambda f: processor.finish(processor.detect(f), tracker)) if in_order else processor
            stats.stopped_by = _run_single(frames, one, consume, stop)
    finally:
        stats.seconds = time.perf_counter() - start
        stats.skipped = frames.skipped
    if stats.stopped_by == STOPPED_AT_END and frames.exhausted_max_frames:
        stats.stopped_by = STOPPED_AT_MAX_FRAMES
    return stats


class _Group:
    """A frame the detector runs on and the frames after it that it skips (read later by the reader;
    `complete` once the next detection frame or the end is reached)."""

    def __init__(self, first: LoopFrame):
        self.first = first
        self.followers: list[LoopFrame] = []
        self.complete = threading.Event()


def _groups(frames: FrameStream) -> Iterator[_Group]:
    """Frames grouped behind their detection frame; only the detection frame goes to a worker."""
    group = None
    try:
        for frame in frames:
            if frame.detector_bgr is not None or group is None:
                if group is not None:
                    group.complete.set()
                group = _Group(frame)
                yield group
            else:
                group.followers.append(frame)
    finally:
        if group is not None:
            group.complete.set()


def _run_single(frames: FrameStream, processor: Callable[[LoopFrame], FrameResult],
                consume: Callable[[FrameResult], bool], stop: threading.Event) -> str:
    for frame in frames:
        if stop.is_set():
            return STOPPED_BY_CTRL_C
        if not consume(processor(frame)):
            return STOPPED_BY_QUIT
    return STOPPED_BY_CTRL_C if stop.is_set() else STOPPED_AT_END
