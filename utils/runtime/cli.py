"""The command line of detect_single_threaded.py and detect_multi_threaded.py: options, checks, main().

    source -> loop.FrameStream (flipped; a copy at --width x --height for the detector)
           -> loop.FrameProcessor (detect [+ the gesture model, merged: multi_model]; [--track:
              tracking.HandTracker, in frame order; gestures kept per track]; draw, JSON record)
           -> outputs.Presenter (--output video, --json lines, window with FPS) -> outputs.Summary

Everything that can be checked (options, output paths, the display, the source, the model) is
checked before any work; bad input is one line on stderr and exit status 2 (errors.EXIT_BAD_INPUT),
a crashed worker its traceback and 1, Ctrl-C 130 with the outputs kept.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from utils.common import config
from utils.common.checks import number_problem
from utils.common.errors import EXIT_FAILED, EXIT_INTERRUPTED, UserError, report
from utils.common.fileio import check_distinct_paths, check_output_path, is_stream_path
from utils.common.media import OUTPUT_VIDEO_SUFFIXES
from utils.common.signals import interruptible, stop_on_signal
from utils.runtime import detector as detector_utils
from utils.runtime import tracking
from utils.runtime.loop import (
    DEFAULT_QUEUE_SIZE,
    STOPPED_BY_CTRL_C,
    STOPPED_BY_QUIT,
    FrameStream,
    cpu_count,
    make_processors,
    run,
)
from utils.runtime.multi_model import GESTURE_MODEL, HAND_MODEL, MergeOptions, gesture_model_path, parse_models
from utils.runtime.outputs import MIN_VIDEO_SIDE, VIDEO_FOURCC, Outputs, Presenter, Summary, Window, check_display
from utils.runtime.pipeline import PipelineError
from utils.runtime.sources import input_files, open_source

SINGLE_TITLE = "Single-Threaded Detection"  # the original's window titles
MULTI_TITLE = "Multi-Threaded Detection"
# Larger frames only exhaust memory (--width 100000 asks for 30 GB per frame); 8192 covers 8K video.
MAX_FRAME_SIDE = 8192


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
                        help="the detector sees frames resized to WIDTH x HEIGHT (0 keeps the source's; one "
                             "side 0 keeps the aspect ratio); the window, --output and --json keep the "
                             "source's frame (see --output-size). The original used 320x180 (single) and "
                             "300x200 (multi); the model resizes to 300x300 itself")
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
                             f"{', '.join(OUTPUT_VIDEO_SUFFIXES)}), at the source's size or --output-size")
    parser.add_argument("--output-size", type=parse_output_size, default=None, metavar="W[xH]",
                        help="show and write frames scaled to this width (W) or to fit W x H, keeping the "
                             "source's aspect ratio (default: the source's own size)")
    parser.add_argument("--json", type=Path, default=None,
                        help="write one JSON line per frame ('-' for stdout): index, timestamp (s; null "
                             "for images), width and height of the source frame, boxes [[xmin,ymin,xmax,ymax] "
                             "in its pixels], scores, classes (label map ids), class_names, file for image "
                             "sources; with --track also track_ids (parallel to boxes; null for a hand seen "
                             "once, not yet confirmed) and predicted (true: placed by the tracker on a frame "
                             "the detector skipped); with --models hand,gesture also gestures (parallel to "
                             "boxes: open, closed, pinch, point, or null where none) and objects (faces and "
                             "fingertips: model, box in the same pixels, score, class_name)")
    parser.add_argument("--models", default=HAND_MODEL, metavar="NAMES",
                        help=f"'{HAND_MODEL}': the hand detector only; '{HAND_MODEL},{GESTURE_MODEL}': also the "
                             f"gesture/face model ({config.GESTURE_MODEL_DIR.name}/, built by `make model`) on every "
                             "frame the detector runs on: each hand box gets the gesture of the gesture box "
                             "overlapping it (drawn under the box), faces (orange) and fingertips (magenta) "
                             "are drawn and written as objects" + (
                                 "; each worker owns both models and runs them one after the other, so the "
                                 "workers' frames keep both models busy at once (see --side-by-side)"
                                 if multi else "; one model after the other"))
    parser.add_argument("--gesture-model", type=Path, default=None,
                        help="the gesture model file (.tflite, .pb, saved_model/) or folder; default: the "
                             f"fastest one in {config.GESTURE_MODEL_DIR.name}/")
    parser.add_argument("--suppress-faces", action="store_true",
                        help="drop hand boxes that the gesture model sees as a face (at least half of the box "
                             "inside a face box, unless a gesture box covers it as much); turns on the "
                             "gesture model")
    parser.add_argument("--track", action="store_true",
                        help="give each hand an integer ID that stays while it is visible and through misses "
                             f"up to {tracking.MAX_MISS_SECONDS:g} s (ByteTrack from the `trackers` package); "
                             "drawn on its box and written as track_ids")
    parser.add_argument("--detect-every", type=int, default=1, metavar="N",
                        help="run the detector on every Nth frame only; the tracker moves the boxes on the "
                             "frames between (predicted in --json). N > 1 turns on --track")
    parser.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=None,
                        help="steadier boxes: each tracked hand's box is its Kalman filter's estimate rather "
                             "than the raw detection (default: on with --track; --smooth turns on --track)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="stop after this many frames (default: the whole source)")
    parser.add_argument("--flip", action="store_true",
                        help="mirror frames horizontally before detection (a webcam shown like a mirror; "
                             "the original multi-threaded script always did)")
    if multi:
        parser.add_argument("-num-w", "--num-workers", dest="num_workers", type=int, default=cpu_count(),
                            help="detector threads, each with its own detector (default: one per CPU core; "
                                 "the original used 4)")
        parser.add_argument("--side-by-side", action=argparse.BooleanOptionalAction, default=False,
                            help="with --models hand,gesture: each worker also runs the gesture model on a second "
                                 "thread while it runs the hand model, rather than after it (slower on 2 cores "
                                 "in `make bench`: the cores are already busy with the workers' frames)")
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
    """Range and finiteness checks argparse cannot express (exits with usage, like argparse's own errors;
    `nan` and `inf` pass argparse's float() and every `<` test, so utils.common.checks looks at them)."""
    numbers = [(args.score_thresh, "--scorethreshold", dict(minimum=0, maximum=1)),
               (args.linger, "--linger", dict(minimum=0))]
    for value, flag, bounds in numbers:
        problem = number_problem(value, **bounds)
        if problem is not None:
            parser.error(f"{flag} is {value:g}; {problem}")
    problems = [(not 0.0 <= args.score_thresh <= 1.0, "--scorethreshold must be within 0..1"),
                (args.num_hands < 0, "--num-hands must be >= 0"),
                (args.width < 0 or args.height < 0, "--width and --height must be >= 0"),
                (max(args.width, args.height) > MAX_FRAME_SIDE,
                 f"--width and --height must be at most {MAX_FRAME_SIDE}"),
                # --width / --height size only what the detector sees; --output gets the source's frames
                (args.output is not None and args.output_size is not None
                 and 0 < min(side for side in args.output_size if side) < MIN_VIDEO_SIDE,
                 f"--output needs frames of at least {MIN_VIDEO_SIDE}x{MIN_VIDEO_SIDE}: raise --output-size"),
                (args.num_workers < 1, "--num-workers must be >= 1"),
                (args.queue_size < 1, "--queue-size must be >= 1"),
                (args.max_frames is not None and args.max_frames < 1, "--max-frames must be >= 1"),
                (args.num_threads < 0, "--num-threads must be >= 0"),
                (args.detect_every < 1, "--detect-every must be >= 1")]
    for bad, message in problems:
        if bad:
            parser.error(message)


def parse_output_size(text: str) -> tuple[int, int]:
    """'640' -> (640, 0): that width; '640x480' -> fit within 640 x 480. The aspect ratio is kept."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) not in (1, 2) or min(size) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a width like 640, or WIDTHxHEIGHT like 640x480")
    return (size[0], size[1] if len(size) == 2 else 0)


def make_tracker(args: argparse.Namespace, fps: float) -> tracking.HandTracker | None:
    """The tracker the options ask for (--track, --detect-every > 1 or --smooth), else None."""
    if not (args.track or args.detect_every > 1 or args.smooth):
        return None
    return tracking.HandTracker(fps=fps, smooth=args.smooth is not False, score_thresh=args.score_thresh)


def check_outputs(args: argparse.Namespace, model_path: Path | None = None,
                  gesture_path: Path | None = None) -> None:
    """Fail before any work when --output / --json cannot be written, or would overwrite an input (the
    source, the models) or each other."""
    if args.output is not None:
        check_output_path(args.output, "--output", OUTPUT_VIDEO_SUFFIXES)
    if args.json is not None:
        check_output_path(args.json, "--json", stream_ok=True)
    check_distinct_paths({"--output": args.output, "--json": args.json},
                         {"--source": input_files(args.source), "--model": model_path,
                          "--gesture-model": gesture_path})


def _one_stop_path(main: Callable[..., int]) -> Callable[..., int]:
    """main() under utils.common.signals.interruptible: a stop signal outside the detection loop (while
    the summary is printed) is one line and 130, never a default death (143 for SIGTERM, 129 for SIGHUP);
    a summary on a closed stdout ends quietly."""
    @functools.wraps(main)
    def wrapper(argv: list[str] | None, multi: bool, prog: str | None = None, *args, **kwargs) -> int:
        name = prog or Path(sys.argv[0]).name
        return interruptible(name)(main)(argv, multi, prog, *args, **kwargs)
    return wrapper


@_one_stop_path
def main(argv: list[str] | None, multi: bool, prog: str | None = None,
         on_summary: Callable[[Summary], None] | None = None) -> int:
    """Both scripts' main(); returns the exit status. `prog` names the script in messages; `on_summary`
    gets the run's Summary (demo.py titles its picture with the FPS)."""
    parser = build_parser(multi, prog)
    args = parser.parse_args(argv)
    check_args(parser, args)
    prog = parser.prog
    title = MULTI_TITLE if multi else SINGLE_TITLE

    def warn(message: str) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)

    stop = threading.Event()
    stopped_by: list[str] = []  # the signal that asked for the clean stop

    def not_stopped() -> None:
        """A stop signal before the loop: nothing was written yet, so stop now."""
        if stop.is_set():
            raise KeyboardInterrupt(stopped_by[0] if stopped_by else "")

    try:
        check_outputs(args)
        if args.display:
            check_display()
        model_path = Path(args.model) if args.model is not None else detector_utils.default_model_path()
        if model_path.is_dir() and not (model_path / "saved_model.pb").exists():
            model_path = detector_utils.default_model_path(model_path)  # a folder like hand_inference_graph/
        models = parse_models(args.models)
        use_gesture = GESTURE_MODEL in models or args.suppress_faces
        side_by_side = use_gesture and multi and args.side_by_side
        gesture_path = gesture_model_path(args.gesture_model) if use_gesture else None
        check_outputs(args, model_path, gesture_path)
        workers = args.num_workers if multi else 1
        # From the source's opening to the last output's closing every stop signal (INT, TERM, HUP, and any
        # repeat) only asks for a clean stop: the outputs are kept, complete, and no temporary stays behind.
        with stop_on_signal(stop, stopped_by.append), \
                open_source(args.source, args.width, args.height) as source, contextlib.ExitStack() as closing:
            not_stopped()
            processors = make_processors(model_path, workers, args.score_thresh, args.num_hands, gesture_path,
                                         MergeOptions(suppress_faces=args.suppress_faces), side_by_side,
                                         args.num_threads)
            for processor in processors:
                closing.callback(processor.close)
            frames = FrameStream(source, args.width, args.height, args.flip, args.max_frames, warn,
                                 output_size=args.output_size, detect_every=args.detect_every)
            tracker = make_tracker(args, source.fps)
            detector, gesture = processors[0].detector, processors[0].gesture
            details = [f"model {detector.path.name} ({detector.backend})"] + ([f"{workers} workers"] if multi
                                                                              else [])
            if gesture is not None:
                details.append(f"gesture model {gesture.path.name}"
                               + (", side by side" if side_by_side else ", after the hand model")
                               + (", faces suppressed" if args.suppress_faces else ""))
            if tracker is not None:
                details.append(f"tracking ({tracker.algorithm}{', smoothed' if tracker.smooth else ''}, "
                               f"detector on every {args.detect_every} frame(s))")
            not_stopped()
            with Outputs(args.output, args.json, source.fps, warn) as outputs, \
                    Window(title, bool(args.display), bool(args.fps)) as window:
                stats = run(frames, processors, Presenter(outputs, window), threaded=multi,
                            queue_size=args.queue_size, stop=stop, tracker=tracker)
                if stats.stopped_by != STOPPED_BY_QUIT:
                    window.linger(args.linger, stop)
                stats.stopped_by = outputs.stopped_by or stats.stopped_by
    except UserError as exc:  # a source, model, output path or display the user can fix
        return report(prog, exc)
    except PipelineError as exc:  # a crash inside a worker: its traceback, then one line
        print(exc.traceback_text, end="", file=sys.stderr)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:  # a stop signal before the source was opened or the outputs were
        print(f"{prog}: interrupted{f' by {exc}' if str(exc) else ''}; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if stats.stopped_by == STOPPED_BY_CTRL_C and stopped_by:
        stats.stopped_by = stopped_by[0]  # "Ctrl-C" or "SIGTERM"
    # The summary goes to stderr when the JSON lines go to stdout.
    summary_to = sys.stderr if args.json is not None and is_stream_path(args.json) else sys.stdout
    summary = Summary(title, stats, details)
    print(summary.line(), file=summary_to, flush=True)
    if on_summary is not None:
        on_summary(summary)
    for path in (args.output, args.json):
        if path is not None and path.is_file():
            print(f"wrote {path}", file=summary_to)
    return EXIT_INTERRUPTED if stopped_by else 0
