"""What `make demo` runs: a real video headless, or, with no video at hand, camera 0 in a window, or,
with neither a video nor a camera to show, the shipped sample (config.SAMPLE_HAND_VIDEO) headless;
and the picture of a video run: a strip of annotated frames with hands, the FPS in its title.

    video, note = demo_video(video)                 # None: the camera can be shown; note: why the sample
    demo_command(video)  -> (argv for the detector CLI, multi-threaded?)
    write_demo_picture(annotated_video, json_lines, picture, title)   # results/demo.png
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from utils.common import config
from utils.common.errors import UserError
from utils.common.fileio import atomic_path
from utils.runtime.outputs import DisplayError, check_display
from utils.runtime.sources import SourceError, open_source

DEMO_VIDEO_OUTPUT = config.RESULTS_DIR / "demo.mp4"
DEMO_JSON_OUTPUT = config.RESULTS_DIR / "demo.jsonl"
DEMO_PICTURE_OUTPUT = config.RESULTS_DIR / "demo.png"
DEMO_CAMERA = 0
HOW_TO_PASS_A_VIDEO = "pass one: make demo VIDEO=path/to/hands.mp4"

# The picture: PICTURE_FRAMES annotated frames side by side, each scaled to PICTURE_TILE_HEIGHT pixels
# high (1280x360 for a square video: small enough for a README, large enough to read the IDs).
PICTURE_FRAMES = 4
PICTURE_TILE_HEIGHT = 320
PICTURE_TITLE_HEIGHT = 40
PICTURE_BACKGROUND_BGR = (32, 32, 32)
PICTURE_TEXT_BGR = (255, 255, 255)


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


def demo_video(video: Path | None, camera: int = DEMO_CAMERA,
               sample: Path = config.SAMPLE_HAND_VIDEO) -> tuple[Path | None, str | None]:
    """The video `make demo` runs on, and a note when it is the sample: `video` when given; None (the
    camera in a window) when there is a display and camera `camera`; else the shipped `sample`, so that
    a fresh clone over SSH, in a container or on CI shows hands at once. UserError when the sample is gone."""
    if video is not None:
        return video, None
    problem = camera_problem(camera)
    if problem is None:
        return None, None
    if not sample.is_file():
        raise UserError(f"no video given, {problem}, and the sample video {sample} is missing; "
                        f"{HOW_TO_PASS_A_VIDEO}")
    return sample, f"no video given and {problem}: running on the sample {sample}"


def demo_command(video: Path | None, model: Path | None = None, output: Path = DEMO_VIDEO_OUTPUT,
                 json_path: Path = DEMO_JSON_OUTPUT, camera: int = DEMO_CAMERA) -> tuple[list[str], bool]:
    """The detector command line (and whether the multi-threaded one runs it) for `make demo`:
    the video headless with tracking, writing `output` and `json_path`; without a video, camera
    `camera` in a window (nothing written; demo_video says whether it can be shown)."""
    model_args = ["--model", str(model)] if model is not None else []
    if video is not None:
        return (["--source", str(video), "--display", "0", "--track", "--output", str(output),
                 "--json", str(json_path), *model_args], False)
    return ["--source", str(camera), "--display", "1", "--track", "--flip", *model_args], True


def picture_frames(records: list[dict], count: int = PICTURE_FRAMES) -> list[int]:
    """The frame indices the picture shows: `count` spread evenly over the frames where the tracker
    confirmed a hand (else over those with any box; else over all frames), first to last."""
    def confirmed(record: dict) -> bool:
        return any(t is not None for t in record.get("track_ids", [])) and not record.get("predicted")

    for keep in (confirmed, lambda r: bool(r["boxes"]), lambda r: True):
        candidates = [r["index"] for r in records if keep(r)]
        if candidates:
            break
    else:
        return []
    if len(candidates) <= count:
        return candidates
    # Centred picks: the first and the last frames with hands are often half out of view.
    positions = ((np.arange(count) + 0.5) * len(candidates) / count).astype(int)
    return [candidates[p] for p in positions]


def track_tags(record: dict) -> list[tuple[float, float, str]]:
    """'#ID' at the top-left corner of each confirmed track's box of a JSON line (fractions of the frame)."""
    ids = record.get("track_ids") or [None] * len(record["boxes"])
    return [(box[0] / record["width"], box[1] / record["height"], f"#{tid}")
            for box, tid in zip(record["boxes"], ids, strict=True) if tid is not None]


def picture_size(frame_width: int, frame_height: int, count: int) -> tuple[int, int]:
    """(width, height) of the picture of `count` frames of frame_width x frame_height."""
    tile_width = max(1, round(frame_width * PICTURE_TILE_HEIGHT / frame_height))
    return tile_width * count, PICTURE_TILE_HEIGHT + PICTURE_TITLE_HEIGHT


def _outlined_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float,
                   color: tuple[int, int, int]) -> None:
    import cv2

    for thickness, ink in ((4, (0, 0, 0)), (2 if scale >= 0.6 else 1, color)):  # readable on any background
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness, cv2.LINE_AA)


def tile_frames(frames: list[np.ndarray], title: str, labels: list[str] | None = None,
                tags: list[list[tuple[float, float, str]]] | None = None) -> np.ndarray:
    """BGR frames (of one size) scaled to PICTURE_TILE_HEIGHT side by side under a title bar, each with
    its label (e.g. the time) in its corner and its tags (x, y as fractions of the frame, text: the track
    IDs, which the video draws too small to read once scaled down). The title shrinks to fit the width."""
    import cv2

    from utils.runtime.detector import BOX_COLOR_BGR

    if not frames:
        raise ValueError("tile_frames needs at least one frame")
    height, width = frames[0].shape[:2]
    full_width, full_height = picture_size(width, height, len(frames))
    tile_width = full_width // len(frames)
    picture = np.full((full_height, full_width, 3), PICTURE_BACKGROUND_BGR, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, frame in enumerate(frames):
        tile = cv2.resize(frame, (tile_width, PICTURE_TILE_HEIGHT), interpolation=cv2.INTER_AREA)
        if labels:
            _outlined_text(tile, labels[i], (8, PICTURE_TILE_HEIGHT - 10), 0.55, PICTURE_TEXT_BGR)
        for x, y, text in (tags[i] if tags else []):  # inside the box's top-left corner
            origin = (min(max(round(x * tile_width) + 4, 0), tile_width - 30),
                      min(max(round(y * PICTURE_TILE_HEIGHT) + 22, 22), PICTURE_TILE_HEIGHT - 4))
            _outlined_text(tile, text, origin, 0.7, BOX_COLOR_BGR)
        picture[PICTURE_TITLE_HEIGHT:, i * tile_width:(i + 1) * tile_width] = tile
    scale = 0.7
    (text_width, text_height), _ = cv2.getTextSize(title, font, scale, 1)
    scale *= min(1.0, (full_width - 16) / max(text_width, 1))
    (_, text_height), _ = cv2.getTextSize(title, font, scale, 1)
    cv2.putText(picture, title, (8, (PICTURE_TITLE_HEIGHT + text_height) // 2), font, scale, PICTURE_TEXT_BGR,
                1, cv2.LINE_AA)
    return picture


def read_frames(video: Path, indices: list[int]) -> list[np.ndarray]:
    """The BGR frames `indices` of `video`, read in order (no seeking: exact on any codec)."""
    import cv2

    wanted, frames = set(indices), {}
    capture = cv2.VideoCapture(str(video))
    try:
        index = 0
        while len(frames) < len(wanted):
            ok, frame = capture.read()
            if not ok:
                break
            if index in wanted:
                frames[index] = frame
            index += 1
    finally:
        capture.release()
    missing = sorted(wanted - frames.keys())
    if missing:
        raise UserError(f"{video}: cannot read frame {missing[0]} (the video has {index} readable frames)")
    return [frames[i] for i in indices]


def write_demo_picture(video: Path, json_path: Path, picture: Path, title: str) -> list[int]:
    """results/demo.png: PICTURE_FRAMES frames of the annotated `video` that show hands (chosen from the
    JSON lines at `json_path`), side by side under `title`. Written atomically; returns the frames shown."""
    import cv2

    records = [json.loads(line) for line in json_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    indices = picture_frames(records)
    if not indices:
        raise UserError(f"{json_path}: no frames, so no picture; check the video {video}")
    by_index = {r["index"]: r for r in records}
    labels = [f"t={by_index[i]['timestamp']:.1f}s" if by_index[i].get("timestamp") is not None else f"#{i}"
              for i in indices]
    image = tile_frames(read_frames(video, indices), title, labels, [track_tags(by_index[i]) for i in indices])
    picture.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(picture, suffix=picture.suffix) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise UserError(f"{picture}: OpenCV cannot write this picture; give a .png name")
    return indices
