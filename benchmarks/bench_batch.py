"""Benchmark (`make bench`): detect_batch.py on Ray against the shell loop of detect_single_threaded.py, on the
same real clips (cuts of the shared hand video and EgoHands sequences, made here in a temporary folder).

    python benchmarks/bench_batch.py --model-dir hand_inference_graph

Both sides are whole commands, timed from start to exit as a user runs them (the loop: one process per
clip, the model loaded each time; the batch: Ray started once, one model per worker). Prints videos per
hour and frames per second of each, the per-worker FPS (frames / seconds inside the workers, from the
batch summary) and the workers a cluster needs for EgoHands (4,800 frames) and a 3,670-hour corpus
(Ego4D-sized, 30 FPS) in an hour at that rate. Writes results/bench_batch.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder: the repo's utils/

from utils.common import config
from utils.common.errors import UserError, report
from utils.common.fileio import atomic_write_text, check_writable_dir
from utils.common.signals import interruptible
from utils.runtime import batch
from utils.runtime.loop import cpu_count

PROG = Path(__file__).name
ROOT = config.ROOT
EGOHANDS_FRAMES = 4_800          # EgoHands: 48 videos x 100 labelled frames
CORPUS_HOURS = 3_670             # an Ego4D-sized corpus
CORPUS_FPS = 30.0                # its videos' frame rate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=config.SHARED_HAND_VIDEO,
                        help="the real video to cut clips from (default: %(default)s)")
    parser.add_argument("--zip", type=Path, default=config.SHARED_EGOHANDS_ZIP,
                        help="EgoHands zip: each of its videos' frames becomes one more clip; skipped when absent "
                             "(default: %(default)s)")
    parser.add_argument("--clips", type=int, default=6, help="cuts of --video (default: %(default)s)")
    parser.add_argument("--clip-frames", type=int, default=60, help="frames per cut (default: %(default)s)")
    parser.add_argument("--copies", type=int, default=1,
                        help="each clip this many times (as separate files): a longer collection, where the batch's "
                             "fixed cost (Ray start, model load) weighs less (default: %(default)s)")
    parser.add_argument("--model-dir", type=Path, default=config.MODEL_DIR,
                        help="the model folder both sides use (its fastest model; default: %(default)s)")
    parser.add_argument("--workers", type=int, default=cpu_count(),
                        help="detect_batch.py --workers (default: the cores, %(default)s)")
    parser.add_argument("--output-dir", type=Path, default=config.RESULTS_DIR,
                        help="where bench_batch.md goes (default: %(default)s)")
    return parser


def make_clips(video: Path, egohands_zip: Path | None, out: Path, clips: int, clip_frames: int) -> list[Path]:
    """`clips` consecutive cuts of `video` (mp4v) and one clip per EgoHands video of the zip."""
    import cv2
    import numpy as np

    def write(path: Path, frames: list, fps: float) -> None:
        height, width = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*config.VIDEO_FOURCC), fps, (width, height))
        for frame in frames:
            writer.write(frame)
        writer.release()

    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while len(frames) < clips * clip_frames:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    if len(frames) < clips * clip_frames:
        raise UserError(f"{video}: has {len(frames)} readable frames, fewer than --clips x --clip-frames "
                        f"({clips * clip_frames}); lower them")
    written = []
    for number in range(clips):
        written.append(out / f"{video.stem}_{number}.mp4")
        write(written[-1], frames[number * clip_frames:(number + 1) * clip_frames], fps)
    if egohands_zip is not None:
        with zipfile.ZipFile(egohands_zip) as archive:
            names = sorted(n for n in archive.namelist() if n.lower().endswith(".jpg"))
            for sequence in sorted({n.rsplit("/", 2)[-2] for n in names}):
                decoded = [cv2.imdecode(np.frombuffer(archive.read(n), np.uint8), cv2.IMREAD_COLOR)
                           for n in names if n.rsplit("/", 2)[-2] == sequence]
                written.append(out / f"{sequence}.mp4")
                write(written[-1], decoded, 30.0)
    return written


def _timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("DISPLAY", None)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    return seconds, result


def run(args: argparse.Namespace, tmp: Path) -> dict:
    import pandas as pd

    clips_dir = tmp / "clips"
    clips_dir.mkdir()
    egohands = args.zip if args.zip.exists() else None
    clips = make_clips(args.video, egohands, clips_dir, args.clips, args.clip_frames)
    originals = list(clips)
    for copy in range(1, args.copies):
        for clip in originals:
            clips.append(clip.with_name(f"{clip.stem}_copy{copy}{clip.suffix}"))
            shutil.copyfile(clip, clips[-1])
    loop_seconds = 0.0
    for clip in clips:  # the shell loop: `for v in clips/*.mp4; do python detect_single_threaded.py ...; done`
        seconds, _ = _timed([sys.executable, "detect_single_threaded.py", "--source", str(clip), "--display", "0",
                             "--model", str(args.model_dir), "--json", str(tmp / "loop" / f"{clip.stem}.jsonl")])
        loop_seconds += seconds
    batch_seconds, _ = _timed([sys.executable, "detect_batch.py", str(clips_dir), "--output", str(tmp / "batch"),
                               "--model", str(args.model_dir), "--workers", str(args.workers), "--no-progress"])
    summary = pd.read_parquet(tmp / "batch" / f"{batch.SUMMARY_STEM}.parquet")
    frames = int(summary.frames.sum())
    busiest = float(summary.groupby("worker").seconds.sum().max())  # the worker that finished last, roughly
    return {"clips": len(clips), "frames": frames, "loop_s": loop_seconds, "batch_s": batch_seconds,
            "per_worker_fps": frames / float(summary.seconds.sum()), "fixed_s": batch_seconds - busiest,
            "model_sha256": summary.model_sha256.iloc[0], "egohands": egohands is not None}


def table(stats: dict, workers: int) -> str:
    n, frames = stats["clips"], stats["frames"]
    rows = [("shell loop of detect_single_threaded.py", stats["loop_s"]),
            (f"detect_batch.py, {workers} workers (local Ray)", stats["batch_s"])]
    lines = [f"{n} clips, {frames} frames; model sha256 {stats['model_sha256'][:12]}; {cpu_count()} cores",
             "", "| run | seconds | videos / hour | FPS |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {s:.1f} | {n * 3600 / s:,.0f} | {frames / s:.1f} |" for name, s in rows]
    fps = stats["per_worker_fps"]
    corpus_frames = CORPUS_HOURS * 3600 * CORPUS_FPS
    lines += ["", f"Per-worker FPS inside the workers (frames / their seconds, from summary.parquet): {fps:.1f}; "
              f"{workers} workers: {workers * fps:.1f} FPS once running",
              f"Batch fixed cost (its wall time - the busiest worker's seconds: Ray start, model load, shutdown): "
              f"{stats['fixed_s']:.1f} s",
              "", "Workers to finish in one hour at that rate (frames / 3600 / per-worker FPS):",
              f"- EgoHands, {EGOHANDS_FRAMES:,} frames: {batch.workers_needed(EGOHANDS_FRAMES, fps)} "
              f"({EGOHANDS_FRAMES / 3600 / fps:.3f} of one)",
              f"- {CORPUS_HOURS:,} hours at {CORPUS_FPS:g} FPS = {corpus_frames:,.0f} frames: "
              f"{batch.workers_needed(corpus_frames, fps):,}"]
    return "\n".join(lines)


@interruptible(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not args.video.is_file():
            raise UserError(f"{args.video}: no such video; pass --video (the shared one lives in ../shared)")
        if min(args.clips, args.clip_frames, args.workers, args.copies) < 1:
            raise UserError("--clips, --clip-frames, --copies and --workers must be >= 1; raise them")
        check_writable_dir(args.output_dir, "--output-dir")
        from utils.runtime.detector import default_model_path

        default_model_path(args.model_dir)  # no model: one line now, not a failed subprocess later
        with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
            stats = run(args, Path(tmp))
    except UserError as exc:
        return report(PROG, exc)
    text = table(stats, args.workers)
    print(text)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    atomic_write_text(args.output_dir / "bench_batch.md",
                      f"# Batch detection benchmark\n\n`{' '.join([PROG, *(argv or sys.argv[1:])])}`, {stamp}\n\n"
                      f"{text}\n")
    print(f"wrote {args.output_dir / 'bench_batch.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
