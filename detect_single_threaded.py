"""Detect hands in a camera, video, stream or images, one frame at a time (the original's loop).

    python detect_single_threaded.py --source videos/chess.mov
    python detect_single_threaded.py --source ../shared/videos/hand_desk.mp4 --display 0 \\
        --output results/demo.mp4 --json results/demo.jsonl

Read -> resize -> BGR->RGB -> detect -> draw -> window and/or --output / --json; prints a summary
(frames, seconds, FPS, skipped corrupt frames). `--help` explains every option.
"""
from __future__ import annotations

import sys
from pathlib import Path

from utils.runtime import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, multi=False, prog=Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
