"""EgoHands zip -> images/<split>/*.jpg + <split>_labels.csv, split by video.

The zip holds `_LABELLED_SAMPLES/<VIDEO>/frame_NNNN.jpg` (100 labelled frames per video) and one
`polygons.mat` per video: a 1xN MATLAB struct array `polygons`, one record per frame in sorted file
name order, fields myleft/myright/yourleft/yourright, each an Nx2 float (x, y) array or empty.
Frames are read straight from the zip (no extraction) and copied byte for byte (no re-encode).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import io
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.common.errors import UserError
from utils.common.fileio import atomic_path
from utils.data import splits as _splits
from utils.data.jpeg import JpegHeaderError, jpeg_is_complete, jpeg_size
from utils.data.labels_csv import WRITTEN_COLUMNS
from utils.data.splits import (  # noqa: F401  (re-exported: the EgoHands API predates utils.data.splits)
    DEFAULT_FRACTIONS,
    SPLITS,
    SplitOutputs,
    csv_path,
    images_path,
    split_counts,
    split_outputs,
)

# The original project's download URL. The server may now redirect elsewhere; the Internet Archive
# keeps a byte-identical copy (EGOHANDS_MIRROR_URL), usable with --url.
EGOHANDS_URL = "http://vision.soic.indiana.edu/egohands_files/egohands_data.zip"
EGOHANDS_MIRROR_URL = ("http://web.archive.org/web/20200713164330id_/"
                       "http://vision.soic.indiana.edu/egohands_files/egohands_data.zip")
EGOHANDS_ZIP_NAME = "egohands_data.zip"
EGOHANDS_SIZE = 1_348_523_350  # bytes of the official zip
# No sha256 of the official zip is published and none could be verified here, so none is pinned:
# the size is checked and the computed sha256 is printed; pass --sha256 to enforce one.
EGOHANDS_SHA256: str | None = None

LABELLED_DIR = "_LABELLED_SAMPLES"
POLYGONS_NAME = "polygons.mat"
HAND_FIELDS = ("myleft", "myright", "yourleft", "yourright")  # polygons.mat field order = class ids 1..4
HAND_CLASS = "hand"
SOURCE = "egohands"  # the labels CSV's source column and the records' image/source
CSV_COLUMNS = WRITTEN_COLUMNS

# Twice the signed area below which a polygon counts as flat (collinear or collapsed by clipping).
_MIN_AREA2 = 1e-9
_MEMBER_RE = re.compile(rf"^(?:.*/)?{LABELLED_DIR}/([^/]+)/([^/]+)$")


class EgoHandsError(UserError):
    """Bad EgoHands input or output location; the message names the file and what to do."""


def class_names(num_classes: int) -> list[str]:
    """Class names for --classes 1 ('hand') or 4 (the polygon fields, in label-map id order)."""
    if num_classes == 1:
        return [HAND_CLASS]
    if num_classes == 4:
        return list(HAND_FIELDS)
    raise ValueError(f"num_classes must be 1 or 4, got {num_classes}")


# ----------------------------------------------------------------------------- polygons -> boxes

def polygons_to_boxes(polygons: Sequence[np.ndarray], width: int | np.ndarray,
                      height: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer pixel boxes (xmin, ymin, xmax, ymax) around polygons, all at once.

    `polygons` are Nx2 (x, y) arrays (empty when a hand is absent); `width`/`height` are scalars or one
    per polygon. Points with a NaN/inf coordinate are dropped, the rest clipped to [0, W] x [0, H];
    a polygon left with < 3 points or zero area is dropped. Hands touching an edge are kept (the
    original dropped those at the left/top edge). The box is the smallest integer box holding the
    clipped points: floor of the minimum, ceil of the maximum (integer vertices map to themselves).
    Returns (boxes int64 [K, 4], indices of the kept polygons [K]).
    """
    n = len(polygons)
    arrays = []
    for i, poly in enumerate(polygons):
        arr = np.asarray(poly, dtype=np.float64)
        if arr.size == 0:
            arr = arr.reshape(0, 2)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"polygon {i}: expected an Nx2 array of (x, y), got shape {arr.shape}")
        arrays.append(arr)
    counts = np.array([len(a) for a in arrays], dtype=np.int64)
    if n == 0 or counts.sum() == 0:
        return np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64)
    points = np.concatenate(arrays)
    owner = np.repeat(np.arange(n), counts)
    finite = np.isfinite(points).all(axis=1)
    points, owner = points[finite], owner[finite]
    widths = np.broadcast_to(np.asarray(width, dtype=np.float64), (n,))[owner]
    heights = np.broadcast_to(np.asarray(height, dtype=np.float64), (n,))[owner]
    x = np.clip(points[:, 0], 0.0, widths)
    y = np.clip(points[:, 1], 0.0, heights)

    counts = np.bincount(owner, minlength=n)
    starts = np.cumsum(counts) - counts
    # Shoelace: each vertex pairs with the next one of its own polygon, the last with the first.
    nxt = np.arange(len(x)) + 1
    last = starts[counts > 0] + counts[counts > 0] - 1
    nxt[last] = starts[counts > 0]
    area2 = np.bincount(owner, weights=x * y[nxt] - x[nxt] * y, minlength=n)
    keep = np.flatnonzero((counts >= 3) & (np.abs(area2) > _MIN_AREA2))
    if keep.size == 0:
        return np.zeros((0, 4), dtype=np.int64), keep
    # Compact to the kept polygons' points so each reduceat segment is exactly one polygon.
    in_kept = np.zeros(n, dtype=bool)
    in_kept[keep] = True
    xk, yk = x[in_kept[owner]], y[in_kept[owner]]
    kept_starts = np.cumsum(counts[keep]) - counts[keep]
    boxes = np.stack([np.floor(np.minimum.reduceat(xk, kept_starts)),
                      np.floor(np.minimum.reduceat(yk, kept_starts)),
                      np.ceil(np.maximum.reduceat(xk, kept_starts)),
                      np.ceil(np.maximum.reduceat(yk, kept_starts))], axis=1)
    return boxes.astype(np.int64), keep


# ----------------------------------------------------------------------------- reading the zip

@dataclass(frozen=True)
class Video:
    """One video folder inside the zip: its polygons.mat member and frame members (sorted by name)."""
    name: str
    mat_member: str
    frame_members: tuple[str, ...]


def index_videos(names: Iterable[str], source: str) -> dict[str, Video]:
    """Videos found among zip member names. Raises EgoHandsError if none, or one lacks polygons.mat."""
    mats: dict[str, str] = {}
    frames: dict[str, list[str]] = {}
    for name in names:
        match = _MEMBER_RE.match(name)
        if not match:
            continue
        video, base = match.groups()
        if base == POLYGONS_NAME:
            mats[video] = name
            frames.setdefault(video, [])
        elif base.lower().endswith(".jpg"):
            frames.setdefault(video, []).append(name)
    if not frames:
        raise EgoHandsError(f"{source}: no {LABELLED_DIR}/<VIDEO>/ folders in the zip; "
                            "is this the EgoHands egohands_data.zip?")
    missing = sorted(set(frames) - set(mats))
    if missing:
        raise EgoHandsError(f"{source}: video folder {LABELLED_DIR}/{missing[0]}/ has no {POLYGONS_NAME}"
                            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; "
                            "the zip is incomplete, re-download it")
    return {v: Video(v, mats[v], tuple(sorted(frames[v], key=lambda m: m.rsplit("/", 1)[-1])))
            for v in sorted(frames)}


def read_polygons(mat_bytes: bytes, source: str) -> list[list[np.ndarray]]:
    """polygons.mat -> per frame record, the 4 hand polygons in HAND_FIELDS order."""
    from scipy.io import loadmat  # scipy.io pulls in a lot: only the converter needs it

    try:
        mat = loadmat(io.BytesIO(mat_bytes))
    except Exception as exc:  # scipy raises several types for a damaged file
        raise EgoHandsError(f"{source}: cannot read the MATLAB file ({exc}); re-download the zip") from exc
    polygons = mat.get("polygons")
    names = getattr(getattr(polygons, "dtype", None), "names", None) or ()
    absent = [f for f in HAND_FIELDS if f not in names]
    if polygons is None or absent:
        raise EgoHandsError(f"{source}: expected a struct array 'polygons' with fields "
                            f"{', '.join(HAND_FIELDS)}; missing {absent or ['polygons']}")
    return [[np.asarray(record[f]) for f in HAND_FIELDS] for record in np.ravel(polygons)]


def output_filename(video: str, frame_member: str, prefix: str = "") -> str:
    """images/<split>/ file name of a frame: <prefix><VIDEO>_frame_NNNN.jpg (frame names repeat across
    videos; the prefix keeps sources apart in a mixed data set)."""
    return f"{prefix}{video}_{frame_member.rsplit('/', 1)[-1]}"


def open_zip(zip_path: str | Path, flag: str = "--zip") -> zipfile.ZipFile:
    """The EgoHands zip; `flag` is how the user names it (--zip, --egohands-zip, EGOHANDS_ZIP=PATH)."""
    from utils.data.download import archive_kind

    try:
        return zipfile.ZipFile(zip_path)
    except FileNotFoundError as exc:
        raise EgoHandsError(f"{zip_path}: no such file; pass the EgoHands zip with {flag}") from exc
    except (zipfile.BadZipFile, OSError) as exc:
        kind = archive_kind(zip_path)
        if kind not in (None, "zip"):
            raise EgoHandsError(f"{zip_path}: a {kind} archive, not the EgoHands zip (the Oxford Hands archive?); "
                                f"pass egohands_data.zip with {flag}") from exc
        raise EgoHandsError(f"{zip_path}: not a readable zip file ({exc}); the download is truncated "
                            "or corrupt: delete it and download again") from exc


def convert_video(zip_path: str, video: Video, images_dir: str, num_classes: int, prefix: str = "",
                  source: str = SOURCE) -> list[tuple]:
    """Copy one video's frames into images_dir and return its CSV rows (frame order, field order).

    Runs in a worker thread: opens its own ZipFile (one open file handle per thread).
    """
    names = class_names(num_classes)
    rows: list[tuple] = []
    with open_zip(zip_path) as zf:
        mat_source = f"{zip_path}:{video.mat_member}"
        try:
            records = read_polygons(zf.read(video.mat_member), mat_source)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise EgoHandsError(f"{mat_source}: cannot read from the zip ({exc}); re-download it") from exc
        if len(records) != len(video.frame_members):
            raise EgoHandsError(f"{mat_source}: {len(records)} polygon records for "
                                f"{len(video.frame_members)} frames in {video.name}/; annotations and "
                                "frames do not match, re-download the zip")
        sizes, filenames = [], []
        out_dir = Path(images_dir)
        for member in video.frame_members:
            try:
                data = zf.read(member)  # checks the member's CRC
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise EgoHandsError(f"{zip_path}:{member}: cannot read from the zip ({exc}); "
                                    "re-download it") from exc
            try:
                sizes.append(jpeg_size(data))
            except JpegHeaderError as exc:
                raise EgoHandsError(f"{zip_path}:{member}: {exc}; re-download the zip") from exc
            if not jpeg_is_complete(data):  # a cut-off frame: caught here, not at the record step
                raise EgoHandsError(f"{zip_path}:{member}: the JPEG is truncated (no end-of-image marker); "
                                    "re-download the zip")
            filename = output_filename(video.name, member, prefix)
            (out_dir / filename).write_bytes(data)
            filenames.append(filename)
    polygons = [poly for record in records for poly in record]
    frame_of = np.repeat(np.arange(len(records)), len(HAND_FIELDS))
    size_arr = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    try:
        boxes, kept = polygons_to_boxes(polygons, size_arr[frame_of, 0], size_arr[frame_of, 1])
    except ValueError as exc:
        frame = None
        match = re.match(r"polygon (\d+)", str(exc))
        if match:
            frame = video.frame_members[int(match.group(1)) // len(HAND_FIELDS)]
        raise EgoHandsError(f"{mat_source}: {exc}{f' (frame {frame})' if frame else ''}") from exc
    for (xmin, ymin, xmax, ymax), k in zip(boxes.tolist(), kept.tolist(), strict=True):
        frame = k // len(HAND_FIELDS)
        label = names[0] if num_classes == 1 else names[k % len(HAND_FIELDS)]
        width, height = sizes[frame]
        rows.append((filenames[frame], width, height, label, xmin, ymin, xmax, ymax, source))
    return rows


# ----------------------------------------------------------------------------- splitting

def split_videos(videos: Sequence[str], fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
                 explicit: Mapping[str, Sequence[str] | None] | None = None) -> dict[str, list[str]]:
    """Assign whole videos to train/test/eval, so no video's frames land in two splits.

    Default: shuffle the sorted names with `seed` and cut by split_counts(). With explicit lists (split
    -> names; None = not given): test/eval get exactly their lists (empty when not given), train gets
    its list or, when not given, every video not named elsewhere. Raises EgoHandsError for an unknown
    video or one named in two splits.
    """
    return _splits.split_groups(videos, fractions, seed, explicit, what="video", error=EgoHandsError)


# ----------------------------------------------------------------------------- the whole conversion

@dataclass
class SplitResult:
    videos: list[str]
    images: int = 0
    rows: list[tuple] = field(default_factory=list)

    @property
    def boxes(self) -> int:
        return len(self.rows)


def ensure_writable_dir(path: Path, flag: str = "--output-dir") -> None:
    """Create `path` and prove a file can be written there, before any long work starts."""
    _splits.ensure_writable_dir(path, flag, error=EgoHandsError)


def convert_zip(zip_path: str | Path, output_dir: str | Path, splits: Mapping[str, Sequence[str]],
                num_classes: int = 1, workers: int = 2, progress: bool | None = None
                ) -> dict[str, SplitResult]:
    """Write images/<split>/ and <split>_labels.csv under output_dir for the given video splits.

    All outputs are built in temporaries and renamed into place only when every video converted, so a
    failure leaves the previous outputs untouched and a re-run gives the same files.
    """
    ensure_writable_dir(Path(output_dir))
    with split_outputs(output_dir, error=EgoHandsError) as outputs:
        return convert_zip_into(outputs, zip_path, splits, num_classes, workers, progress)


def convert_zip_into(outputs: SplitOutputs, zip_path: str | Path, splits: Mapping[str, Sequence[str]],
                     num_classes: int = 1, workers: int = 2, progress: bool | None = None,
                     prefix: str = "", source: str = SOURCE) -> dict[str, SplitResult]:
    """Copy the frames of the given video splits into `outputs` and add their rows (see utils.data.splits).

    `prefix` starts every image file name and `source` fills the CSV's source column (mixed data sets).
    """
    from tqdm import tqdm

    with open_zip(zip_path) as zf:
        videos = index_videos(zf.namelist(), str(zip_path))
    results = {s: SplitResult(videos=list(splits.get(s, []))) for s in SPLITS}
    unknown = sorted({v for r in results.values() for v in r.videos} - set(videos))
    if unknown:
        raise EgoHandsError(f"{zip_path}: has no video {unknown[0]!r}; it has {', '.join(videos)}")
    jobs = [(s, videos[v]) for s in SPLITS for v in results[s].videos]
    total = sum(len(video.frame_members) for _, video in jobs)

    with contextlib.ExitStack() as stack:
        rows_of: dict[str, list[tuple]] = {}
        # disable=None: tqdm shows the bar only on a terminal.
        bar = stack.enter_context(tqdm(total=total, unit="img", desc=f"clean {source}",
                                       disable=None if progress is None else not progress))
        args = [(str(zip_path), video, str(outputs.image_dir(split)), num_classes, prefix, source)
                for split, video in jobs]
        if workers <= 1 or len(jobs) <= 1:
            for (_, video), arg in zip(jobs, args, strict=True):
                rows_of[video.name] = convert_video(*arg)
                bar.update(len(video.frame_members))
        else:
            # Threads: the work is reading zip members (CRC) and writing files, which release the GIL;
            # a process pool's start-up cost more than it saved on the 2-video sample.
            pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(min(workers, len(jobs))))
            stack.callback(pool.shutdown, cancel_futures=True)  # on an error, skip the videos not started
            futures = {pool.submit(convert_video, *arg): video
                       for (_, video), arg in zip(jobs, args, strict=True)}
            for future in concurrent.futures.as_completed(futures):
                video = futures[future]
                rows_of[video.name] = future.result()
                bar.update(len(video.frame_members))
    for split in SPLITS:
        result = results[split]
        result.images = sum(len(videos[v].frame_members) for v in result.videos)
        result.rows = [row for v in result.videos for row in rows_of[v]]
        outputs.rows[split].extend(result.rows)
    return results


# ----------------------------------------------------------------------------- visualisation

_COLOURS = {HAND_CLASS: (0, 255, 0), "myleft": (255, 128, 0), "myright": (0, 128, 255),
            "yourleft": (255, 0, 255), "yourright": (0, 255, 255)}


def draw_boxes(image: np.ndarray, rows: Sequence[tuple]) -> np.ndarray:
    """A copy of a BGR image with the CSV rows' boxes and class names drawn on it."""
    import cv2

    out = image.copy()
    for row in rows:
        label, (xmin, ymin, xmax, ymax) = row[3], row[4:8]
        colour = _COLOURS.get(label, (0, 0, 255))
        cv2.rectangle(out, (int(xmin), int(ymin)), (int(xmax) - 1, int(ymax) - 1), colour, 2)
        cv2.putText(out, str(label), (int(xmin) + 2, max(int(ymin) - 6, 14)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6, colour, 2, cv2.LINE_AA)
    return out


def write_visualizations(output_dir: str | Path, results: Mapping[str, SplitResult], count: int,
                         dest: str | Path) -> list[Path]:
    """Draw the boxes on `count` labelled frames spread over all splits; write PNGs into `dest`.

    `dest` is replaced as a whole, so PNGs of an earlier run never linger.
    """
    import cv2

    frames: list[tuple[str, str]] = []
    by_frame: dict[tuple[str, str], list[tuple]] = {}
    for split in SPLITS:
        for row in results[split].rows if split in results else []:
            key = (split, row[0])
            if key not in by_frame:
                frames.append(key)
            by_frame.setdefault(key, []).append(row)
    if count <= 0 or not frames:
        return []
    picks = sorted({int(i) for i in np.linspace(0, len(frames) - 1, min(count, len(frames)))})
    dest = Path(dest)
    written: list[Path] = []
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        for i in picks:
            split, filename = frames[i]
            source = images_path(Path(output_dir), split) / filename
            image = cv2.imread(str(source), cv2.IMREAD_COLOR)
            if image is None:
                raise EgoHandsError(f"{source}: cannot decode the image to visualise it")
            name = f"{split}_{Path(filename).stem}.png"
            ok, png = cv2.imencode(".png", draw_boxes(image, by_frame[(split, filename)]))
            if not ok:
                raise EgoHandsError(f"{dest / name}: PNG encoding failed")
            (tmp / name).write_bytes(png.tobytes())
            written.append(dest / name)
    return written
