"""Detect hands in a whole collection of videos (and folders of frames) on Ray: locally by default, on a
cluster with --address. One JSON-lines file per video, in exactly detect_single_threaded.py's --json format,
and a summary table (summary.parquet, summary.csv).

    python detect_batch.py recordings/ --output out/
    python detect_batch.py 'clips/**/*.mp4' --output out/ --track --detect-every 3
    python detect_batch.py videos.txt --output /mnt/shared/out --address ray://head:10001

A rerun with the same OUTPUT skips the videos already done (resume after a crash or Ctrl-C); a video that
cannot be read is recorded as failed with its reason while the others finish (exit status 3).
`--help` explains every option; README "Batch detection" has the cluster setup.
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from utils.common import config
from utils.common.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, UserError, report
from utils.common.fileio import check_writable_dir
from utils.common.signals import sigterm_as_ctrl_c, stop_on_signal
from utils.runtime import batch
from utils.runtime.cli import MAX_FRAME_SIDE, _HelpFormatter

PROG = Path(__file__).name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_HelpFormatter,
        description="Find hands in every video of a collection, one model per worker, on Ray (local by default, "
                    "a cluster with --address). Writes OUTPUT/<name>.jsonl per video (detect_single_threaded.py's "
                    "--json lines) and OUTPUT/summary.parquet + summary.csv. Rerunning skips finished videos. "
                    f"Exit status: 0 all done, {batch.EXIT_SOME_FAILED} some videos failed (see the summary), "
                    f"{EXIT_BAD_INPUT} bad input, {EXIT_INTERRUPTED} Ctrl-C / SIGTERM (finished videos kept).")
    parser.add_argument("input",
                        help="a folder (its videos and folders of images, at any depth; each folder of images is "
                             "one frame sequence), a quoted glob like 'clips/**/*.mp4', a list file "
                             f"({', '.join(batch.MANIFEST_SUFFIXES)}: one path per line, or a CSV with 'path' and "
                             "optional 'name' columns), or one video")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="folder for <name>.jsonl (name: the video's path under INPUT, without extension) "
                             "and the summary; on a cluster a path every node sees at the same place")
    parser.add_argument("--model", type=Path, default=None,
                        help="model file (.tflite, .pb, saved_model/) or folder; default: the fastest one in "
                             f"{config.MODEL_DIR.name}/; on a cluster a path every node sees")
    parser.add_argument("-sth", "--scorethreshold", dest="score_thresh", type=float,
                        default=config.DEFAULT_SCORE_THRESHOLD, help="as in the detectors: keep boxes above this")
    parser.add_argument("-nhands", "--num-hands", dest="num_hands", type=int, default=config.DEFAULT_NUM_HANDS,
                        help="as in the detectors: at most this many boxes per frame")
    parser.add_argument("-wd", "--width", type=int, default=config.DEFAULT_WIDTH,
                        help="as in the detectors: the detector sees frames at WIDTH x HEIGHT (0 keeps a side's "
                             "aspect); boxes are written in the source's pixels")
    parser.add_argument("-ht", "--height", type=int, default=config.DEFAULT_HEIGHT, help="see --width")
    parser.add_argument("--track", action="store_true",
                        help="as in the detectors: track IDs per hand (track_ids and predicted in the JSON)")
    parser.add_argument("--detect-every", type=int, default=1, metavar="N",
                        help="as in the detectors: the detector on every Nth frame, the tracker between (N > 1 "
                             "turns on --track)")
    parser.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=None,
                        help="as in the detectors: Kalman-smoothed boxes (default: on with --track)")
    parser.add_argument("--max-frames", type=int, default=None, help="at most this many frames of each video")
    parser.add_argument("--flip", action="store_true", help="mirror frames before detection, as in the detectors")
    parser.add_argument("-w", "--workers", type=int, default=0,
                        help="worker processes, each loading the model once and taking one video at a time; "
                             "0: one per CPU (this machine's cores, or the whole cluster's with --address)")
    parser.add_argument("--threads-per-worker", type=int, default=1,
                        help="detector threads (and Ray CPUs) per worker")
    parser.add_argument("--address", default=None,
                        help="a running Ray cluster: ray://HEAD:10001 (Ray Client) or HEAD:6379 / auto on a node "
                             "of it; default: start Ray on this machine only")
    parser.add_argument("--ship-code", action=argparse.BooleanOptionalAction, default=True,
                        help="with --address: send this checkout's code to the nodes (Ray runtime_env working_dir); "
                             "--no-ship-code when every node has it on its Python path")
    parser.add_argument("--redo", action="store_true", help="redo every video, even those an earlier run finished")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars over videos and frames on stderr (default: when stderr is a terminal)")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    problems = [(not 0.0 <= args.score_thresh <= 1.0, "--scorethreshold must be within 0..1"),
                (args.num_hands < 0, "--num-hands must be >= 0"),
                (args.width < 0 or args.height < 0, "--width and --height must be >= 0"),
                (max(args.width, args.height) > MAX_FRAME_SIDE,
                 f"--width and --height must be at most {MAX_FRAME_SIDE}"),
                (args.detect_every < 1, "--detect-every must be >= 1"),
                (args.max_frames is not None and args.max_frames < 1, "--max-frames must be >= 1"),
                (args.workers < 0, "--workers must be >= 0"),
                (args.threads_per_worker < 1, "--threads-per-worker must be >= 1")]
    for bad, message in problems:
        if bad:
            parser.error(message)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    stop, stopped_by = threading.Event(), []
    try:
        with sigterm_as_ctrl_c():  # a SIGTERM while Ray starts is a Ctrl-C too (the workers are shut down)
            return _main(args, stop, stopped_by)
    except UserError as exc:
        return report(PROG, exc)
    except KeyboardInterrupt as exc:  # a second Ctrl-C, or one while Ray was starting
        print(f"{PROG}: interrupted{f' by {exc}' if str(exc) else ''}; finished videos are kept, rerun to go on",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(args: argparse.Namespace, stop: threading.Event, stopped_by: list[str]) -> int:
    items = batch.expand_inputs(args.input)
    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"{args.output}: --output is a file; give a folder")
    check_writable_dir(args.output, "--output")
    from utils.runtime import detector as detector_utils

    model_path = args.model if args.model is not None else config.MODEL_DIR
    if model_path.is_dir() and not (model_path / "saved_model.pb").exists():
        model_path = detector_utils.default_model_path(model_path)  # a folder like hand_inference_graph/
    detector_utils.load_inference_graph(model_path, 1)  # a bad model is one line here, not N worker crashes
    model_path = model_path.resolve()
    output_dir = args.output.resolve()
    options = batch.DetectOptions(args.score_thresh, args.num_hands, args.width, args.height, args.track,
                                  args.detect_every, args.smooth, args.max_frames, args.flip)
    model_hash = batch.model_sha256(model_path)
    settings = batch.settings_key(options, model_hash)
    rows: dict[str, dict] = {}
    for item in items:
        earlier = None if args.redo else batch.finished_row(output_dir, item, settings)
        if earlier is not None:
            rows[item.name] = earlier
    todo = [item for item in items if item.name not in rows]
    done_earlier = set(rows)
    output_dir.mkdir(parents=True, exist_ok=True)
    seconds = _run(todo, output_dir, options, settings, model_hash, model_path, args, stop, stopped_by, rows)
    all_rows = [rows.get(item.name) or batch.not_done_row(output_dir, item) for item in items]
    parquet, csv_file = batch.write_summary(output_dir, all_rows)
    return _report(all_rows, done_earlier, seconds, parquet, csv_file, stopped_by)


def _run(todo, output_dir, options, settings, model_hash, model_path, args, stop, stopped_by, rows) -> float:
    """Run the videos still to do on Ray; fills `rows` (name -> row). Returns the wall-clock seconds."""
    import time

    from tqdm import tqdm

    from utils.runtime.batch_engine import EngineSettings, RayEngine

    if not todo:
        return 0.0
    disable = None if args.progress is None else not args.progress  # None: tqdm shows bars on a terminal only
    engine_settings = EngineSettings(args.address, args.workers, args.threads_per_worker, args.ship_code)
    with RayEngine(engine_settings, model_path, len(todo)) as engine, stop_on_signal(stop, stopped_by.append), \
            tqdm(total=len(todo), desc="videos", unit="video", position=0, disable=disable) as videos, \
            tqdm(desc="frames", unit="frame", position=1, disable=disable) as frames:
        print(f"{PROG}: {len(todo)} video(s) to do on {engine.workers} worker(s)"
              f"{f' at {args.address}' if args.address else ' (local Ray)'}", file=sys.stderr, flush=True)
        start = time.perf_counter()

        def on_row(item, row) -> None:
            batch.write_row(output_dir, item, row)
            rows[item.name] = row
            videos.update(1)
            if row["status"] != batch.STATUS_OK:
                tqdm.write(f"{PROG}: {item.name}: failed: {row.get('error')}", file=sys.stderr)

        engine.run(todo, output_dir, options, settings, model_hash, stop, on_row, frames.update)
        return time.perf_counter() - start


def _report(rows: list[dict], done_earlier: set[str], seconds: float, parquet: Path, csv_file: Path,
            stopped_by: list[str]) -> int:
    ok = [r for r in rows if r["status"] == batch.STATUS_OK]
    failed = [r for r in rows if r["status"] == batch.STATUS_FAILED]
    not_done = [r for r in rows if r["status"] == batch.STATUS_NOT_DONE]
    this_run = [r for r in ok if r["video"] not in done_earlier]
    frames = sum(r["frames"] for r in this_run)
    line = (f"{PROG}: {len(rows)} video(s): {len(ok)} ok ({len(done_earlier)} done earlier, skipped), "
            f"{len(failed)} failed, {len(not_done)} not done; this run: {len(this_run)} video(s), {frames} frames "
            f"in {seconds:.1f} s = {frames / seconds if seconds else 0:.1f} FPS")
    print(line, flush=True)
    print(f"wrote {parquet}\nwrote {csv_file}")
    if stopped_by:
        print(f"{PROG}: stopped by {stopped_by[0]}; finished videos are kept, rerun the same command to go on",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return batch.EXIT_SOME_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())
