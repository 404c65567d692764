"""`make demo`: detect and track hands in a real video, headless; with no video, in camera 0 in a window;
with neither a video nor a camera to show, in the shipped sample (samples/hand_desk_480.mp4), headless.

    python demo.py --video ../shared/videos/hand_desk.mp4   # -> results/demo.mp4, demo.jsonl, demo.png, FPS
    python demo.py                                           # camera 0 in a window ('q' quits), if there is
                                                             # a display and a camera; else the sample
The video runs through detect_single_threaded.py, the camera through detect_multi_threaded.py, both
with --track. A video run also writes a picture: annotated frames with hands side by side, the FPS in
its title. `--help` explains every option.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.common.errors import UserError, report
from utils.common.fileio import check_distinct_paths, check_output_path, is_stream_path
from utils.runtime import cli
from utils.runtime.demo import (
    DEMO_CAMERA,
    DEMO_JSON_OUTPUT,
    DEMO_PICTURE_OUTPUT,
    DEMO_VIDEO_OUTPUT,
    demo_command,
    demo_video,
    write_demo_picture,
)
from utils.runtime.outputs import Summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=None,
                        help="the video to run on; without it, the camera in a window, or the shipped sample "
                             "video when no camera can be shown (no display, no camera)")
    parser.add_argument("--model", type=Path, default=None,
                        help="model file or folder (default: the fastest in hand_inference_graph/)")
    parser.add_argument("--output", type=Path, default=DEMO_VIDEO_OUTPUT, help="annotated video (video only)")
    parser.add_argument("--json", type=Path, default=DEMO_JSON_OUTPUT, help="JSON lines (video only)")
    parser.add_argument("--picture", type=Path, default=DEMO_PICTURE_OUTPUT,
                        help="PNG of annotated frames with hands, the FPS in its title (video only; needs "
                             "--json to be a file)")
    parser.add_argument("--camera", type=int, default=DEMO_CAMERA, help="camera index used without --video")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = Path(__file__).name
    try:
        video, note = demo_video(args.video, args.camera)
        picture = args.picture if video is not None and not is_stream_path(args.json) else None
        if picture is not None:  # checked before the run, as the detector checks its own outputs
            check_output_path(picture, "--picture", (".png",))
            check_distinct_paths({"--picture": picture, "--output": args.output, "--json": args.json},
                                 {"--video": video})
        command, multi = demo_command(video, args.model, args.output, args.json, args.camera)
    except UserError as exc:
        return report(prog, exc)
    if note:
        print(f"{prog}: {note}", flush=True)
    summaries: list[Summary] = []
    status = cli.main(command, multi=multi, prog=prog, on_summary=summaries.append)  # errors name demo.py
    if status != 0 or picture is None or not summaries:
        return status
    stats = summaries[0].stats
    model = summaries[0].details[0] if summaries[0].details else ""
    title = f"{video.name}: {stats.fps:.1f} FPS, {stats.frames} frames, {model}, tracked"
    try:
        write_demo_picture(args.output, args.json, picture, title)
    except UserError as exc:
        return report(prog, exc)
    print(f"wrote {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
