"""Browser row of `make bench`: frames per second of handtrack.js's model.detect in headless Chromium.

    python benchmarks/bench_web.py --source ../shared/videos/hand_desk.mp4

Exports --model-dir for the browser as `make web` does (into a temporary folder), serves the page on
localhost, and times model.detect (the element's pixels, the legacy resize, LiteRT.js's Wasm run, the box
decoding and NMS in JS) on real frames of --source, cycling through them, for each exported .tflite; then
the Python detector on the same files and frames, beside it. Prints a table, writes results/bench_web.md.
Needs Chromium and web/node_modules (`make web`).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder: the repo's utils/

from utils.common import config
from utils.common.signals import interruptible

PROG = Path(__file__).name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=config.SHARED_HAND_VIDEO,
                        help="real video whose frames are detected (default: %(default)s)")
    parser.add_argument("--model-dir", type=Path, default=config.MODEL_DIR,
                        help="model folder built by `make model` (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=30, help="frames taken from --source (default: %(default)s)")
    parser.add_argument("--step", type=int, default=10, help="take every STEP-th frame (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=100,
                        help="timed model.detect calls per model (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=config.RESULTS_DIR / "bench_web.md",
                        help="markdown report (default: %(default)s)")
    args = parser.parse_args(argv)
    for name in ("frames", "step", "iterations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    return args


@interruptible(PROG)
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.common.errors import UserError, report, user_error
    from utils.common.fileio import atomic_write_text
    from utils.evaluation import browser

    try:
        if not args.source.is_file():
            raise user_error(args.source, "no such video", "pass --source (make bench VIDEO=...)")
        problem = browser.missing_browser_tools()
        if problem:
            raise user_error("chromium", problem)
        frames = browser.read_frames(args.source, args.frames, args.step)
        with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
            rows = browser.bench_browser(args.model_dir, frames, args.iterations, args.warmup, Path(tmp))
    except UserError as exc:
        return report(PROG, exc)
    height, width = frames[0].shape[:2]
    table = browser.bench_table(rows)
    header = (f"# Browser benchmark ({datetime.date.today()})\n\n"
              f"`python benchmarks/bench_web.py --source {args.source} --model-dir {args.model_dir} "
              f"--frames {args.frames} --step {args.step} --iterations {args.iterations}`: {len(frames)} frames "
              f"{width}x{height}, {args.iterations} calls per row, {os.cpu_count()} CPU cores, "
              f"{rows[0].get('browser', 'Chromium')} (--headless --disable-gpu: no WebGL/WebGPU; the Wasm build "
              f"without threads, as the page is not cross-origin isolated).\n\n")
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, header + table + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
