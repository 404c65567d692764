"""`make demo`: detect and track hands in a real video, headless; with no video, in camera 0 in a window.

    python demo.py --video ../shared/videos/hand_desk.mp4   # -> results/demo.mp4 + results/demo.jsonl, FPS
    python demo.py                                           # camera 0 in a window ('q' quits), if there is
                                                             # a display and a camera; else one line on
                                                             # how to pass a video
The video runs through detect_single_threaded.py, the camera through detect_multi_threaded.py, both
with --track. `--help` explains every option.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.common.errors import UserError, report
from utils.runtime import cli
from utils.runtime.demo import DEMO_CAMERA, DEMO_JSON_OUTPUT, DEMO_VIDEO_OUTPUT, demo_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=None,
                        help="the video to run on; without it, the camera in a window")
    parser.add_argument("--model", type=Path, default=None,
                        help="model file or folder (default: the fastest in hand_inference_graph/)")
    parser.add_argument("--output", type=Path, default=DEMO_VIDEO_OUTPUT, help="annotated video (video only)")
    parser.add_argument("--json", type=Path, default=DEMO_JSON_OUTPUT, help="JSON lines (video only)")
    parser.add_argument("--camera", type=int, default=DEMO_CAMERA, help="camera index used without --video")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = Path(__file__).name
    try:
        command, multi = demo_command(args.video, args.model, args.output, args.json, args.camera)
    except UserError as exc:
        return report(prog, exc)
    return cli.main(command, multi=multi, prog=prog)  # errors name the script the user ran


if __name__ == "__main__":
    sys.exit(main())
