"""What `make demo` runs: a real video headless, or, with no video at hand, camera 0 in a window.

    demo_command(video)  -> (argv for the detector CLI, multi-threaded?)   or raises UserError
"""
from __future__ import annotations

from pathlib import Path

from utils.common import config
from utils.common.errors import UserError
from utils.runtime.outputs import DisplayError, check_display
from utils.runtime.sources import SourceError, open_source

DEMO_VIDEO_OUTPUT = config.RESULTS_DIR / "demo.mp4"
DEMO_JSON_OUTPUT = config.RESULTS_DIR / "demo.jsonl"
DEMO_CAMERA = 0
HOW_TO_PASS_A_VIDEO = "pass one: make demo VIDEO=path/to/hands.mp4"


def camera_problem(camera: int = DEMO_CAMERA) -> str | None:
    """Why camera `camera` cannot be shown in a window here, or None when it can."""
    try:
        check_display()
    except DisplayError:
        return "no display to show a camera in"
    try:
        with open_source(str(camera)):
            return None
    except SourceError:
        return f"no camera {camera}"


def demo_command(video: Path | None, model: Path | None = None, output: Path = DEMO_VIDEO_OUTPUT,
                 json_path: Path = DEMO_JSON_OUTPUT, camera: int = DEMO_CAMERA) -> tuple[list[str], bool]:
    """The detector command line (and whether the multi-threaded one runs it) for `make demo`:
    the video headless with tracking, writing `output` and `json_path`; without a video, camera
    `camera` in a window (nothing written). UserError, one line, when neither can run."""
    model_args = ["--model", str(model)] if model is not None else []
    if video is not None:
        return (["--source", str(video), "--display", "0", "--track", "--output", str(output),
                 "--json", str(json_path), *model_args], False)
    problem = camera_problem(camera)
    if problem is not None:
        raise UserError(f"no video given and {problem}; {HOW_TO_PASS_A_VIDEO}")
    return ["--source", str(camera), "--display", "1", "--track", "--flip", *model_args], True
