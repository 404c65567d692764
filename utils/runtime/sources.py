"""Live frame sources for the detectors: a camera index, a video file, a stream URL, an image,
or a folder / glob of images.

    with open_source("videos/chess.mov") as source:
        for frame in source.frames():          # SourceFrame(index, timestamp, bgr, name, error)
            ...

    for rgb in iter_rgb_frames("clip.mp4", limit=100):   # frames as data (int8 calibration):
        ...                                               # evenly spread, also from an EgoHands zip

`decode_image` is the one image decoder (sources, calibration, evaluation, make_chess_video.py).
`open_source` fails early with a `SourceError` whose message names the source and what to do;
it also reads the first frame, so a file that opens but decodes nothing is refused before any work.
A frame that cannot be decoded (a corrupt image in a folder) comes through with `bgr=None` and an
`error`, so the caller can warn, count it and go on. Only OpenCV is needed (no TensorFlow).
"""
from __future__ import annotations

import contextlib
import glob
import re
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.common.errors import UserError
from utils.common.fileio import opencv_path
from utils.common.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES

# Stream schemes that deliver frames in real time (a reader must drop stale frames, not queue them).
# An http(s) URL may be a plain file, so it is read frame by frame like one.
LIVE_URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "srt", "rtp")
# Frame rate written to --output for sources that report none (cameras without it, images).
FALLBACK_FPS = 30.0
# OpenCV takes a camera number, plus a backend's offset (CAP_V4L2 = 200, ... CAP_OBSENSOR = 2600);
# beyond this, a number is no camera (and overflows OpenCV's int).
MAX_CAMERA_INDEX = 9999
FRAME_COUNT_SLACK = 1  # frames a container's frame count may overstate (estimated from its duration)
_GLOB_CHARS = re.compile(r"[*?\[]")
_WHAT_TO_PASS = "pass a camera index, a video file, a stream URL, an image, or a folder or glob of images"


class SourceError(UserError):
    """A source that does not exist, cannot be opened or yields no frame."""


def decode_image(data: bytes, rgb: bool = False) -> np.ndarray | None:
    """Encoded image bytes (JPEG, PNG, BMP) -> uint8 BGR (or RGB), None when they do not decode.
    imdecode on bytes, not imread: it also handles non-ASCII paths and never prints."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is not None and rgb:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


@dataclass(frozen=True)
class SourceFrame:
    index: int                      # position in the source, 0-based (a skipped frame keeps its number)
    timestamp: float | None         # seconds: media time for files, since opening for live sources,
                                    # None for images (they have no time)
    bgr: np.ndarray | None          # None when the frame could not be decoded
    name: str | None = None         # the image file, for image sources
    error: str | None = None        # why bgr is None


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines (a missing camera prints several) while we report errors ourselves."""
    import cv2

    logging = cv2.utils.logging
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(previous)


def natural_key(text: str) -> list:
    """Sort key that puts frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


class FrameSource:
    """Base: iterate `frames()` once; `live` sources (cameras, streams) should drop stale frames."""

    description: str = ""
    live: bool = False
    fps: float = FALLBACK_FPS

    def frames(self) -> Iterator[SourceFrame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CaptureSource(FrameSource):
    """cv2.VideoCapture over a camera index, a video file or a stream URL."""

    ended_early: str | None = None  # set when a file ended before the frame count its header gives

    def __init__(self, target: int | str, live: bool, width: int = 0, height: int = 0):
        import cv2

        self.description = f"camera {target}" if isinstance(target, int) else str(target)
        self.live = live
        with quiet_opencv():
            self.capture = cv2.VideoCapture(target)
            if isinstance(target, int) and self.capture.isOpened():
                self.capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver keeps no backlog of old frames
                if width > 0 and height > 0:
                    # Ask the camera for the size, as the original did; frames are resized anyway.
                    self.capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
                    self.capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if not self.capture.isOpened():
                self.capture.release()
                if isinstance(target, int):
                    raise SourceError(f"camera {target}: cannot open it; check that it is plugged in and not "
                                      f"used by another program, or {_WHAT_TO_PASS}")
                raise SourceError(f"{target}: cannot open it as a video (unsupported format, corrupt file or "
                                  f"unreachable stream); {_WHAT_TO_PASS}")
            ok, first = self.capture.read()
        if not ok or first is None:
            self.capture.release()
            raise SourceError(f"{self.description}: opened but no frame could be read (empty or corrupt "
                              f"video, or a camera that delivers nothing)")
        reported_fps = self.capture.get(cv2.CAP_PROP_FPS)
        # Some backends report 0 or absurd rates (1000 for some streams): fall back then.
        self.fps = reported_fps if 0 < reported_fps <= 240 else FALLBACK_FPS
        self._first: np.ndarray | None = first
        self._opened_at = time.monotonic()

    def frames(self) -> Iterator[SourceFrame]:
        import cv2

        index = 0
        frame, self._first = self._first, None
        while frame is not None:
            # Files get media time (deterministic: the same JSON from any run); live sources wall time.
            timestamp = time.monotonic() - self._opened_at if self.live else index / self.fps
            yield SourceFrame(index, timestamp, frame)
            index += 1
            ok, frame = self.capture.read()
            if not ok:
                frame = None
        # A file cut short (an interrupted copy or download) still opens: its header promises more
        # frames than can be decoded. Estimated counts may be off by one, hence the slack.
        expected = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not self.live else 0
        if expected > index + FRAME_COUNT_SLACK:
            self.ended_early = (f"the video ended after {index} of its {expected} frames (the file is "
                                "truncated or corrupt)")

    def close(self) -> None:
        self.capture.release()


class ImageFilesSource(FrameSource):
    """Still images in a given order; each is one frame."""

    def __init__(self, files: list[Path], description: str):
        self.files = files
        self.description = description

    def frames(self) -> Iterator[SourceFrame]:
        for index, path in enumerate(self.files):
            try:
                bgr = decode_image(path.read_bytes())
                error = None if bgr is not None else "not a decodable image"
            except OSError as exc:
                bgr, error = None, f"cannot read it ({exc.strerror or exc})"
            yield SourceFrame(index, None, bgr, str(path), error)


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: natural_key(p.name))


def input_files(source: str | int | Path) -> list[Path]:
    """The files `source` would read (none for a camera or a URL): outputs must not overwrite them."""
    text = str(source).strip()
    if re.fullmatch(r"\d+", text) or "://" in text:
        return []
    path = Path(text).expanduser()
    if path.is_dir():
        return _image_files(path)
    if path.exists():
        return [path]
    return [Path(p) for p in glob.glob(str(path))] if _GLOB_CHARS.search(text) else []


def open_source(source: str | int | Path, width: int = 0, height: int = 0) -> FrameSource:
    """Open `source` (see the module doc). `width`/`height` are only a request to a camera."""
    text = str(source).strip()
    if re.fullmatch(r"\d+", text):
        if int(text) <= MAX_CAMERA_INDEX:
            return CaptureSource(int(text), live=True, width=width, height=height)
        if not Path(text).exists():  # else a file named by digits, read below
            raise SourceError(f"{text}: not a camera index (0..{MAX_CAMERA_INDEX}) nor an existing file; "
                              f"{_WHAT_TO_PASS}")
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        return CaptureSource(opencv_path(text, "--source"), live=scheme in LIVE_URL_SCHEMES)
    path = Path(text).expanduser()
    if not path.exists() and _GLOB_CHARS.search(text):
        files = sorted((Path(p) for p in glob.glob(str(path)) if Path(p).suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: natural_key(str(p)))
        if not files:
            raise SourceError(f"{text}: no image files ({', '.join(IMAGE_SUFFIXES)}) match this pattern; "
                              f"{_WHAT_TO_PASS}")
        return ImageFilesSource(files, text)
    if not path.exists():
        raise SourceError(f"{text}: no such file or folder; {_WHAT_TO_PASS}")
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise SourceError(f"{text}: folder has no image files ({', '.join(IMAGE_SUFFIXES)}); "
                              f"{_WHAT_TO_PASS}")
        return ImageFilesSource(files, text)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFilesSource([path], text)  # read as bytes: any name works
    return CaptureSource(opencv_path(text, "--source"), live=False)


def fit_frame(bgr: np.ndarray, width: int, height: int, flip: bool = False) -> np.ndarray:
    """Resize to width x height (0 for one side keeps the aspect ratio, 0 for both keeps the size)
    and mirror horizontally when `flip` (a webcam shown like a mirror)."""
    import cv2

    h, w = bgr.shape[:2]
    if width > 0 and height <= 0:
        height = max(1, round(h * width / w))
    elif height > 0 and width <= 0:
        width = max(1, round(w * height / h))
    if width > 0 and (w, h) != (width, height):
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    if flip:
        bgr = cv2.flip(bgr, 1)
    return bgr


# --- Frames as data (int8 calibration) -----------------------------------------------------------

def _spread(items: list, limit: int | None) -> list:
    """At most `limit` items, evenly spread (so calibration sees a whole video, not its start)."""
    if limit is None or len(items) <= limit:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def _decoded_rgb(data: bytes, name: str) -> np.ndarray:
    rgb = decode_image(data, rgb=True)
    if rgb is None:
        raise SourceError(f"{name}: not a decodable image")
    return rgb


TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def _iter_tar_images(path: Path, limit: int | None) -> Iterator[np.ndarray]:
    """Images of a tar archive (e.g. Oxford Hands' hand_dataset.tar.gz), evenly spread: one pass lists
    them, a second streams the chosen ones."""
    try:
        with tarfile.open(path) as archive:
            names = sorted(m.name for m in archive if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES))
        wanted = set(_spread(names, limit))
        with tarfile.open(path) as archive:
            for member in archive:
                if member.name in wanted:
                    yield _decoded_rgb(archive.extractfile(member).read(), f"{path}:{member.name}")
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise SourceError(f"{path}: cannot read tar archive ({exc})") from exc


def iter_rgb_frames(source: str | Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a video, an image, a folder or glob of images, an EgoHands zip or a tar
    archive of images: at most `limit`, evenly spread over it."""
    import cv2

    source = str(source)
    path = Path(source)
    if source.lower().endswith(TAR_SUFFIXES):
        yield from _iter_tar_images(path, limit)
    elif path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                names = sorted(n for n in archive.namelist() if n.lower().endswith(IMAGE_SUFFIXES))
                for name in _spread(names, limit):
                    yield _decoded_rgb(archive.read(name), f"{path}:{name}")
        except (OSError, zipfile.BadZipFile) as exc:
            raise SourceError(f"{path}: cannot read zip ({exc})") from exc
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(opencv_path(source, "video"))
        if not capture.isOpened():
            raise SourceError(f"{source}: cannot open video")
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
            raise SourceError(f"{source}: no images found (expected a video, an image, a folder or a glob)")
        for file in _spread(files, limit):
            yield _decoded_rgb(file.read_bytes(), str(file))
