"""Oxford Hands archive (hand_dataset.tar.gz) -> images/<split>/*.jpg + <split>_labels.csv.

Layout: `hand_dataset/{training,validation,test}_dataset/{training,validation,test}_data/{images,annotations}/`,
one `annotations/<name>.mat` per image holding the MATLAB struct array `boxes` (1xN), fields `a b c d`:
the corners of a possibly rotated hand box, each a 1x2 array in (y, x) order. A box is the min/max
over the corners (x = 2nd coordinate), clipped to the image, rounded to 0.1 px; boxes left without
width or height are dropped and counted. The archive is read as one stream (no extraction): images
go straight to their split folder, only the annotations are kept in memory.
The archive's splits map training -> train, validation -> eval, test -> test; a split the archive
lacks stays empty (and is reported). `carve_eval` can take whole image sources (Buffy_, VOC2010_, ...)
of the training images as the eval split, so near-duplicate frames of one source stay together.
"""
from __future__ import annotations

import io
import os
import random
import re
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.common.errors import UserError
from utils.data.jpeg import JpegHeaderError, jpeg_is_complete, jpeg_size
from utils.data.splits import SPLITS, SplitOutputs, split_outputs

OXFORD_URL = "http://www.robots.ox.ac.uk/~vgg/data/hands/downloads/hand_dataset.tar.gz"
OXFORD_ARCHIVE_NAME = "hand_dataset.tar.gz"
# The official archive's size and checksum could not be verified from here (no network), so none is
# pinned: the download checks the server's Content-Length, prints the sha256, and --expected-size /
# --sha256 enforce values; a truncated archive still fails the conversion with a clear message.
OXFORD_SIZE: int | None = None
OXFORD_SHA256: str | None = None

SOURCE = "oxford"
HAND_CLASS = "hand"
ARCHIVE_SPLITS = {"training": "train", "validation": "eval", "test": "test"}
CORNER_FIELDS = ("a", "b", "c", "d")
BOX_DECIMALS = 1  # 0.1 px: the corner points are sub-pixel floats, finer digits mean nothing

_MEMBER_RE = re.compile(r"^(?:.*/)?(training|validation|test)_dataset/\1_data/(images|annotations)/([^/]+)\.(jpg|mat)$",
                        re.IGNORECASE)
_GROUP_RE = re.compile(r"^(.*?)_?\d+$")


class OxfordError(UserError):
    """Bad Oxford Hands input; the message names the file (archive:member) and what to do."""


# ----------------------------------------------------------------------------- corners -> boxes

def read_corners(mat_bytes: bytes, source: str) -> np.ndarray:
    """An annotation .mat -> float64 [N, 4, 2] corner points (a, b, c, d), each (y, x)."""
    from scipy.io import loadmat  # heavy: only the converter needs it

    try:
        mat = loadmat(io.BytesIO(mat_bytes))
    except Exception as exc:  # scipy raises several types for a damaged file
        raise OxfordError(f"{source}: cannot read the MATLAB file ({exc}); re-download the archive") from exc
    if "boxes" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise OxfordError(f"{source}: no variable 'boxes' (has {found or 'none'}); not an Oxford Hands "
                          "annotation: re-download the archive")
    corners = []
    # The official files hold a cell array of 1x1 structs; a plain struct array is read the same way.
    for i, element in enumerate(np.ravel(mat["boxes"])):
        record = np.ravel(element)[0] if isinstance(element, np.ndarray) and element.size == 1 else element
        names = getattr(getattr(record, "dtype", None), "names", None) or ()
        missing = [f for f in CORNER_FIELDS if f not in names]
        if missing:
            raise OxfordError(f"{source}: box {i + 1} lacks field(s) {', '.join(missing)} (has "
                              f"{', '.join(names) or 'none'}); re-download the archive")
        try:
            points = [np.asarray(record[f], dtype=np.float64).reshape(2) for f in CORNER_FIELDS]
        except (ValueError, TypeError) as exc:
            raise OxfordError(f"{source}: box {i + 1}: a corner is not 2 numbers (y, x); re-download the "
                              "archive") from exc
        corners.append(points)
    return np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2)


def corners_to_boxes(corners: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Axis-aligned pixel boxes (xmin, ymin, xmax, ymax) around [N, 4, 2] (y, x) corners.

    Min/max over the corners, clipped to [0, width] x [0, height], rounded to BOX_DECIMALS. Returns
    (boxes float64 [K, 4], indices of the kept boxes [K], how many were clipped). A box with a NaN
    corner or without width or height after clipping is dropped.
    """
    corners = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2)
    y, x = corners[..., 0], corners[..., 1]
    raw = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1)
    limits = np.array([width, height, width, height], dtype=np.float64)
    boxes = np.round(np.clip(raw, 0.0, limits), BOX_DECIMALS)
    finite = np.isfinite(raw).all(axis=1)
    keep = np.flatnonzero(finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    clipped = int(((raw[keep] < 0) | (raw[keep] > limits)).any(axis=1).sum())
    return boxes[keep], keep, clipped


def image_group(filename: str) -> str:
    """The image source of an Oxford file name: 'Movie_4weds_12.jpg' -> 'Movie_4weds', 'Buffy_1' -> 'Buffy'."""
    stem = Path(filename).stem
    match = _GROUP_RE.match(stem)
    return match.group(1) if match and match.group(1) else stem


def carve_groups(filenames: Iterable[str], fraction: float, seed: int = 0) -> list[str]:
    """Whole image sources whose images make up about `fraction` of `filenames` (deterministic).

    The sources are shuffled with `seed` and taken one by one when that brings the carved count
    closer to the target; at least one source is carved when fraction > 0, never all of them.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"the eval fraction must be in [0, 1), got {fraction}")
    sizes: dict[str, int] = {}
    for name in filenames:
        sizes[image_group(name)] = sizes.get(image_group(name), 0) + 1
    if fraction == 0 or len(sizes) < 2:
        return []
    target = fraction * sum(sizes.values())
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    carved, count = [], 0
    for group in order:
        if len(carved) + 1 < len(sizes) and abs(count + sizes[group] - target) < abs(count - target):
            carved.append(group)
            count += sizes[group]
    if not carved:
        carved = [min(order, key=lambda g: (abs(sizes[g] - target), g))]
    return sorted(carved)


# ----------------------------------------------------------------------------- the archive

@dataclass
class OxfordResult:
    images: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    boxes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    dropped: int = 0               # boxes without width or height after clipping
    clipped: int = 0               # kept boxes that reached outside the image
    archive_splits: list[str] = field(default_factory=list)  # training/validation/test found
    carved: list[str] = field(default_factory=list)          # image sources moved to eval


def _archive_error(archive: Path, exc: BaseException, flag: str = "--archive") -> OxfordError:
    return OxfordError(f"{archive}: truncated or corrupt archive ({type(exc).__name__}: {exc}); delete it "
                       f"and download it again (or pass a whole copy with {flag})")


def open_archive(archive: str | os.PathLike, flag: str = "--archive") -> tarfile.TarFile:
    """The archive as a forward-only stream (gzip or plain tar); `flag` is how the user names it."""
    from utils.data.download import archive_kind

    archive = Path(archive)
    kind = archive_kind(archive)
    if kind in ("zip", "7z", "rar"):
        raise OxfordError(f"{archive}: a {kind} archive, not the Oxford Hands tar.gz"
                          f"{' (the EgoHands zip?)' if kind == 'zip' else ''}; pass hand_dataset.tar.gz with {flag}")
    try:
        return tarfile.open(archive, mode="r|*")
    except FileNotFoundError as exc:
        raise OxfordError(f"{archive}: no such file; pass the Oxford Hands hand_dataset.tar.gz with "
                          f"{flag}") from exc
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise _archive_error(archive, exc, flag) from exc


def convert_archive_into(outputs: SplitOutputs, archive: str | os.PathLike, carve_eval: float = 0.0,
                         seed: int = 0, prefix: str = "", source: str = SOURCE, limit: int | None = None,
                         progress: bool | None = None, flag: str = "--archive") -> OxfordResult:
    """Stream the archive into `outputs` (see utils.data.splits): images and their CSV rows.

    `limit` keeps only the first N images of each archive split (quick checks); `prefix` starts every
    image file name and `source` fills the CSV's source column (mixed data sets).
    """
    from tqdm import tqdm

    archive = Path(archive)
    result = OxfordResult()
    sizes: dict[tuple[str, str], tuple[int, int]] = {}     # (split, stem) -> (width, height), tar order
    corners: dict[tuple[str, str], np.ndarray] = {}
    mat_members: dict[tuple[str, str], str] = {}
    bar = tqdm(unit="img", desc=f"clean {source}", disable=None if progress is None else not progress)
    try:
        with open_archive(archive, flag) as tar, bar:
            for member in tar:
                match = _MEMBER_RE.match(member.name)
                if not match or not member.isfile():
                    continue
                folder, kind, stem, _ = match.groups()
                split = ARCHIVE_SPLITS[folder.lower()]
                if folder.lower() not in result.archive_splits:
                    result.archive_splits.append(folder.lower())
                where = f"{archive}:{member.name}"
                key = (split, stem)
                if kind.lower() == "images":
                    if limit is not None and sum(k[0] == split for k in sizes) >= limit:
                        continue
                    data = tar.extractfile(member).read()
                    try:
                        sizes[key] = jpeg_size(data)
                    except JpegHeaderError as exc:
                        raise OxfordError(f"{where}: {exc}; re-download the archive") from exc
                    if not jpeg_is_complete(data):
                        raise OxfordError(f"{where}: JPEG is truncated (no end-of-image marker); re-download "
                                          "the archive")
                    name = outputs.claim(f"{prefix}{stem}.jpg", where, split)
                    (outputs.image_dir(split) / name).write_bytes(data)
                    bar.update(1)
                else:
                    corners[key] = read_corners(tar.extractfile(member).read(), where)
                    mat_members[key] = member.name
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise _archive_error(archive, exc, flag) from exc
    except OSError as exc:
        if exc.filename:  # writing an output failed: not the archive's fault
            raise
        raise _archive_error(archive, exc, flag) from exc

    if not result.archive_splits:
        raise OxfordError(f"{archive}: no <split>_dataset/<split>_data/images/ folders; is this the Oxford Hands "
                          "hand_dataset.tar.gz?")
    without_mat = [k for k in sizes if k not in corners]
    if without_mat:
        split, stem = without_mat[0]
        raise OxfordError(f"{archive}: image {stem}.jpg ({split}) has no annotations/{stem}.mat"
                          f"{f' (and {len(without_mat) - 1} more)' if len(without_mat) > 1 else ''}; the "
                          "archive is incomplete: re-download it")
    if limit is None:
        without_image = [k for k in corners if k not in sizes]
        if without_image:
            raise OxfordError(f"{archive}:{mat_members[without_image[0]]}: annotation without its image"
                              f"{f' (and {len(without_image) - 1} more)' if len(without_image) > 1 else ''}; "
                              "the archive is incomplete: re-download it")

    if carve_eval > 0:
        result.carved = carve_groups([stem for split, stem in sizes if split == "train"], carve_eval, seed)
    carved = set(result.carved)
    for key, (width, height) in sizes.items():
        split, stem = key
        filename = f"{prefix}{stem}.jpg"
        if split == "train" and image_group(stem) in carved:
            split = "eval"
            outputs.move_image(filename, "train", "eval")
        boxes, keep, clipped = corners_to_boxes(corners[key], width, height)
        result.dropped += len(corners[key]) - len(keep)
        result.clipped += clipped
        result.images[split] += 1
        result.boxes[split] += len(boxes)
        outputs.rows[split].extend((filename, width, height, HAND_CLASS, *box, source) for box in boxes.tolist())
    return result


def convert_archive(archive: str | os.PathLike, output_dir: str | os.PathLike, carve_eval: float = 0.0,
                    seed: int = 0, limit: int | None = None, progress: bool | None = None) -> OxfordResult:
    """images/<split>/ + <split>_labels.csv under output_dir from the archive; all or nothing."""
    with split_outputs(output_dir, error=OxfordError) as outputs:
        return convert_archive_into(outputs, archive, carve_eval, seed, limit=limit, progress=progress)
