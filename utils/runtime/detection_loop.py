"""What detect_single_threaded.py and detect_multi_threaded.py share: options, per-frame work
(detect, keep the best boxes, draw, JSON record), outputs (video, JSON lines, window) and the summary.

    source -> SourceFrame (resized, flipped) -> FrameProcessor (BGR->RGB, detect, draw) -> FrameResult
           -> Presenter (--output video, --json lines, window with FPS) -> Summary

Errors the user can fix are `UserError`s (one line, naming the file and what to do); outputs go
through utils.common.fileio.atomic_path, so a failed run leaves nothing under the final names. A stop by
'q' or Ctrl-C is a clean stop: what was processed is kept and the video is playable.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from utils.common import config
from utils.common.boxes import normalized_to_pixels
from utils.common.fileio import atomic_path
from utils.runtime import detector as detector_utils
from utils.runtime.pipeline import PipelineError, run_ordered
from utils.runtime.sources import FrameSource, SourceError, SourceFrame, fit_frame, open_source

SINGLE_TITLE = "Single-Threaded Detection"  # the original's window titles
MULTI_TITLE = "Multi-Threaded Detection"
VIDEO_FOURCC = config.VIDEO_FOURCC
OUTPUT_VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv")  # containers OpenCV writes mp4v into
DEFAULT_QUEUE_SIZE = 5                      # the original's default
SCORE_DECIMALS = 4
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130                      # the shell's code for Ctrl-C; outputs are still kept


class UserError(ValueError):
    """Bad input the user can fix: printed as one line, exit status 1."""


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


# --- Options -------------------------------------------------------------------------------------

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the empty ones (None, False) whose help already says what happens."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def build_parser(multi: bool, prog: str | None = None) -> argparse.ArgumentParser:
    title = MULTI_TITLE if multi else SINGLE_TITLE
    what = ("a reader thread, N workers each with its own detector, results kept in frame order"
            if multi else "one loop: read, detect, draw, show / write")
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"{title}: find hands in a camera, video, stream or images ({what}). "
                    f"Stops at the end of the source, on 'q' in the window, or on Ctrl-C (outputs are kept).",
        formatter_class=_HelpFormatter)
    parser.add_argument("-src", "--source", default="0",
                        help="camera index (0 = the first camera), video file, stream URL (rtsp://, "
                             "http://...), image, folder of images, or a quoted glob like 'frames/*.jpg'")
    parser.add_argument("--model", type=Path, default=None,
                        help="model file: frozen_inference_graph.pb, a saved_model/ folder, or a .tflite; "
                             f"default: the fastest one in {config.MODEL_DIR.name}/ "
                             f"({', '.join(detector_utils.MODEL_PREFERENCE)}, first found)")
    parser.add_argument("-sth", "--scorethreshold", dest="score_thresh", type=float,
                        default=config.DEFAULT_SCORE_THRESHOLD,
                        help="only boxes scoring above this are drawn and written (0..1)")
    parser.add_argument("-nhands", "--num-hands", dest="num_hands", type=int,
                        default=config.DEFAULT_NUM_HANDS,
                        help="at most this many boxes per frame (the best ones)")
    parser.add_argument("-wd", "--width", type=int, default=config.DEFAULT_WIDTH,
                        help="frames are resized to WIDTH x HEIGHT before detection, drawing and --output "
                             "(0 keeps the source's; one side 0 keeps the aspect ratio). The original used "
                             "320x180 (single) and 300x200 (multi); the model resizes to 300x300 itself")
    parser.add_argument("-ht", "--height", type=int, default=config.DEFAULT_HEIGHT,
                        help="see --width")
    parser.add_argument("-ds", "--display", type=int, choices=(0, 1), default=1,
                        help=f"1: show frames in an OpenCV window titled '{title}' ('q' quits); "
                             "0: no window and no display needed (headless)")
    parser.add_argument("-fps", "--fps", type=int, choices=(0, 1), default=1,
                        help="1: draw the running FPS on the window (not on --output, which stays the same "
                             "from run to run); 0: don't")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"write the annotated frames to this video ({VIDEO_FOURCC}; "
                             f"{', '.join(OUTPUT_VIDEO_SUFFIXES)})")
    parser.add_argument("--json", type=Path, default=None,
                        help="write one JSON line per frame ('-' for stdout): index, timestamp (s; null "
                             "for images), width, height, boxes [[xmin,ymin,xmax,ymax] in pixels of the "
                             "resized frame], scores, "
                             "classes (label map ids), class_names, and file for image sources")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="stop after this many frames (default: the whole source)")
    parser.add_argument("--flip", action="store_true",
                        help="mirror frames horizontally before detection (a webcam shown like a mirror; "
                             "the original multi-threaded script always did)")
    if multi:
        parser.add_argument("-num-w", "--num-workers", dest="num_workers", type=int, default=cpu_count(),
                            help="detector threads, each with its own detector (default: one per CPU core; "
                                 "the original used 4)")
    else:
        parser.add_argument("-num-w", "--num-workers", dest="num_workers", type=int, default=1,
                            help="accepted for the original's command lines and ignored here "
                                 "(see detect_multi_threaded.py)")
    parser.add_argument("-q-size", "--queue-size", dest="queue_size", type=int, default=DEFAULT_QUEUE_SIZE,
                        help="frames waiting for a worker at most (a camera keeps only its newest frame)"
                        + ("" if multi else "; ignored here"))
    parser.add_argument("--num-threads", type=int, default=0,
                        help="threads per detector; 0 picks: all cores for one TFLite detector or a "
                             "TensorFlow model, cores / workers for several TFLite workers")
    parser.add_argument("--linger", type=float, default=0.0,
                        help="with --display 1, keep the window open this many seconds after the last frame "
                             "('q' closes it sooner)")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Range checks argparse cannot express (exits with usage, like argparse's own errors)."""
    problems = [(not 0.0 <= args.score_thresh <= 1.0, "--scorethreshold must be within 0..1"),
                (args.num_hands < 0, "--num-hands must be >= 0"),
                (args.width < 0 or args.height < 0, "--width and --height must be >= 0"),
                (args.num_workers < 1, "--num-workers must be >= 1"),
                (args.queue_size < 1, "--queue-size must be >= 1"),
                (args.max_frames is not None and args.max_frames < 1, "--max-frames must be >= 1"),
                (args.num_threads < 0, "--num-threads must be >= 0"),
                (args.linger < 0, "--linger must be >= 0")]
    for bad, message in problems:
        if bad:
            parser.error(message)


def is_stream_path(path: Path) -> bool:
    """'-' (stdout), /dev/stdout and the like, or an existing pipe: written directly, not atomically
    (renaming a temporary over them would replace the device node or link itself)."""
    if str(path) == "-":
        return True
    for name in (os.path.abspath(path), os.path.realpath(path)):
        if name.startswith(("/dev/", "/proc/")) and not name.startswith("/dev/shm/"):
            return True
    return path.exists() and not path.is_file() and not path.is_dir()


def check_output_path(path: Path, option: str, suffixes: tuple[str, ...] = (),
                      stream_ok: bool = False) -> None:
    """Fail before any work when `path` cannot be written (parent is a file, no permission...)."""
    if is_stream_path(path):
        if stream_ok:
            return
        raise UserError(f"{path}: {option} must be a regular file (the video container needs to seek)")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"{path}: {option} must end in one of {', '.join(suffixes)}")
    if path.is_dir():
        raise UserError(f"{path}: {option} is a folder; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{path}: {option} cannot be written: {parent} is not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{path}: {option} cannot be written: no permission in {parent}; choose another path")


# --- Per-frame work ------------------------------------------------------------------------------

@dataclass
class FrameResult:
    index: int
    image: np.ndarray        # BGR, boxes drawn
    record: dict             # the JSON line
    num_boxes: int


def select_detections(detections: detector_utils.Detections, score_thresh: float,
                      num_hands: int) -> detector_utils.Detections:
    """The best `num_hands` boxes scoring above `score_thresh` (the original's rule: scores are sorted)."""
    order = np.argsort(-detections.scores, kind="stable")[:num_hands]
    keep = order[detections.scores[order] > score_thresh]
    return detector_utils.Detections(detections.boxes[keep], detections.scores[keep],
                                     detections.classes[keep])


def frame_record(frame: SourceFrame, kept: detector_utils.Detections, width: int, height: int,
                 class_names: dict[int, str]) -> dict:
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

    def __init__(self, detector: detector_utils.HandDetector, score_thresh: float, num_hands: int):
        self.detector = detector
        self.score_thresh = score_thresh
        self.num_hands = num_hands

    def __call__(self, frame: SourceFrame) -> FrameResult:
        import cv2

        image = frame.bgr
        height, width = image.shape[:2]
        detections = self.detector.detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        kept = select_detections(detections, self.score_thresh, self.num_hands)
        # Drawn on the BGR frame, so the window and the video show exactly BOX_COLOR_BGR.
        detector_utils.draw_box_on_image(len(kept.scores), -np.inf, kept.scores, kept.boxes, width, height,
                                         image, kept.classes, self.detector.class_names)
        return FrameResult(frame.index, image, frame_record(frame, kept, width, height,
                                                            self.detector.class_names), len(kept.scores))


class FrameStream:
    """The source's frames, resized / flipped, at most `max_frames`; corrupt ones skipped with a warning."""

    def __init__(self, source: FrameSource, width: int, height: int, flip: bool, max_frames: int | None,
                 warn: Callable[[str], None]):
        self.source, self.width, self.height, self.flip = source, width, height, flip
        self.max_frames, self.warn = max_frames, warn
        self.skipped = 0
        self.delivered = 0

    def __iter__(self) -> Iterator[SourceFrame]:
        if self.max_frames is not None and self.delivered >= self.max_frames:
            return
        for frame in self.source.frames():
            if frame.bgr is None:
                self.skipped += 1
                where = frame.name or self.source.description
                self.warn(f"{where}: {frame.error}; frame {frame.index} skipped")
                continue
            yield replace(frame, bgr=fit_frame(frame.bgr, self.width, self.height, self.flip))
            self.delivered += 1
            if self.max_frames is not None and self.delivered >= self.max_frames:
                return


# --- Outputs -------------------------------------------------------------------------------------

class Outputs:
    """--output video and --json lines, each under a temporary name until the run ends well.

    The video writer opens on the first frame (its size); later frames of another size (images of
    mixed sizes) are resized to it. If no frame came, no video is written (warned).
    """

    def __init__(self, video_path: Path | None, json_path: Path | None, fps: float,
                 warn: Callable[[str], None] = lambda message: None):
        self.video_path, self.json_path, self.fps, self.warn = video_path, json_path, fps, warn
        self._video_stack = contextlib.ExitStack()
        self._json_stack = contextlib.ExitStack()
        self._video_tmp: Path | None = None
        self._writer = None
        self._size: tuple[int, int] | None = None
        self._json = None
        self.frames = 0

    def __enter__(self) -> "Outputs":
        try:
            if self.video_path is not None:
                self._video_tmp = self._video_stack.enter_context(
                    atomic_path(self.video_path, suffix=self.video_path.suffix))  # OpenCV needs the extension
                # Registered after atomic_path, so it runs first: the file is complete when moved.
                self._video_stack.callback(self._release_writer)
            if self.json_path is not None and str(self.json_path) == "-":
                self._json = sys.stdout
            elif self.json_path is not None and is_stream_path(self.json_path):
                # Append: truncating /dev/stdout would clobber what a redirected stdout already holds.
                self._json = self._json_stack.enter_context(open(self.json_path, "a", encoding="utf-8"))
            elif self.json_path is not None:
                tmp = self._json_stack.enter_context(atomic_path(self.json_path))
                self._json = self._json_stack.enter_context(open(tmp, "w", encoding="utf-8"))
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._json_stack.__exit__(exc_type, exc, tb)
        finally:
            if exc_type is None and self.video_path is not None and self._writer is None:
                self.warn(f"{self.video_path}: no frame was processed, so no video was written")
                try:
                    raise _NoVideo
                except _NoVideo:  # makes atomic_path discard its temporary
                    self._video_stack.__exit__(*sys.exc_info())
            else:
                self._video_stack.__exit__(exc_type, exc, tb)

    def _release_writer(self) -> None:
        if self._writer is not None:
            self._writer.release()  # writes the container's index: the file is playable

    def write(self, result: FrameResult) -> None:
        if self._json is not None:
            self._json.write(json.dumps(result.record, separators=(",", ":")) + "\n")
        if self._video_tmp is not None:
            import cv2

            image = result.image
            if self._writer is None:
                self._size = (image.shape[1], image.shape[0])
                self._writer = cv2.VideoWriter(str(self._video_tmp), cv2.VideoWriter_fourcc(*VIDEO_FOURCC),
                                               self.fps, self._size)
                if not self._writer.isOpened():
                    raise UserError(f"{self.video_path}: OpenCV cannot write a {VIDEO_FOURCC} video here; "
                                    f"try a .mp4 name")
            if (image.shape[1], image.shape[0]) != self._size:
                image = cv2.resize(image, self._size)
            self._writer.write(image)
        self.frames += 1


class _NoVideo(Exception):
    """Internal: makes atomic_path discard an empty video."""


class DisplayError(UserError):
    pass


def check_display() -> None:
    """Refuse --display 1 without a screen before Qt would abort the whole process."""
    if not sys.platform.startswith("linux") or os.environ.get("WAYLAND_DISPLAY"):
        return
    display = os.environ.get("DISPLAY", "")
    if not display:
        raise DisplayError("--display 1 needs a screen but DISPLAY is not set; use --display 0 (headless), "
                           "or run it on a desktop or under Xvfb")
    local = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", display)
    if local and not Path(f"/tmp/.X11-unix/X{local.group(1)}").exists():
        raise DisplayError(f"--display 1: no X server is running on DISPLAY={display}; use --display 0 "
                           f"(headless) or start one")


class Window:
    """The OpenCV HighGUI window (main thread only). Does nothing at all when disabled."""

    def __init__(self, title: str, enabled: bool, show_fps: bool):
        self.title, self.enabled, self.show_fps = title, enabled, show_fps
        self._shown = False
        self._seen_visible = False

    def __enter__(self) -> "Window":
        if self.enabled:
            import cv2

            check_display()
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            import cv2

            cv2.destroyAllWindows()
            cv2.waitKey(1)  # lets the GUI actually close the window

    def _keep_going(self) -> bool:
        import cv2

        if cv2.waitKey(1) & 0xFF == ord("q"):
            return False
        # The user closed the window with its close button. A new window is not visible until the
        # GUI has mapped it, so only a window once seen visible counts as closed.
        visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        self._seen_visible = self._seen_visible or visible
        return visible or not self._seen_visible

    def show(self, image: np.ndarray, fps: float) -> bool:
        """Show a frame; False when the user asked to quit."""
        if not self.enabled:
            return True
        import cv2

        if self.show_fps:
            image = image.copy()  # the FPS text stays off --output
            detector_utils.draw_fps_on_image(f"FPS : {int(fps)}", image)
        if not self._shown:  # start at the frame's own size (a WINDOW_NORMAL window may be resized later)
            cv2.resizeWindow(self.title, image.shape[1], image.shape[0])
        cv2.imshow(self.title, image)
        self._shown = True
        return self._keep_going()

    def linger(self, seconds: float) -> None:
        """Keep the last frame on screen for `seconds` (or until 'q')."""
        if not (self.enabled and self._shown):
            return
        end = time.monotonic() + seconds
        while time.monotonic() < end and self._keep_going():
            time.sleep(0.01)


# --- Running -------------------------------------------------------------------------------------

@dataclass
class Summary:
    title: str
    frames: int = 0
    seconds: float = 0.0
    skipped: int = 0
    dropped: int = 0
    frames_with_boxes: int = 0
    stopped_by: str = "end of stream"
    details: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        text = (f"{self.title}: {self.frames} frames in {self.seconds:.2f} s = {self.fps:.1f} FPS; "
                f"{self.frames_with_boxes} with hands; skipped {self.skipped} corrupt frame(s)")
        if self.dropped:
            text += f"; dropped {self.dropped} stale live frame(s)"
        return f"{text}; stopped by {self.stopped_by}" + "".join(f"; {d}" for d in self.details)


class Presenter:
    """The consumer of results, in order, on the main thread: write, show, count."""

    def __init__(self, outputs: Outputs | None, window: Window | None, summary: Summary):
        self.outputs, self.window, self.summary = outputs, window, summary
        self.start = time.perf_counter()

    def __call__(self, result: FrameResult) -> bool:
        self.summary.frames += 1
        self.summary.frames_with_boxes += result.num_boxes > 0
        if self.outputs is not None:
            self.outputs.write(result)
        if self.window is not None:
            fps = self.summary.frames / max(time.perf_counter() - self.start, 1e-9)
            return self.window.show(result.image, fps)
        return True


def run_single(frames: FrameStream, processor: FrameProcessor, present: Presenter,
               stop: threading.Event) -> str:
    """The single-threaded loop; returns why it stopped."""
    for frame in frames:
        if stop.is_set():
            return "Ctrl-C"
        if not present(processor(frame)):
            return "'q'"
    if stop.is_set():
        return "Ctrl-C"
    return "--max-frames" if frames.max_frames is not None and frames.delivered >= frames.max_frames \
        else "end of stream"


def run_multi(frames: FrameStream, processors: list[FrameProcessor], present: Presenter, queue_size: int,
              live: bool, stop: threading.Event) -> tuple[str, int]:
    """The multi-threaded pipeline; returns (why it stopped, stale frames dropped)."""
    stats = run_ordered(frames, processors, present, queue_size=queue_size, keep_latest=live, stop=stop)
    reason = {"consumer": "'q'", "stop": "Ctrl-C"}.get(stats.stopped_by)
    if reason is None:
        reason = "--max-frames" if frames.max_frames is not None and frames.delivered >= frames.max_frames \
            else "end of stream"
    return reason, stats.dropped


@contextlib.contextmanager
def ctrl_c_sets(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C (SIGINT) asks for a clean stop; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None, multi: bool, prog: str | None = None) -> int:
    """Both scripts' main(); returns the exit status. `prog` names the script in messages."""
    parser = build_parser(multi, prog)
    args = parser.parse_args(argv)
    check_args(parser, args)
    prog = parser.prog
    title = MULTI_TITLE if multi else SINGLE_TITLE

    def warn(message: str) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)

    stop = threading.Event()
    try:
        # Everything that can be checked is checked before any work starts.
        if args.output is not None:
            check_output_path(args.output, "--output", OUTPUT_VIDEO_SUFFIXES)
        if args.json is not None:
            check_output_path(args.json, "--json", stream_ok=True)
        if args.display:
            check_display()
        model_path = Path(args.model) if args.model is not None else detector_utils.default_model_path()
        if model_path.is_dir() and not (model_path / "saved_model.pb").exists():
            model_path = detector_utils.default_model_path(model_path)  # a folder like hand_inference_graph/
        workers = args.num_workers if multi else 1
        with open_source(args.source, args.width, args.height) as source:
            detector = detector_utils.load_inference_graph(
                model_path, threads_per_detector(model_path, workers, args.num_threads))
            processors = [FrameProcessor(detector if i == 0 else detector.clone(), args.score_thresh,
                                         args.num_hands) for i in range(workers)]
            frames = FrameStream(source, args.width, args.height, args.flip, args.max_frames, warn)
            summary = Summary(title, details=[f"model {detector.path.name} ({detector.backend})"]
                              + ([f"{workers} workers"] if multi else []))
            with Outputs(args.output, args.json, source.fps, warn) as outputs, \
                    Window(title, bool(args.display), bool(args.fps)) as window, ctrl_c_sets(stop):
                present = Presenter(outputs, window, summary)
                if multi:
                    summary.stopped_by, summary.dropped = run_multi(
                        frames, processors, present, args.queue_size, source.live, stop)
                else:
                    summary.stopped_by = run_single(frames, processors[0], present, stop)
                summary.seconds = time.perf_counter() - present.start
                if summary.stopped_by != "'q'":
                    window.linger(args.linger)
            summary.skipped = frames.skipped
    except (UserError, SourceError, detector_utils.ModelLoadError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except PipelineError as exc:
        print(exc.traceback_text, end="", file=sys.stderr)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    # The summary goes to stderr when the JSON lines go to stdout.
    report = sys.stderr if args.json is not None and is_stream_path(args.json) else sys.stdout
    print(summary.line(), file=report, flush=True)
    for path in (args.output, args.json):
        if path is not None and path.is_file():
            print(f"wrote {path}", file=report)
    return EXIT_INTERRUPTED if summary.stopped_by == "Ctrl-C" else 0
