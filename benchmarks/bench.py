"""Benchmark (`make bench`): the original project's detection loop against ours, on a real video.

    python benchmarks/bench.py --source ../shared/videos/hand_desk.mp4

All rows run the whole video through the same steps, headless (no window, no files written), at
--width x --height (320x240 by default), each detector warmed up with one frame first:

- "original way": a faithful copy of the original detect_single_threaded.py loop: the frozen graph
  through tf.compat.v1.Session.run (tensors looked up by name each frame, as its detect_objects did),
  cv2.VideoCapture -> resize -> BGR2RGB -> detect -> draw -> FPS print (sent to /dev/null);
- our single-threaded loop (detect_single_threaded.py's code) with every backend;
- our multi-threaded pipeline (detect_multi_threaded.py's code) with 1 and 2 workers, default model.

Each row is the best of --repeats passes (passes are interleaved, so a busy moment hits all rows
alike). Further sections: --track / --detect-every N, and one model vs two (`--models hand,gesture`:
the gesture model one after the other or side by side with the hand model, single- and multi-threaded);
--sections picks some. Also measured: LiteRT (ai_edge_litert) vs tf.lite.Interpreter, invoke only, and where the
time of one single-threaded frame goes. Writes results/bench.md and results/bench.png.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder: the repo's utils/

from utils.common import config
from utils.common.errors import UserError, report
from utils.common.fileio import atomic_path, atomic_write_text
from utils.common.signals import interruptible
from utils.runtime import detector as detector_utils
from utils.runtime.loop import (
    FrameProcessor,
    FrameStream,
    cpu_count,
    frame_record,
    make_processors,
    run,
    threads_per_detector,
)
from utils.runtime.multi_model import gesture_model_path
from utils.runtime.sources import SourceFrame, open_source

DEFAULT_REPEATS = 3
INTERPRETER_FRAMES = 100            # frames per interpreter timing
TARGET_SINGLE = 3.0                 # the targets, shown (not asserted)
TARGET_MULTI = 5.0
BUSY_LOAD = 0.10                    # other processes' share of the cores above which a row is flagged
BACKEND_MODELS = (("frozen graph", config.FROZEN_GRAPH_NAME), ("SavedModel", config.SAVED_MODEL_NAME),
                  ("TFLite fp32", config.TFLITE_FP32_NAME), ("TFLite int8", config.TFLITE_INT8_NAME))


@dataclass
class Row:
    name: str
    model: str
    threads: str
    frames: int = 0
    seconds: float = float("inf")
    other_load: float | None = None  # share of the machine's CPU used by other processes in the best pass

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# --- The original's way ----------------------------------------------------------------------------

class OriginalWay:
    """victordibia/handtracking's detect_single_threaded.py loop, TF2-compatible spelling only."""

    def __init__(self, frozen_path: Path):
        import tensorflow as tf

        # utils/detector_utils.py load_inference_graph() of the original
        self.detection_graph = tf.Graph()
        with self.detection_graph.as_default():
            od_graph_def = tf.compat.v1.GraphDef()
            with tf.io.gfile.GFile(str(frozen_path), "rb") as fid:
                od_graph_def.ParseFromString(fid.read())
                tf.import_graph_def(od_graph_def, name="")
            self.sess = tf.compat.v1.Session(graph=self.detection_graph)

    def detect_objects(self, image_np: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The original detect_objects(): tensors by name, Session.run, np.squeeze."""
        graph = self.detection_graph
        image_tensor = graph.get_tensor_by_name("image_tensor:0")
        detection_boxes = graph.get_tensor_by_name("detection_boxes:0")
        detection_scores = graph.get_tensor_by_name("detection_scores:0")
        detection_classes = graph.get_tensor_by_name("detection_classes:0")
        num_detections = graph.get_tensor_by_name("num_detections:0")
        image_np_expanded = np.expand_dims(image_np, axis=0)
        (boxes, scores, classes, num) = self.sess.run(
            [detection_boxes, detection_scores, detection_classes, num_detections],
            feed_dict={image_tensor: image_np_expanded})
        return np.squeeze(boxes), np.squeeze(scores)

    @staticmethod
    def draw_box_on_image(num_hands_detect, score_thresh, scores, boxes, im_width, im_height, image_np):
        import cv2

        for i in range(num_hands_detect):
            if scores[i] > score_thresh:
                (left, right, top, bottom) = (boxes[i][1] * im_width, boxes[i][3] * im_width,
                                              boxes[i][0] * im_height, boxes[i][2] * im_height)
                p1 = (int(left), int(top))
                p2 = (int(right), int(bottom))
                cv2.rectangle(image_np, p1, p2, (77, 255, 9), 3, 1)

    def run(self, source: str, width: int, height: int, max_frames: int | None) -> tuple[int, float]:
        """The main loop with --display 0; returns (frames, seconds)."""
        import cv2

        cap = cv2.VideoCapture(source)
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)   # a camera obeys; for a file the loop resizes below
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        im_width, im_height = width, height
        num_hands_detect = config.DEFAULT_NUM_HANDS
        score_thresh = config.DEFAULT_SCORE_THRESHOLD
        out = io.StringIO()  # the original printed one line per frame: kept, but not on our terminal
        start_time = datetime.datetime.now()
        num_frames = 0
        while max_frames is None or num_frames < max_frames:
            ret, image_np = cap.read()
            if not ret:  # the original had no end-of-video check (it crashed); stop cleanly instead
                break
            image_np = cv2.resize(image_np, (width, height))
            image_np = cv2.cvtColor(image_np, cv2.COLOR_BGR2RGB)
            boxes, scores = self.detect_objects(image_np)
            self.draw_box_on_image(num_hands_detect, score_thresh, scores, boxes, im_width, im_height,
                                   image_np)
            num_frames += 1
            elapsed_time = (datetime.datetime.now() - start_time).total_seconds()
            fps = num_frames / elapsed_time
            print("frames processed: ", num_frames, "elapsed time: ", elapsed_time, "fps: ", str(int(fps)),
                  file=out)
            out.seek(0)
            out.truncate()
        cap.release()
        return num_frames, (datetime.datetime.now() - start_time).total_seconds()


# --- Ours ------------------------------------------------------------------------------------------

def first_frame(source: str, width: int, height: int) -> np.ndarray:
    import cv2

    with open_source(source) as opened:
        frame = next(opened.frames()).bgr
    return cv2.cvtColor(cv2.resize(frame, (width, height)), cv2.COLOR_BGR2RGB)


def run_ours(source: str, processors: list[FrameProcessor], width: int, height: int,
             max_frames: int | None, multi: bool) -> tuple[int, float]:
    """detect_*_threaded.py's loop (utils.runtime.loop.run) without window or files; (frames, seconds)."""
    with open_source(source, width, height) as opened:
        stats = run(FrameStream(opened, width, height, max_frames=max_frames), processors, threaded=multi)
    return stats.frames, stats.seconds


# --- Interpreters and profile --------------------------------------------------------------------

def interpreter_ms(make: Callable[[], object], inputs: list[np.ndarray]) -> float:
    """Mean ms of one signature-runner call (invoke only, inputs already preprocessed)."""
    from utils.runtime.contract import TFLITE_INPUT_NAME

    runner = make().get_signature_runner("serving_default")
    runner(**{TFLITE_INPUT_NAME: inputs[0]})
    start = time.perf_counter()
    for x in inputs:
        runner(**{TFLITE_INPUT_NAME: x})
    return (time.perf_counter() - start) / len(inputs) * 1e3


def compare_interpreters(model_dir: Path, rgb_frames: list[np.ndarray]
                         ) -> list[tuple[str, int, float, float]]:
    """(model, threads, LiteRT ms, tf.lite ms) for each TFLite model."""
    from ai_edge_litert.interpreter import Interpreter as LiteRT

    from utils.runtime.contract import preprocess_for_tflite

    with contextlib.redirect_stderr(io.StringIO()):
        import tensorflow as tf
    warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")  # measured on purpose
    inputs = [preprocess_for_tflite(f) for f in rgb_frames]
    rows = []
    for name in (config.TFLITE_FP32_NAME, config.TFLITE_INT8_NAME):
        path = str(model_dir / name)
        for threads in sorted({1, cpu_count()}):
            litert = interpreter_ms(lambda p=path, t=threads: LiteRT(model_path=p, num_threads=t), inputs)
            tflite = interpreter_ms(
                lambda p=path, t=threads: tf.lite.Interpreter(model_path=p, num_threads=t), inputs)
            rows.append((name, threads, litert, tflite))
    return rows


def profile_single(source: str, detector: detector_utils.TFLiteDetector, width: int, height: int,
                   max_frames: int | None) -> list[tuple[str, float]]:
    """ms per frame of each step of our single-threaded loop (TFLite model)."""
    import cv2

    from utils.runtime.contract import preprocess_for_tflite

    steps = ["read + decode", "resize", "BGR->RGB", "preprocess (legacy resize, scale)", "interpreter",
             "select + draw + JSON record"]
    spent = dict.fromkeys(steps, 0.0)
    capture = cv2.VideoCapture(source)
    count = 0
    clock = time.perf_counter
    while max_frames is None or count < max_frames:
        t0 = clock()
        ok, bgr = capture.read()
        if not ok:
            break
        t1 = clock()
        bgr = cv2.resize(bgr, (width, height))
        t2 = clock()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        t3 = clock()
        x = preprocess_for_tflite(rgb)
        t4 = clock()
        out = detector.runner(**{detector._input_name: x})
        t5 = clock()
        dets = detector_utils.Detections(np.clip(out["detection_boxes"][0], 0, 1), out["detection_scores"][0],
                                         out["detection_classes"][0].astype(np.int32) + 1)
        kept = detector_utils.select_detections(dets, config.DEFAULT_SCORE_THRESHOLD, config.DEFAULT_NUM_HANDS)
        detector_utils.draw_box_on_image(len(kept.scores), -np.inf, kept.scores, kept.boxes, width, height,
                                         bgr, kept.classes, detector.class_names)
        frame_record(SourceFrame(count, 0.0, bgr), kept, width, height, detector.class_names)
        t6 = clock()
        for step, seconds in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True):
            spent[step] += seconds
        count += 1
    capture.release()
    return [(step, spent[step] / max(count, 1) * 1e3) for step in steps]


# --- Other processes -----------------------------------------------------------------------------

def cpu_snapshot() -> tuple[float, float, float] | None:
    """(wall, machine busy CPU seconds, this process's CPU seconds); None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as fh:
            fields = [float(v) for v in fh.readline().split()[1:]]
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    mine = os.times()
    return time.monotonic(), (sum(fields[:8]) - idle) / ticks, mine.user + mine.system


def other_load(before, after) -> float | None:
    """Share of all cores that other processes used between two snapshots (the bench shares the box)."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    foreign = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, foreign / ((after[0] - before[0]) * cpu_count()))


def _percent(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.0%}" + (" (busy)" if value > BUSY_LOAD else "")


# --- Report ----------------------------------------------------------------------------------------

def markdown(rows: list[Row], baseline: Row, interpreters, profile, args, frames: int, load: str,
             interpreter_frames: int) -> str:
    lines = [f"# Benchmark: hand detection on {Path(args.source).name}", "",
             f"{frames} frames at {args.width}x{args.height}, headless, best of {args.repeats}; "
             f"{cpu_count()} CPU cores; load average {load}; {datetime.date.today().isoformat()}. "
             f"'other load' is the share of all cores other processes used during a row's best pass: "
             f"a row with a high one was slowed by them.", "",
             f"Targets (shown, not asserted): single-threaded >= {TARGET_SINGLE:g}x the original's way, "
             f"multi-threaded >= {TARGET_MULTI:g}x.", "",
             "| Run | Model | Threads | Frames | Seconds | FPS | x original | other load |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        ratio = row.fps / baseline.fps if baseline.fps else float("nan")
        lines.append(f"| {row.name} | {row.model} | {row.threads} | {row.frames} | {row.seconds:.2f} | "
                     f"{row.fps:.1f} | {ratio:.2f} | {_percent(row.other_load)} |")
    busy = [row.name for row in rows if row.other_load is not None and row.other_load > BUSY_LOAD]
    if busy:
        lines += ["", f"**Other processes used more than {BUSY_LOAD:.0%} of the CPU during every pass of: "
                      f"{'; '.join(busy)}.** Those FPS are too low (and the ratios against a busy baseline "
                      f"too high): rerun `make bench` on an idle machine."]
    lines += ["", "## TFLite interpreters: LiteRT (ai_edge_litert) vs tf.lite.Interpreter", "",
              f"Invoke only (preprocessed input), mean over {interpreter_frames} frames.", "",
              "| Model | Threads | LiteRT ms/frame | tf.lite ms/frame | tf.lite / LiteRT |",
              "|---|---:|---:|---:|---:|"]
    for name, threads, litert, tflite in interpreters:
        lines.append(f"| {name} | {threads} | {litert:.2f} | {tflite:.2f} | {tflite / litert:.2f} |")
    total = sum(ms for _, ms in profile)
    lines += ["", "## Where one single-threaded frame's time goes (default model)", "",
              "| Step | ms/frame | share |", "|---|---:|---:|"]
    lines += [f"| {step} | {ms:.2f} | {ms / total:.0%} |" for step, ms in profile]
    lines += [f"| total | {total:.2f} | 100% |", ""]
    return "\n".join(lines)


def chart(rows: list[Row], baseline: Row, path: Path, size: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.name}\n{r.model}" for r in rows]
    fps = [r.fps for r in rows]
    colors = ["#999999" if r is baseline else ("#1f77b4" if "multi" in r.name else "#2ca02c") for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.5))
    bars = ax.barh(range(len(rows)), fps, color=colors)
    for i, (bar, row) in enumerate(zip(bars, rows, strict=True)):
        busy = row.other_load is not None and row.other_load > BUSY_LOAD
        if busy:
            bar.set_hatch("//")  # slowed by other processes: see bench.md
        ax.text(row.fps, i, f" {row.fps:.0f} FPS ({row.fps / baseline.fps:.1f}x){' busy' if busy else ''}",
                va="center", fontsize=8)
    for factor, style in ((TARGET_SINGLE, "--"), (TARGET_MULTI, ":")):
        ax.axvline(baseline.fps * factor, color="black", linestyle=style, linewidth=1,
                   label=f"{factor:g}x original")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("frames per second (higher is better)")
    ax.set_title(f"Hand detection loop, {size} real video")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, max(max(fps), baseline.fps * TARGET_MULTI) * 1.25)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


# --- Tracking: --track and --detect-every N ---------------------------------------------------------

TRACK_EVERY = (1, 2, 3, 5)          # the N
TRACK_GOAL_SPEEDUP, TRACK_GOAL_RECALL, TRACK_GOAL_EVERY = 2.0, 0.95, 3  # shown, not asserted


@dataclass
class TrackRow:
    name: str
    every: int
    smooth: bool
    tracked: bool = True
    frames: int = 0
    seconds: float = float("inf")
    boxes: list = field(default_factory=list)  # per frame: [N,4] source pixels
    ids: list = field(default_factory=list)    # per frame: track IDs (-1: not confirmed yet)
    scores: list = field(default_factory=list)  # per frame: the boxes' scores

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run_tracked(source: str, processor: FrameProcessor, width: int, height: int, max_frames: int | None,
                every: int, smooth: bool, tracked: bool) -> tuple[int, float, list, list, list]:
    """detect_single_threaded.py's loop with --track / --detect-every, headless; (frames, seconds,
    boxes, ids, scores) with the boxes, IDs and scores of every frame as its JSON line gives them."""
    from utils.runtime.tracking import HandTracker

    records = []

    def keep(result) -> bool:
        records.append(result.record)
        return True

    with open_source(source, width, height) as opened:
        tracker = HandTracker(opened.fps, smooth=smooth, score_thresh=processor.min_score) if tracked else None
        stats = run(FrameStream(opened, width, height, max_frames=max_frames, detect_every=every), [processor],
                    keep, threaded=False, tracker=tracker)
    boxes = [np.asarray(r["boxes"], float).reshape(-1, 4) for r in records]
    ids = [[-1 if t is None else t for t in r.get("track_ids", [])] for r in records]
    return stats.frames, stats.seconds, boxes, ids, [r["scores"] for r in records]


def tracking_bench(source: str, model_path: Path, width: int, height: int, max_frames: int | None,
                   repeats: int) -> tuple[list[TrackRow], dict]:
    """FPS of the single-threaded loop per-frame (no tracking) and with --track at N = 1, 2, 3, 5
    (smoothed, and N = 1 unsmoothed), best of `repeats`; plus each row's figures against per-frame
    detection (see utils.evaluation.tracking)."""
    from utils.evaluation import tracking as metrics

    processor = FrameProcessor(detector_utils.load_inference_graph(model_path, threads_per_detector(model_path, 1)),
                               config.DEFAULT_SCORE_THRESHOLD, config.DEFAULT_NUM_HANDS)
    rows = [TrackRow("per-frame detection (no tracking)", 1, False, tracked=False)]
    rows += [TrackRow(f"--track --detect-every {n}", n, True) for n in TRACK_EVERY]
    rows.append(TrackRow("--track --no-smooth", 1, False))
    for _ in range(repeats):
        for row in rows:
            frames, seconds, row.boxes, row.ids, row.scores = run_tracked(source, processor, width, height,
                                                                          max_frames, row.every, row.smooth,
                                                                          row.tracked)
            if seconds < row.seconds:
                row.frames, row.seconds = frames, seconds
            print(f"  tracking: {row.name:<36} {frames / seconds:7.1f} FPS", flush=True)
    reference = rows[0].boxes
    sure = metrics.sure_boxes(reference, rows[0].scores)
    with open_source(source) as opened:
        gap = round(opened.fps * 1.0)  # the tracker keeps an ID through 1 s
    still = metrics.stillest_run(reference, gap)
    figures = {}
    for row in rows:
        run_boxes = row.boxes[still:still + gap] if still is not None else []
        jitter = (metrics.box_jitter(np.concatenate(run_boxes)) if run_boxes and all(len(b) == 1 for b in run_boxes)
                  else float("nan"))
        figures[row.name] = {"recall": metrics.recall(row.boxes, reference),
                             "recall_sure": metrics.recall(row.boxes, sure),
                             "precision": metrics.precision(row.boxes, reference),
                             "switches": metrics.id_switches(row.boxes, row.ids) if row.tracked else None,
                             "fragmented": metrics.fragmented_tracks(row.ids, gap) if row.tracked else None,
                             "tracks": metrics.track_count(row.ids) if row.tracked else None,
                             "jitter": jitter}
    figures["_still"] = still
    return rows, figures


def _dash(value) -> str:
    return "-" if value is None else str(value)


def tracking_markdown(rows: list[TrackRow], figures: dict, fps: float) -> str:
    from utils.evaluation import tracking as metrics

    n1 = next(r for r in rows if r.tracked and r.every == 1 and r.smooth)
    goal = next(r for r in rows if r.tracked and r.every == TRACK_GOAL_EVERY and r.smooth)
    still = figures["_still"]
    where = (f"frames {still}-{still + round(fps) - 1}" if still is not None else "none found")
    lines = ["## Tracking: `--track`, `--detect-every N` (single-threaded, default model)", "",
             "Reference: per-frame detection (the first row). Recall / precision: reference boxes found by a "
             "shown box / shown boxes on a reference box, IoU >= 0.5. ID switches: a box continuing the "
             "previous frame's (IoU >= 0.5) under another ID. Fragmented: a new ID starting within 1 s of "
             "another ID's last box (on this one-hand video, the same hand re-identified). Jitter: RMS px (at "
             f"the source's size) of the box corners about their 9-frame moving average on the stillest second "
             f"with one box per frame ({where}). Recall (sure): against the reference boxes scoring >= "
             f"{metrics.SURE_SCORE:g} only, leaving out the detector's passing doubts (a second box on the hand, "
             "a small false one) that a tracker does not carry between detector runs.", "",
             "| Run | FPS | x no tracking | Recall | Recall (sure) | Precision | ID switches | Fragmented | IDs | "
             "Jitter px |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = rows[0].fps
    for row in rows:
        f = figures[row.name]
        lines.append(f"| {row.name} | {row.fps:.1f} | {row.fps / base:.2f} | {f['recall']:.3f} | "
                     f"{f['recall_sure']:.3f} | {f['precision']:.3f} | {_dash(f['switches'])} | "
                     f"{_dash(f['fragmented'])} | {_dash(f['tracks'])} | {f['jitter']:.2f} |")
    speedup = goal.fps / n1.fps if n1.fps else float("nan")
    lines += ["", f"Goal (shown, not asserted): N = {TRACK_GOAL_EVERY} at >= {TRACK_GOAL_SPEEDUP:g}x the FPS "
                  f"of N = 1 with recall >= {TRACK_GOAL_RECALL}: {speedup:.2f}x, recall "
                  f"{figures[goal.name]['recall']:.3f} ({figures[goal.name]['recall_sure']:.3f} of the sure "
                  f"boxes); {_dash(figures[goal.name]['tracks'])} ID(s) for N = {TRACK_GOAL_EVERY}, "
                  f"{_dash(figures[n1.name]['tracks'])} for N = 1.", ""]
    return "\n".join(lines)


# --- Two models: hand + gesture ---------------------------------------------------------------------

SECTIONS = ("loops", "tracking", "models", "versus")
MODEL_WORKERS = 2  # the multi-threaded rows of the two-model section


@dataclass
class ModelsRow:
    name: str
    multi: bool
    gesture: bool
    side_by_side: bool = False
    processors: list = field(default_factory=list)
    frames: int = 0
    seconds: float = float("inf")
    other_load: float | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def models_bench(source: str, model_path: Path, gesture_path: Path, width: int, height: int,
                 max_frames: int | None, repeats: int, rgb0: np.ndarray) -> list[ModelsRow]:
    """FPS of detect_*_threaded.py's loop with the hand model alone and with --models hand,gesture: the
    two models one after the other or side by side (two threads per frame), single-threaded and with
    MODEL_WORKERS workers; default models, threads split as the detectors split them, best of `repeats`."""
    workers = f"{MODEL_WORKERS} workers"
    rows = [ModelsRow("single-threaded, hand only", False, False),
            ModelsRow("single-threaded, hand + gesture, one after the other", False, True),
            ModelsRow("single-threaded loop, hand + gesture side by side (2 threads)", False, True, True),
            ModelsRow(f"multi-threaded, {workers}, hand only", True, False),
            ModelsRow(f"multi-threaded, {workers}, hand + gesture one after the other in each (default)", True, True),
            ModelsRow(f"multi-threaded, {workers}, hand + gesture side by side in each (--side-by-side)", True, True,
                      True)]
    for row in rows:
        row.processors = make_processors(model_path, MODEL_WORKERS if row.multi else 1, config.DEFAULT_SCORE_THRESHOLD,
                                         config.DEFAULT_NUM_HANDS, gesture_path if row.gesture else None,
                                         side_by_side=row.side_by_side)
        for processor in row.processors:  # warm-up, as every row
            processor.detector.detect(rgb0)
            if processor.gesture is not None:
                processor.gesture.detect(rgb0)
    try:
        for repeat in range(repeats):
            for row in rows:
                before = cpu_snapshot()
                frames, seconds = run_ours(source, row.processors, width, height, max_frames, multi=row.multi)
                other = other_load(before, cpu_snapshot())
                if seconds < row.seconds:
                    row.frames, row.seconds, row.other_load = frames, seconds, other
                print(f"  models pass {repeat + 1}/{repeats}: {row.name:<72} {frames / seconds:7.1f} FPS  "
                      f"(other load {_percent(other)})", flush=True)
    finally:
        for row in rows:
            for processor in row.processors:
                processor.close()
    return rows


def models_markdown(rows: list[ModelsRow], hand_name: str, gesture_name: str) -> str:
    lines = [f"## Two models: hand + gesture (`--models hand,gesture`), {hand_name} + {gesture_name}", "",
             "The gesture/face model runs on every frame beside the hand model and their boxes are merged; "
             "'side by side' runs the gesture model on a second thread of the same worker while the hand "
             "model runs; 'one after the other in each': workers each own both models, so with 2 workers "
             "two frames' models run at once. x hand only: against the same loop with the hand model alone.", "",
             "| Run | Frames | FPS | x hand only | other load |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        alone = next(r for r in rows if r.multi == row.multi and not r.gesture)
        lines.append(f"| {row.name} | {row.frames} | {row.fps:.1f} | {row.fps / alone.fps:.2f} | "
                     f"{_percent(row.other_load)} |")
    return "\n".join(lines + [""])


# --- The default model against the pretrained one ----------------------------------------------

def versus_bench(source: str, default_model: Path, pretrained_dir: Path, width: int, height: int,
                 max_frames: int | None, repeats: int) -> list[tuple[str, str, float]]:
    """Single-threaded loop FPS of the default model and of the pretrained (handtrack.js) one, each's
    fastest file, passes interleaved so that a busy moment hits both alike; (name, file, best FPS)."""
    pretrained = detector_utils.default_model_path(pretrained_dir)
    models = [("default (MODEL_DIR)", default_model), ("pretrained handtrack.js", pretrained)]
    processors = []
    for _, path in models:
        processor = FrameProcessor(detector_utils.load_inference_graph(path, threads_per_detector(path, 1)),
                                   config.DEFAULT_SCORE_THRESHOLD, config.DEFAULT_NUM_HANDS)
        processor.detector.detect(first_frame(source, width, height))
        processors.append(processor)
    best = [0.0] * len(models)
    for _ in range(repeats):
        for i, processor in enumerate(processors):
            frames, seconds = run_ours(source, [processor], width, height, max_frames, multi=False)
            best[i] = max(best[i], frames / seconds)
            print(f"  versus: {models[i][0]:<26} {frames / seconds:7.1f} FPS", flush=True)
    return [(name, f"{path.parent.name}/{path.name}", fps) for (name, path), fps in zip(models, best, strict=True)]


def versus_markdown(rows: list[tuple[str, str, float]], repeats: int) -> str:
    base = rows[-1][2]
    lines = ["## The default model against the pretrained one (single-threaded, int8 when built)", "",
             f"Best of {repeats} interleaved passes each.", "",
             "| Model | File | FPS | x pretrained |", "|---|---|---:|---:|"]
    lines += [f"| {name} | `{file}` | {fps:.1f} | {fps / base:.2f} |" for name, file, fps in rows]
    return "\n".join(lines + [""])


# --- Main ----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(config.SHARED_HAND_VIDEO), help="video file to run on")
    parser.add_argument("--model-dir", type=Path, default=config.MODEL_DIR,
                        help="hand_inference_graph/ with every format (made by `make model`)")
    parser.add_argument("--gesture-dir", type=Path, default=config.GESTURE_MODEL_DIR,
                        help="gesture_inference_graph/ (made by `make model`) for the two-model rows")
    parser.add_argument("--pretrained-dir", type=Path, default=None,
                        help="the pretrained model's folder (`make model MODEL=handtrackjs MODEL_DIR=...`) for the "
                             "versus section: the default model's FPS against it (section skipped without it)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"which sections to run, comma-separated, of {', '.join(SECTIONS)}: the loops "
                             "(original way, backends, workers, interpreters, profile, chart), --track, "
                             "one vs two models, and the default model vs the pretrained one (versus)")
    parser.add_argument("--width", type=int, default=config.DEFAULT_WIDTH, help="frame width, every row")
    parser.add_argument("--height", type=int, default=config.DEFAULT_HEIGHT, help="frame height, every row")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help="passes per row; the best counts")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per pass (default: all)")
    parser.add_argument("--output-dir", type=Path, default=config.RESULTS_DIR,
                        help="where bench.md and bench.png go")
    return parser


@interruptible(Path(__file__).name)
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.repeats, args.width, args.height, args.max_frames or 1) < 1:
        parser.error("--repeats, --width, --height and --max-frames must be >= 1")
    prog = parser.prog
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    if args.pretrained_dir is None and args.sections == parser.get_default("sections"):
        sections.remove("versus")  # the default sections need no second model
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown or not sections:
        return report(prog, UserError(f"--sections {args.sections!r}: unknown section "
                                      f"{(unknown or [''])[0]!r}; choose from {', '.join(SECTIONS)}"))
    missing = [name for _, name in BACKEND_MODELS if not (args.model_dir / name).exists()]
    if missing:
        return report(prog, UserError(f"{args.model_dir}: missing {', '.join(missing)}; run `make model` first"))
    try:
        gesture_path = gesture_model_path(args.gesture_dir) if "models" in sections else None
        rgb0 = first_frame(args.source, args.width, args.height)
    except UserError as exc:  # SourceError, no gesture model
        return report(prog, exc)

    default_model = detector_utils.default_model_path(args.model_dir)
    text = "" if "loops" in sections else (  # the loops section has its own heading
        f"# Benchmark: {Path(args.source).name} at {args.width}x{args.height}, best of {args.repeats}; "
        f"{cpu_count()} CPU cores; {datetime.date.today().isoformat()}\n")
    written = []
    if "loops" in sections:
        text += loops_section(args, default_model, rgb0)
        written.append(args.output_dir / "bench.png")
    if "tracking" in sections:
        print("tracking...", flush=True)
        with open_source(args.source) as opened:
            source_fps = opened.fps
        track_rows, track_figures = tracking_bench(args.source, default_model, args.width, args.height,
                                                   args.max_frames, args.repeats)
        text += "\n" + tracking_markdown(track_rows, track_figures, source_fps)
    if "models" in sections:
        print("one model vs two...", flush=True)
        model_rows = models_bench(args.source, default_model, gesture_path, args.width, args.height, args.max_frames,
                                  args.repeats, rgb0)
        text += "\n" + models_markdown(model_rows, default_model.name, gesture_path.name)
    if "versus" in sections:
        if args.pretrained_dir is None:
            return report(prog, UserError("--sections versus needs --pretrained-dir (a `make model MODEL=handtrackjs` "
                                          "folder)"))
        print("default vs pretrained...", flush=True)
        text += "\n" + versus_markdown(versus_bench(args.source, default_model, args.pretrained_dir, args.width,
                                                    args.height, args.max_frames, args.repeats), args.repeats)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output_dir / "bench.md", text)
    print()
    print(text)
    print(f"wrote {', '.join(str(p) for p in [args.output_dir / 'bench.md', *written])}")
    return 0


def loops_section(args: argparse.Namespace, default_model: Path, rgb0: np.ndarray) -> str:
    """The original way vs our loops (every backend, 1 and 2 workers), the interpreters, the profile;
    writes the chart. Returns its markdown."""
    cores = cpu_count()
    print(f"loading models ({cores} cores)...", flush=True)
    original = OriginalWay(args.model_dir / config.FROZEN_GRAPH_NAME)
    original.detect_objects(rgb0)  # warm-up (graph optimisation on the first run), as for every row
    runs: list[tuple[Row, Callable[[], tuple[int, float]]]] = [
        (Row("original way (Session.run loop)", config.FROZEN_GRAPH_NAME, "TF default"),
         lambda: original.run(args.source, args.width, args.height, args.max_frames))]
    for label, name in BACKEND_MODELS:
        path = args.model_dir / name
        threads = threads_per_detector(path, 1)
        processor = FrameProcessor(detector_utils.load_inference_graph(path, threads),
                                   config.DEFAULT_SCORE_THRESHOLD, config.DEFAULT_NUM_HANDS)
        processor.detector.detect(rgb0)
        runs.append((Row(f"ours, single-threaded, {label}", name, str(threads)),
                     lambda p=processor: run_ours(args.source, [p], args.width, args.height, args.max_frames,
                                                  multi=False)))
    for workers in (1, 2):
        threads = threads_per_detector(default_model, workers)
        first = detector_utils.load_inference_graph(default_model, threads)
        processors = [FrameProcessor(first if i == 0 else first.clone(), config.DEFAULT_SCORE_THRESHOLD,
                                     config.DEFAULT_NUM_HANDS) for i in range(workers)]
        for p in processors:
            p.detector.detect(rgb0)
        runs.append((Row(f"ours, multi-threaded, {workers} worker{'s' * (workers > 1)}", default_model.name,
                         f"{workers}x{threads}"),
                     lambda ps=processors: run_ours(args.source, ps, args.width, args.height, args.max_frames,
                                                    multi=True)))

    load_before = os.getloadavg()[0]
    for repeat in range(args.repeats):
        for row, measure in runs:
            before = cpu_snapshot()
            frames, seconds = measure()
            other = other_load(before, cpu_snapshot())
            if seconds < row.seconds:
                row.frames, row.seconds, row.other_load = frames, seconds, other
            print(f"  pass {repeat + 1}/{args.repeats}: {row.name:<42} {frames / seconds:7.1f} FPS  "
                  f"(other load {_percent(other)})", flush=True)

    rows = [row for row, _ in runs]
    baseline = rows[0]
    print("comparing TFLite interpreters...", flush=True)
    frames = []
    with open_source(args.source) as opened:
        import cv2

        for frame in opened.frames():
            frames.append(cv2.cvtColor(cv2.resize(frame.bgr, (args.width, args.height)), cv2.COLOR_BGR2RGB))
            if len(frames) >= min(INTERPRETER_FRAMES, args.max_frames or INTERPRETER_FRAMES):
                break
    interpreters = compare_interpreters(args.model_dir, frames)
    profiled = detector_utils.load_inference_graph(default_model, threads_per_detector(default_model, 1))
    profile = profile_single(args.source, profiled, args.width, args.height, args.max_frames)

    load = " -> ".join(f"{value:.1f}" for value in (load_before, os.getloadavg()[0]))
    text = markdown(rows, baseline, interpreters, profile, args, baseline.frames, load, len(frames))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    chart(rows, baseline, args.output_dir / "bench.png", f"{args.width}x{args.height}")
    return text


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
