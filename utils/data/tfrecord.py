"""<split>_labels.csv + images -> TFRecords of tf.train.Example in the TF Object Detection API's keys.

Writing: the CSV is validated as a whole first (pandas); a thread pool reads, checks and decodes
each image once (OpenCV); the parent builds and writes the Examples. Reading: parse_example() and
read_examples() give the same keys back as NumPy, for training and evaluation code.
Boxes in records are normalized to [0, 1]; class labels are label-map ids (1-based).
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utils.common.errors import UserError
from utils.common import config
from utils.data.jpeg import jpeg_is_complete, jpeg_size
from utils.common.fileio import atomic_path

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_FILENAME = "image/filename"
IMAGE_SOURCE_ID = "image/source_id"
BBOX_XMIN = "image/object/bbox/xmin"
BBOX_YMIN = "image/object/bbox/ymin"
BBOX_XMAX = "image/object/bbox/xmax"
BBOX_YMAX = "image/object/bbox/ymax"
CLASS_TEXT = "image/object/class/text"
CLASS_LABEL = "image/object/class/label"
BBOX_KEYS = (BBOX_XMIN, BBOX_YMIN, BBOX_XMAX, BBOX_YMAX)
FEATURE_KEYS = (IMAGE_ENCODED, IMAGE_FORMAT, IMAGE_HEIGHT, IMAGE_WIDTH, IMAGE_FILENAME, IMAGE_SOURCE_ID,
                *BBOX_KEYS, CLASS_TEXT, CLASS_LABEL)

RECORD_SUFFIX = ".record"
DEFAULT_SHARD_SIZE = 1000  # images per shard; the full EgoHands train split (~3800 frames) -> 4 shards
CSV_COLUMNS = config.LABELS_CSV_COLUMNS
_BATCH = 16  # images per worker task: fewer round trips, still a smooth progress bar
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})$")


class TFRecordError(UserError):
    """Bad CSV row, image or output location; the message names the file and what to do."""


@dataclass(frozen=True)
class ImageLabels:
    """One image's rows of a labels CSV: pixel boxes (xmin, ymin, xmax, ymax), class names and ids."""
    filename: str
    width: int
    height: int
    boxes: np.ndarray  # float64 [N, 4]
    classes: tuple[str, ...]
    labels: tuple[int, ...]


# ----------------------------------------------------------------------------- CSV validation

def read_labels_csv(path: str | os.PathLike, name_to_id: Mapping[str, int]) -> list[ImageLabels]:
    """Read and validate a labels CSV; one ImageLabels per image, in order of first appearance.

    Checks every row: required columns, numbers, width/height > 0 and the same for all rows of an
    image, 0 <= xmin < xmax <= width, 0 <= ymin < ymax <= height, class in the label map. The first
    bad row is reported as `<csv>: line N: ...`.
    """
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"filename": str, "class": str}, keep_default_na=False)
    except FileNotFoundError as exc:
        raise TFRecordError(f"{path}: no such file; run egohands_dataset_clean.py first or pass "
                            "--input-dir") from exc
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TFRecordError(f"{path}: not a readable CSV ({str(exc).strip().splitlines()[0]}); regenerate it with "
                            "egohands_dataset_clean.py") from exc
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise TFRecordError(f"{path}: missing column(s) {', '.join(missing)}; expected header "
                            f"{','.join(CSV_COLUMNS)}")
    numeric = {c: pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
               for c in ("width", "height", "xmin", "ymin", "xmax", "ymax")}

    def fail(mask: np.ndarray, what: Callable[[int], str]) -> None:
        bad = np.flatnonzero(mask)
        if bad.size:
            i = int(bad[0])
            more = f" ({bad.size - 1} more bad rows)" if bad.size > 1 else ""
            raise TFRecordError(f"{path}: line {i + 2}: {what(i)}{more}; fix or remove the row")

    values = np.stack(list(numeric.values()), axis=1)
    fail(~np.isfinite(values).all(axis=1), lambda i: "a size or box value is missing or not a number")
    w, h = numeric["width"], numeric["height"]
    fail((w <= 0) | (h <= 0) | (w != np.round(w)) | (h != np.round(h)),
         lambda i: f"width/height {df['width'][i]}x{df['height'][i]} are not positive integers")
    x0, y0, x1, y1 = numeric["xmin"], numeric["ymin"], numeric["xmax"], numeric["ymax"]
    fail(~((0 <= x0) & (x0 < x1) & (x1 <= w)),
         lambda i: f"box x range {df['xmin'][i]}..{df['xmax'][i]} is not within 0 <= xmin < xmax <= "
                   f"width={df['width'][i]}")
    fail(~((0 <= y0) & (y0 < y1) & (y1 <= h)),
         lambda i: f"box y range {df['ymin'][i]}..{df['ymax'][i]} is not within 0 <= ymin < ymax <= "
                   f"height={df['height'][i]}")
    fail((df["filename"].str.strip() == "").to_numpy(), lambda i: "empty filename")
    fail(~df["class"].isin(list(name_to_id)).to_numpy(),
         lambda i: f"class {df['class'][i]!r} is not in the label map ({', '.join(name_to_id)}); "
                   "pick the matching --classes or --label-map")

    sizes = pd.DataFrame({"filename": df["filename"], "w": w, "h": h})
    first = sizes.groupby("filename", sort=False).transform("first")
    fail(((first["w"] != w) | (first["h"] != h)).to_numpy(),
         lambda i: f"{df['filename'][i]} has a different width/height than on an earlier row")

    boxes = np.stack([x0, y0, x1, y1], axis=1)
    images = []
    for filename, index in df.groupby("filename", sort=False).indices.items():
        classes = tuple(df["class"].to_numpy()[index])
        images.append(ImageLabels(filename, int(w[index[0]]), int(h[index[0]]), boxes[index], classes,
                                  tuple(name_to_id[c] for c in classes)))
    return images


# ----------------------------------------------------------------------------- images (worker side)

def image_format(data: bytes) -> str | None:
    """'jpeg' or 'png' from the magic bytes; None for anything else."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    return None


def load_image(path: str, width: int, height: int, csv_name: str = "the CSV") -> tuple[bytes, str]:
    """Read an image, check it decodes completely and has the CSV's size; return (bytes, format).

    The one decode per image in the pipeline. A JPEG is decoded at 1/8 scale in grayscale: libjpeg
    still entropy-decodes every block (where corruption shows) but skips most of the inverse DCT and
    the colour conversion, ~2x faster than a full decode; its size comes from the frame header.
    """
    import cv2

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TFRecordError(f"{path}: cannot read the image ({exc.strerror or exc}); is {csv_name} from "
                            "the same run as the images?") from exc
    fmt = image_format(data)
    if fmt is None:
        raise TFRecordError(f"{path}: not a JPEG or PNG image; remove it and its rows from {csv_name}")
    corrupt = f"{path}: image does not decode (corrupt {fmt}); re-create it with egohands_dataset_clean.py"
    buffer = np.frombuffer(data, np.uint8)
    if fmt == "jpeg":
        # OpenCV accepts some damaged JPEGs with only a warning; TensorFlow rejects a missing end marker.
        if not jpeg_is_complete(data):
            raise TFRecordError(f"{path}: JPEG is truncated or corrupt (no end-of-image marker); re-create "
                                "it with egohands_dataset_clean.py")
        actual = jpeg_size(data)
        image = cv2.imdecode(buffer, cv2.IMREAD_REDUCED_GRAYSCALE_8)
        if image is None or image.shape[:2] != (-(-actual[1] // 8), -(-actual[0] // 8)):
            raise TFRecordError(corrupt)
    else:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise TFRecordError(corrupt)
        actual = (image.shape[1], image.shape[0])
    if actual != (width, height):
        raise TFRecordError(f"{path}: image is {actual[0]}x{actual[1]} but {csv_name} says "
                            f"{width}x{height}; regenerate the CSV")
    return data, fmt


def load_images(jobs: Sequence[tuple[str, int, int, str]]) -> list[tuple[bytes, str]]:
    """load_image() over a batch (one worker task)."""
    return [load_image(*job) for job in jobs]


def _ordered_results(pool: concurrent.futures.Executor, fn: Callable, items: Iterable[Any],
                     window: int) -> Iterator[Any]:
    """fn(item) in order, at most `window` tasks in flight (bounded memory). Submits the first
    window before returning, so the workers start while the caller does other things."""
    items = iter(items)
    pending = collections.deque(pool.submit(fn, item) for item in itertools.islice(items, window))

    def results() -> Iterator[Any]:
        try:
            while pending:
                result = pending.popleft().result()
                for item in items:
                    pending.append(pool.submit(fn, item))
                    break
                yield result
        finally:
            for future in pending:
                future.cancel()

    return results()


# ----------------------------------------------------------------------------- examples

def build_example(data: bytes, fmt: str, labels: ImageLabels) -> Any:
    """A tf.train.Example for one image, boxes normalized by its width/height."""
    import tensorflow as tf

    def bytes_feature(values: Sequence[bytes]) -> Any:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))

    def float_feature(values: np.ndarray) -> Any:
        return tf.train.Feature(float_list=tf.train.FloatList(value=values.tolist()))

    def int_feature(values: Sequence[int]) -> Any:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    boxes = np.asarray(labels.boxes, dtype=np.float64).reshape(-1, 4)
    scale = np.array([labels.width, labels.height, labels.width, labels.height], dtype=np.float64)
    norm = boxes / scale
    name = labels.filename.encode("utf-8")
    feature = {
        IMAGE_ENCODED: bytes_feature([data]),
        IMAGE_FORMAT: bytes_feature([fmt.encode()]),
        IMAGE_HEIGHT: int_feature([labels.height]),
        IMAGE_WIDTH: int_feature([labels.width]),
        IMAGE_FILENAME: bytes_feature([name]),
        IMAGE_SOURCE_ID: bytes_feature([name]),
        BBOX_XMIN: float_feature(norm[:, 0]),
        BBOX_YMIN: float_feature(norm[:, 1]),
        BBOX_XMAX: float_feature(norm[:, 2]),
        BBOX_YMAX: float_feature(norm[:, 3]),
        CLASS_TEXT: bytes_feature([c.encode("utf-8") for c in labels.classes]),
        CLASS_LABEL: int_feature(labels.labels),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def parse_example(serialized: bytes) -> dict[str, Any]:
    """A serialized tf.train.Example from these records -> dict keyed like FEATURE_KEYS.

    image/encoded: bytes; image/format, image/filename, image/source_id: str; image/height, image/width:
    int; image/object/bbox/*: float32 [N] normalized; image/object/class/text: str array [N];
    image/object/class/label: int64 [N]. Raises TFRecordError when a key is missing.
    """
    import tensorflow as tf

    features = tf.train.Example.FromString(serialized).features.feature
    missing = [k for k in (IMAGE_ENCODED, IMAGE_HEIGHT, IMAGE_WIDTH) if k not in features]
    if missing:
        raise TFRecordError(f"record lacks {', '.join(missing)}; not written by generate_tfrecord.py?")

    def bytes_values(key: str) -> list[bytes]:
        return list(features[key].bytes_list.value) if key in features else []

    def first_text(key: str) -> str:
        values = bytes_values(key)
        return values[0].decode("utf-8") if values else ""

    out: dict[str, Any] = {
        IMAGE_ENCODED: bytes_values(IMAGE_ENCODED)[0],
        IMAGE_FORMAT: first_text(IMAGE_FORMAT),
        IMAGE_HEIGHT: int(features[IMAGE_HEIGHT].int64_list.value[0]),
        IMAGE_WIDTH: int(features[IMAGE_WIDTH].int64_list.value[0]),
        IMAGE_FILENAME: first_text(IMAGE_FILENAME),
        IMAGE_SOURCE_ID: first_text(IMAGE_SOURCE_ID),
    }
    for key in BBOX_KEYS:
        out[key] = np.asarray(features[key].float_list.value if key in features else [], dtype=np.float32)
    out[CLASS_TEXT] = np.asarray([t.decode("utf-8") for t in bytes_values(CLASS_TEXT)], dtype=str)
    out[CLASS_LABEL] = np.asarray(features[CLASS_LABEL].int64_list.value if CLASS_LABEL in features else [],
                                  dtype=np.int64)
    return out


def example_boxes(parsed: Mapping[str, Any]) -> np.ndarray:
    """[N, 4] float32 normalized (ymin, xmin, ymax, xmax), the detector's order, from parse_example()."""
    return np.stack([parsed[BBOX_YMIN], parsed[BBOX_XMIN], parsed[BBOX_YMAX], parsed[BBOX_XMAX]],
                    axis=1).reshape(-1, 4)


def feature_spec() -> dict[str, Any]:
    """The features for tf.io.parse_single_example / parse_example in tf.data input pipelines."""
    import tensorflow as tf

    spec = {IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
            IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="jpeg"),
            IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
            IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
            IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
            IMAGE_SOURCE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
            CLASS_TEXT: tf.io.VarLenFeature(tf.string),
            CLASS_LABEL: tf.io.VarLenFeature(tf.int64)}
    spec.update({key: tf.io.VarLenFeature(tf.float32) for key in BBOX_KEYS})
    return spec


# ----------------------------------------------------------------------------- record files

def shard_paths(output_dir: str | os.PathLike, split: str, num_shards: int) -> list[Path]:
    """data/<split>.record for one shard, else data/<split>.record-0000K-of-0000N."""
    base = Path(output_dir) / f"{split}{RECORD_SUFFIX}"
    if num_shards <= 1:
        return [base]
    return [base.with_name(f"{base.name}-{k:05d}-of-{num_shards:05d}") for k in range(num_shards)]


def record_files(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """The record files of a split (one file or all shards), sorted; [] when there are none."""
    data_dir = Path(data_dir)
    single = data_dir / f"{split}{RECORD_SUFFIX}"
    shards = sorted(p for p in data_dir.glob(f"{split}{RECORD_SUFFIX}-*-of-*") if _SHARD_RE.search(p.name))
    return ([single] if single.exists() else []) + shards


def read_examples(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[dict[str, Any]]:
    """parse_example() over every record of one or more TFRecord files, in file order."""
    import tensorflow as tf

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    for serialized in tf.data.TFRecordDataset([str(p) for p in paths]).as_numpy_iterator():
        yield parse_example(serialized)


@dataclass
class SplitRecords:
    images: int
    boxes: int
    files: list[Path]


def write_split(csv_path: str | os.PathLike, images_dir: str | os.PathLike, output_dir: str | os.PathLike,
                split: str, name_to_id: Mapping[str, int], shard_size: int = DEFAULT_SHARD_SIZE,
                workers: int = 2, progress: bool | None = None) -> SplitRecords:
    """Validate a split's CSV and images and write its record file(s); all or nothing.

    Examples go round-robin into ceil(images / shard_size) shards (one file when it fits). Shards of an
    earlier run with another count are removed once the new files are in place.
    """
    from tqdm import tqdm

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    csv_path, images_dir, output_dir = Path(csv_path), Path(images_dir), Path(output_dir)
    images = read_labels_csv(csv_path, name_to_id)
    jobs = [(str(images_dir / im.filename), im.width, im.height, str(csv_path)) for im in images]
    batches = [jobs[i:i + _BATCH] for i in range(0, len(jobs), _BATCH)]
    paths = shard_paths(output_dir, split, -(-len(images) // shard_size))
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TFRecordError(f"{output_dir}: cannot create the output folder ({exc.strerror or exc}); "
                            "choose another --output-dir") from exc

    for stale in output_dir.glob(f".{split}{RECORD_SUFFIX}*.tmp"):  # left by a killed run
        stale.unlink(missing_ok=True)

    with contextlib.ExitStack() as stack:
        if workers > 1 and len(batches) > 1:
            # Threads, not processes: cv2.imdecode and file reads release the GIL, so 2 threads use both
            # cores (measured 1.85x) without a process pool's start-up and pickling of the image bytes
            # (a spawn pool was slower than 1 thread on the 200-image sample; fork is unsafe with TF).
            pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(min(workers, len(batches))))
            stack.callback(pool.shutdown, cancel_futures=True)
            loaded = _ordered_results(pool, load_images, batches, window=4 * workers)
        else:
            loaded = map(load_images, batches)
        import tensorflow as tf  # imported while the workers decode the first batches

        tmps = [stack.enter_context(atomic_path(p)) for p in paths]
        writers = [tf.io.TFRecordWriter(str(t)) for t in tmps]
        for writer in writers:
            stack.callback(writer.close)  # runs before atomic_path renames (exit order is reversed)
        bar = stack.enter_context(tqdm(total=len(images), unit="img", desc=f"tfrecord {split}",
                                       disable=None if progress is None else not progress))
        index = 0
        for batch in loaded:
            for data, fmt in batch:
                example = build_example(data, fmt, images[index])
                # deterministic: sorted feature-map keys, else the byte order follows the string hash
                # seed and re-runs would not give identical files.
                writers[index % len(writers)].write(example.SerializeToString(deterministic=True))
                index += 1
            bar.update(len(batch))
        for writer in writers:
            writer.flush()
    for stale in set(record_files(output_dir, split)) - set(paths):
        stale.unlink()
    return SplitRecords(images=len(images), boxes=sum(len(im.classes) for im in images), files=paths)
