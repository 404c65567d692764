"""Build videos/chess.mov from the EgoHands CHESS frames, so the detectors have a real test video:

    python scripts/make_chess_video.py --zip ../shared/egohands-sample/egohands_data.zip
    python detect_single_threaded.py --source videos/chess.mov

Frames come straight from the zip (`_LABELLED_SAMPLES/CHESS*/frame_NNNN.jpg`) or from the images/
folder that egohands_dataset_clean.py writes (`images/<split>/CHESS*_frame_NNNN.jpg`); videos in name
order, frames in frame-number order. EgoHands labelled 100 sparse frames per video (not consecutive),
so the default 10 fps plays each video's 100 frames in 10 s. Codec mp4v; the file is written under a
temporary name and moved into place only when complete.
"""
from __future__ import annotations

import argparse
import re
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder: the repo's utils/

from utils.common import config
from utils.common.errors import UserError, pass_hint, report
from utils.common.fileio import atomic_path, check_distinct_paths, check_output_path
from utils.common.media import OUTPUT_VIDEO_SUFFIXES
from utils.common.signals import interruptible
from utils.data.egohands import LABELLED_DIR
from utils.runtime.sources import decode_image, natural_key

DEFAULT_OUTPUT = config.VIDEOS_DIR / "chess.mov"
DEFAULT_FPS = 10.0
DEFAULT_PREFIX = "CHESS"
DEFAULT_ZIP = config.CACHE_DIR / "egohands_data.zip"  # where egohands_dataset_clean.py downloads it
VIDEO_FOURCC = config.VIDEO_FOURCC
_ZIP_MEMBER = re.compile(rf"(?:^|/){LABELLED_DIR}/([^/]+)/(frame_\d+\.jpe?g)$", re.I)
_IMAGE_NAME = re.compile(r"^(.+)_(frame_\d+\.jpe?g)$", re.I)


class ChessVideoError(UserError):
    """Bad input: printed as one line."""


def frame_key(video: str, frame_name: str) -> tuple:
    return natural_key(video), natural_key(frame_name)


def zip_frames(zip_path: Path, prefix: str) -> list[tuple[str, Callable[[], bytes]]]:
    """(label, reader) for every frame of the videos named prefix* in an EgoHands zip, in order."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except FileNotFoundError as exc:
        raise ChessVideoError(f"{zip_path}: no such file; pass the EgoHands zip with "
                              f"{pass_hint('--zip', 'EGOHANDS_ZIP')}") from exc
    except (zipfile.BadZipFile, OSError) as exc:
        raise ChessVideoError(f"{zip_path}: not a readable zip ({exc}); download it again") from exc
    found = []
    for name in archive.namelist():
        match = _ZIP_MEMBER.search(name)
        if match and match.group(1).upper().startswith(prefix.upper()):
            found.append((frame_key(*match.groups()), name))
    return [(f"{zip_path}:{name}", (lambda name=name: archive.read(name))) for _, name in sorted(found)]


def folder_frames(images_dir: Path, prefix: str) -> list[tuple[str, Callable[[], bytes]]]:
    """The same from images/<split>/<VIDEO>_frame_NNNN.jpg (any split; a video is in one split)."""
    if not images_dir.is_dir():
        raise ChessVideoError(f"{images_dir}: no such folder; run `make data` first or pass "
                              f"{pass_hint('--zip', 'EGOHANDS_ZIP')}")
    found = []
    for path in images_dir.rglob("*"):
        match = _IMAGE_NAME.match(path.name)
        if match and path.is_file() and match.group(1).upper().startswith(prefix.upper()):
            found.append((frame_key(*match.groups()), path))
    return [(str(path), path.read_bytes) for _, path in sorted(found)]


def decoded(frames: list[tuple[str, Callable[[], bytes]]], warn: Callable[[str], None]
            ) -> Iterator[np.ndarray]:
    """BGR frames, all of the first frame's size; undecodable ones skipped with a warning."""
    import cv2

    size = None
    for label, read in frames:
        bgr = decode_image(read())
        if bgr is None:
            warn(f"{label}: not a decodable image; skipped")
            continue
        if size is None:
            size = (bgr.shape[1], bgr.shape[0])
        elif (bgr.shape[1], bgr.shape[0]) != size:
            bgr = cv2.resize(bgr, size)
        yield bgr


def write_video(frames: Iterator[np.ndarray], output: Path, fps: float) -> int:
    """Write frames to `output` atomically; returns how many. Nothing is left behind on failure."""
    import cv2

    count = 0
    with atomic_path(output, suffix=output.suffix) as tmp:
        writer = None
        try:
            for bgr in frames:
                if writer is None:
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), fps,
                                             (bgr.shape[1], bgr.shape[0]))
                    if not writer.isOpened():
                        raise ChessVideoError(f"{output}: OpenCV cannot write a {VIDEO_FOURCC} video with "
                                              f"this name; use .mov or .mp4")
                writer.write(bgr)
                count += 1
        finally:
            if writer is not None:
                writer.release()
        if count == 0:
            raise ChessVideoError(f"{output}: no frame could be decoded, so no video was written")
    return count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--zip", type=Path,
                        help=f"EgoHands zip (the official egohands_data.zip or the shared sample); default: "
                             f"{DEFAULT_ZIP.relative_to(config.ROOT)} if it was downloaded, else --images")
    source.add_argument("--images", type=Path,
                        help=f"the images/ folder of egohands_dataset_clean.py (default when no zip is "
                             f"found: {config.IMAGES_DIR.relative_to(config.ROOT)}/)")
    parser.add_argument("--video", default=DEFAULT_PREFIX,
                        help="use the videos whose id starts with this (e.g. CHESS_COURTYARD_B_T for one)")
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS, help="frame rate of the video")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"video to write (default: {DEFAULT_OUTPUT.relative_to(config.ROOT)})")
    return parser


@interruptible(Path(__file__).name)
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.fps <= 0:
        parser.error("--fps must be > 0")
    prog = parser.prog

    def warn(message: str) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr)

    try:
        check_output_path(args.output, "--output", OUTPUT_VIDEO_SUFFIXES)
        check_distinct_paths({"--output": args.output}, {"--zip": args.zip})
        where = args.zip or args.images or (DEFAULT_ZIP if DEFAULT_ZIP.exists() else config.IMAGES_DIR)
        if args.zip is not None:
            frames = zip_frames(args.zip, args.video)
        elif args.images is not None or not DEFAULT_ZIP.exists():
            images = args.images or config.IMAGES_DIR
            if args.images is None and not images.is_dir():
                raise ChessVideoError(f"no EgoHands data: pass "
                                      f"{pass_hint('--zip', 'EGOHANDS_ZIP')} (e.g. {config.SHARED_EGOHANDS_ZIP}) or "
                                      "run `make data` first")
            frames = folder_frames(images, args.video)
        else:
            frames = zip_frames(DEFAULT_ZIP, args.video)
        if not frames:
            raise ChessVideoError(f"{where}: no frames of videos named {args.video}*; check --video")
        count = write_video(decoded(frames, warn), args.output, args.fps)
    except UserError as exc:  # ChessVideoError, an unwritable --output, ...
        return report(prog, exc)
    print(f"wrote {args.output}: {count} frames at {args.fps:g} fps ({count / args.fps:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
