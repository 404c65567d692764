"""Evaluate any exported hand model (hand_inference_graph/ format) on labelled images.

Labelled images come from a labels CSV (filename,width,height,class,xmin,ymin,xmax,ymax, pixel boxes)
with an image folder or an EgoHands zip, or from TFRecords written by generate_tfrecord.py.
Metrics are pycocotools' (utils/evaluation/coco.py): AP@0.5, AP@[.5:.95], AR@100, and the
precision-recall curve at IoU 0.5.
"""
from __future__ import annotations

import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.common import config
from utils.common.boxes import normalized_to_pixels
from utils.common.errors import UserError
from utils.runtime.sources import decode_image

CSV_COLUMNS = config.LABELS_CSV_COLUMNS


class EvalDataError(UserError):
    """Labels or images that cannot be evaluated; the message names the file and the fix."""


@dataclass
class LabelledImage:
    name: str
    width: int
    height: int
    boxes: np.ndarray          # [N,4] pixels (xmin, ymin, xmax, ymax)
    class_names: list[str]     # [N]
    load: Callable[[], np.ndarray]  # -> RGB uint8 [H,W,3]
    source: str = config.LEGACY_SOURCE  # the data set it came from (labels CSV source / image/source)


def _decode_rgb(data: bytes, name: str) -> np.ndarray:
    rgb = decode_image(data, rgb=True)
    if rgb is None:
        raise EvalDataError(f"{name}: not a decodable image")
    return rgb


def _image_reader(images: Path) -> Callable[[str], Callable[[], np.ndarray]]:
    """filename -> loader, from a folder or a zip (member found by its path suffix)."""
    if images.suffix.lower() == ".zip":
        try:
            archive = zipfile.ZipFile(images)
        except (OSError, zipfile.BadZipFile) as exc:
            raise EvalDataError(f"{images}: cannot read the zip ({exc})") from exc
        # A label may name a member by any path suffix ('VIDEO/frame_0001.jpg') or by the flat name
        # egohands_dataset_clean.py gives it ('VIDEO_frame_0001.jpg'). A suffix shared by several
        # members ('frame_0001.jpg' is in every video) is ambiguous and maps to None.
        members: dict[str, str | None] = {}
        for member in archive.namelist():
            parts = member.split("/")
            keys = {"/".join(parts[i:]) for i in range(len(parts))}
            if len(parts) >= 2:
                keys.add(f"{parts[-2]}_{parts[-1]}")
            for key in keys:
                members[key] = None if key in members and members[key] != member else member

        def from_zip(filename: str) -> Callable[[], np.ndarray]:
            if filename in members and members[filename] is None:
                raise EvalDataError(f"{images}: {filename!r} matches several members; label with the "
                                    f"video folder, e.g. 'VIDEO/{filename}'")
            member = members.get(filename)
            if member is None:
                raise EvalDataError(f"{images}: no member {filename!r}; are the labels from this zip?")
            return lambda: _decode_rgb(archive.read(member), f"{images}:{member}")
        return from_zip
    if not images.is_dir():
        raise EvalDataError(f"{images}: image folder not found; run `make data` or pass --images")

    def from_folder(filename: str) -> Callable[[], np.ndarray]:
        path = images / filename
        if not path.is_file():
            raise EvalDataError(f"{path}: image listed in the labels is missing; regenerate the split with "
                                f"egohands_dataset_clean.py")
        return lambda: _decode_rgb(path.read_bytes(), str(path))
    return from_folder


def csv_samples(labels_csv: str | Path, images: str | Path, only: str | None = None) -> list[LabelledImage]:
    """One LabelledImage per file of a labels CSV (in order of first appearance)."""
    from utils.data.labels_csv import SOURCE_COLUMN, read_labels_table

    labels_csv = Path(labels_csv)
    df = read_labels_table(labels_csv, error=EvalDataError, missing_hint="run `make data` or pass --labels")
    if only:
        df = df[df["filename"].str.contains(only, regex=False)]
    reader = _image_reader(Path(images))
    samples = []
    for filename, rows in df.groupby("filename", sort=False):
        try:
            boxes = rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy(np.float64)
            width, height = int(rows["width"].iloc[0]), int(rows["height"].iloc[0])
        except ValueError as exc:
            raise EvalDataError(f"{labels_csv}: non-numeric size or box for {filename}") from exc
        samples.append(LabelledImage(filename, width, height, boxes, rows["class"].tolist(), reader(filename),
                                     str(rows[SOURCE_COLUMN].iloc[0])))
    return samples


def record_samples(files: Sequence[str | Path], only: str | None = None) -> list[LabelledImage]:
    """One LabelledImage per TFRecord example (generate_tfrecord.py keys)."""
    from utils.data.tfrecord import (
        CLASS_TEXT,
        IMAGE_ENCODED,
        IMAGE_FILENAME,
        IMAGE_HEIGHT,
        IMAGE_SOURCE,
        IMAGE_WIDTH,
        TFRecordError,
        example_boxes,
        read_examples,
    )

    samples = []
    try:
        for index, parsed in enumerate(read_examples([str(f) for f in files])):
            name = parsed[IMAGE_FILENAME] or f"{Path(files[0]).name}#{index}"
            if only and only not in name:
                continue
            width, height = parsed[IMAGE_WIDTH], parsed[IMAGE_HEIGHT]
            boxes = normalized_to_pixels(example_boxes(parsed), width, height)
            data = parsed[IMAGE_ENCODED]
            samples.append(LabelledImage(name, width, height, boxes, [str(c) for c in parsed[CLASS_TEXT]],
                                         lambda data=data, name=name: _decode_rgb(data, name),
                                         parsed[IMAGE_SOURCE] or config.LEGACY_SOURCE))
    except TFRecordError as exc:
        raise EvalDataError(f"{files[0]}: {exc}") from exc
    except Exception as exc:  # tf.errors.DataLossError etc.: not a TFRecord file
        if exc.__class__.__module__.startswith("tensorflow"):
            raise EvalDataError(f"{files[0]}: not a readable TFRecord file ({exc.__class__.__name__})") from exc
        raise
    return samples


def choose_class_mode(samples: Sequence[LabelledImage], model_classes: Mapping[int, str]) -> tuple[bool, str]:
    """(class_agnostic, why): class-aware only when the model knows every labelled class name."""
    labelled = sorted({c for s in samples for c in s.class_names})
    known = set(model_classes.values())
    if set(labelled) <= known:
        return False, f"class-aware: labels {labelled} are the model's classes"
    return True, (f"class-agnostic: labels {labelled} are not all among the model's classes "
                  f"{sorted(known)}, so every box counts as one 'hand' class")


def evaluate_detector(detector, samples: Sequence[LabelledImage], class_agnostic: bool,
                      progress: bool = True) -> dict:
    """Run `detector` (detector_utils) over the samples; pycocotools metrics plus timing.

    The result also holds `per_source`: the same metrics (without the curve) for the images of each
    source (egohands, oxford, ...), in order of first appearance; one entry when all share a source.
    """
    from tqdm import tqdm

    from utils.evaluation.coco import ImageAnnotations, coco_evaluate, detections_to_annotations

    if not samples:
        raise EvalDataError("no labelled images to evaluate (empty split or --only matched nothing)")
    name_to_id = {name: i for i, name in detector.class_names.items()}
    truth, found, seconds = [], [], 0.0
    for sample in tqdm(samples, unit="img", desc="evaluate", disable=not progress):
        rgb = sample.load()
        if rgb.shape[:2] != (sample.height, sample.width):
            raise EvalDataError(f"{sample.name}: image is {rgb.shape[1]}x{rgb.shape[0]} but the labels say "
                                f"{sample.width}x{sample.height}")
        start = time.perf_counter()
        detections = detector.detect(rgb)
        seconds += time.perf_counter() - start
        classes = (np.ones(len(sample.class_names), np.int64) if class_agnostic
                   else np.array([name_to_id[c] for c in sample.class_names], np.int64))
        truth.append(ImageAnnotations(sample.width, sample.height, sample.boxes, classes))
        found.append(detections_to_annotations(detections, sample.width, sample.height))
    names = {1: "hand"} if class_agnostic else dict(detector.class_names)
    metrics = coco_evaluate(truth, found, names, class_agnostic=class_agnostic)
    metrics["ms_per_image"] = round(1000 * seconds / len(samples), 2)
    metrics["per_source"] = {}
    for source in dict.fromkeys(s.source for s in samples):
        index = [i for i, s in enumerate(samples) if s.source == source]
        part = coco_evaluate([truth[i] for i in index], [found[i] for i in index], names,
                             class_agnostic=class_agnostic)
        metrics["per_source"][source] = {k: v for k, v in part.items() if k not in ("recall", "precision")}
    return metrics


def plot_pr_curve(metrics: Mapping, path: str | Path, title: str) -> None:
    """Precision-recall curve at IoU 0.5 as a PNG (matplotlib Agg, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.common.fileio import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    if metrics["recall"]:
        ax.plot(metrics["recall"], metrics["precision"], lw=2, color="#1f77b4",
                label=f"AP@0.5 = {metrics['AP50']:.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.0), ylim=(0, 1.02),
           title=f"{title}\nAP@[.5:.95] = {metrics['AP']:.3f}, AR@100 = {metrics['AR100']:.3f}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

