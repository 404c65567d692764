"""Detect hands with a reader thread and N worker threads, results kept in frame order.

    python detect_multi_threaded.py --source 0 --num-workers 2          # webcam, stale frames dropped
    python detect_multi_threaded.py --source ../shared/videos/hand_desk.mp4 --display 0 --json out.jsonl

Each worker has its own detector (TFLite: its own interpreter); queues are bounded; a file is
processed frame by frame with none lost or reordered, a camera keeps only its newest frame.
Stops on the end of the source, 'q' in the window, Ctrl-C (outputs kept, playable) or a worker error
(reported, exit status 1). `--help` explains every option.
"""
from __future__ import annotations

import sys
from pathlib import Path

from utils.runtime import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, multi=True, prog=Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
