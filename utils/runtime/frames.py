"""Read RGB frames from a video, an image, a folder or glob of images, or an EgoHands zip.

Used where frames are data (int8 calibration, evaluation), not a live source.
"""
from __future__ import annotations

import glob
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")


class FrameSourceError(ValueError):
    """A frame source that does not exist or cannot be decoded."""


def _decode(data: bytes, name: str) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FrameSourceError(f"{name}: not a decodable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _spread(items: list, limit: int | None) -> list:
    """At most `limit` items, evenly spread (so calibration sees a whole video, not its start)."""
    if limit is None or len(items) <= limit:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def iter_rgb_frames(source: str | Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames from `source`, at most `limit`, evenly spread over it."""
    import cv2

    source = str(source)
    path = Path(source)
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                names = sorted(n for n in archive.namelist() if n.lower().endswith(IMAGE_SUFFIXES))
                for name in _spread(names, limit):
                    yield _decode(archive.read(name), f"{path}:{name}")
        except (OSError, zipfile.BadZipFile) as exc:
            raise FrameSourceError(f"{path}: cannot read zip ({exc})") from exc
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            raise FrameSourceError(f"{source}: cannot open video")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
        wanted = set(_spread(list(range(count)), limit)) if count else None
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            if wanted is None or index in wanted:
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
        capture.release()
    else:
        files = (sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir()
                 else [Path(p) for p in sorted(glob.glob(source))])
        if not files:
            raise FrameSourceError(f"{source}: no images found (expected a video, an image, a folder or a glob)")
        for file in _spread(files, limit):
            yield _decode(file.read_bytes(), str(file))
