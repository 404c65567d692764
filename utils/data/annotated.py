"""Your own labelled images (Pascal VOC folder, COCO json) -> images/<split>/ + <split>_labels.csv.

utils/data/voc.py and utils/data/coco.py read their format into AnnotatedImage lists (boxes checked
against the annotation's image size); this module keeps the chosen categories, splits the images
(by file, seeded, or by the user's lists), checks every image file (present, a complete JPEG or PNG of
the annotated size) and copies it byte for byte.
"""
from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from utils.common.errors import UserError
from utils.data.jpeg import JpegHeaderError, jpeg_is_complete, jpeg_size
from utils.data.splits import (
    DEFAULT_FRACTIONS,
    SPLITS,
    OutputNames,
    SplitOutputs,
    split_groups,
    split_outputs,
    split_weighted_groups,
)

HAND_CLASS = "hand"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


class LabelsImportError(UserError):
    """Bad VOC/COCO labels or images; the message names the file, what is wrong and what to do."""


@dataclass(frozen=True)
class AnnotatedImage:
    """One labelled image: where its file is, its annotated size, pixel boxes and category names."""
    image_path: Path
    name: str                 # output file name (unique within the data set)
    width: int
    height: int
    boxes: np.ndarray         # float64 [N, 4] (xmin, ymin, xmax, ymax) pixels
    categories: tuple[str, ...]
    where: str                # the annotation it came from, for messages


def check_boxes(boxes: np.ndarray, width: int, height: int, where: str) -> None:
    """Raise LabelsImportError for the first box outside the image or without width or height."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if width <= 0 or height <= 0:
        raise LabelsImportError(f"{where}: image size {width}x{height} is not positive; fix the annotation")
    x0, y0, x1, y1 = boxes.T
    bad = ~(np.isfinite(boxes).all(axis=1) & (0 <= x0) & (x0 < x1) & (x1 <= width)
            & (0 <= y0) & (y0 < y1) & (y1 <= height))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        b = boxes[i]
        raise LabelsImportError(f"{where}: box {i + 1} (xmin {b[0]:g}, ymin {b[1]:g}, xmax {b[2]:g}, ymax {b[3]:g}) "
                                f"is not inside the {width}x{height} image with xmin < xmax and ymin < ymax; "
                                "fix or remove it")


def image_size(data: bytes, path: Path) -> tuple[int, int]:
    """(width, height) of a complete JPEG or PNG, from its header; LabelsImportError otherwise."""
    if data.startswith(b"\xff\xd8"):
        try:
            size = jpeg_size(data)
        except JpegHeaderError as exc:
            raise LabelsImportError(f"{path}: corrupt JPEG ({exc}); replace the image or remove its "
                                    "annotation") from exc
        if not jpeg_is_complete(data):
            raise LabelsImportError(f"{path}: JPEG is truncated (no end-of-image marker); replace the image or "
                                    "remove its annotation")
        return size
    if data.startswith(_PNG_MAGIC) and len(data) >= 24 and data[12:16] == b"IHDR":
        if _PNG_END not in data[-32:]:
            raise LabelsImportError(f"{path}: PNG is truncated (no IEND chunk); replace the image or remove its "
                                    "annotation")
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    raise LabelsImportError(f"{path}: not a JPEG or PNG image; convert it or remove its annotation")


def keep_categories(images: Sequence[AnnotatedImage], categories: Sequence[str] | None, known: Sequence[str],
                    source: str, class_name: str | None = HAND_CLASS) -> tuple[list[AnnotatedImage], int]:
    """Only the boxes of `categories` (all when None), renamed to `class_name` (None keeps the names).

    `known` are the categories the data set defines; naming another is an error. Images left without
    boxes are dropped (a labels CSV holds boxes, not empty images); returns (images, how many dropped).
    """
    if categories:
        unknown = [c for c in categories if c not in known]
        if unknown:
            raise LabelsImportError(f"{source}: unknown category {unknown[0]!r}; the labels have "
                                    f"{', '.join(sorted(known)) or 'none'}: pass one of those to --category")
    wanted = set(categories) if categories else None
    kept, dropped = [], 0
    for image in images:
        mask = np.array([wanted is None or c in wanted for c in image.categories], dtype=bool)
        if not mask.any():
            dropped += 1
            continue
        names = tuple(class_name or c for c, m in zip(image.categories, mask, strict=True) if m)
        kept.append(replace(image, boxes=image.boxes[mask], categories=names))
    return kept, dropped


def read_list(path: Path) -> list[str]:
    """A split list: one image name per line (file name or stem; '#' comments and blanks skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsImportError(f"{path}: cannot read the split list ({exc}); pass a text file with one image "
                                "name per line") from exc
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def read_groups(path: Path) -> dict[str, str]:
    """A group file: CSV of image name -> group (e.g. `sessions.csv`: filename,session); a header row is kept
    out by its column names: the first column names the image, the second its group."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LabelsImportError(f"{path}: cannot read the group file ({exc}); pass a CSV of image name,group "
                                "(e.g. filename,session)") from exc
    if table.shape[1] < 2 or table.empty:
        raise LabelsImportError(f"{path}: a group file needs two columns, image name and group, and one row per "
                                "image; e.g. filename,session")
    names, groups = table.iloc[:, 0].str.strip(), table.iloc[:, 1].str.strip()
    if (names == "").any() or (groups == "").any():
        row = int(((names == "") | (groups == "")).to_numpy().argmax()) + 2
        raise LabelsImportError(f"{path}: row {row} has an empty image name or group; fill it in or remove it")
    return dict(zip(names, groups, strict=True))


def groups_by_pattern(images: Sequence[AnnotatedImage], pattern: re.Pattern[str]) -> dict[str, str]:
    """Image name -> group: the pattern's first group (else its whole match) searched in the file name."""
    groups = {}
    for image in images:
        match = pattern.search(image.image_path.name)
        if match is None:
            raise LabelsImportError(f"{image.image_path}: --group-pattern {pattern.pattern!r} does not match its "
                                    "file name; use a pattern every image name matches")
        groups[image.name] = match.group(1) if pattern.groups else match.group(0)
    return groups


def image_groups(images: Sequence[AnnotatedImage], named: Mapping[str, str], where: str) -> dict[str, str] | None:
    """Output name -> group for every image, looked up in `named` by output name, file name or stem.

    None when `named` names none of these images (another source's group file); an error when it names
    some and not all: a split by group that left some images out would leak their neighbours.
    """
    found: dict[str, str] = {}
    missing = []
    for image in images:
        keys = (image.name, image.image_path.name, image.image_path.stem, Path(image.name).stem)
        group = next((named[k] for k in keys if k in named), None)
        if group is None:
            missing.append(image.image_path.name)
        else:
            found[image.name] = group
    if not found:
        return None
    if missing:
        raise LabelsImportError(f"{where}: names no group for {len(missing)} of the {len(images)} images (e.g. "
                                f"{missing[0]}); add them or split by file without a group file")
    return found


def split_images(images: Sequence[AnnotatedImage], fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
                 lists: Mapping[str, Sequence[str] | None] | None = None,
                 groups: Mapping[str, str] | None = None) -> dict[str, list[AnnotatedImage]]:
    """Images per split: by file (seeded shuffle, split_counts), by group (output name -> group: whole groups
    with about `fractions` of the images each, split_weighted_groups) or by the user's lists of names.

    A list entry matches an image's output name, its source file name or stem; with groups it may name a group.
    Two images with one output name are an error (OutputNames.claim), never one silently dropped.
    """
    names = OutputNames()
    for image in images:
        names.claim(image.name, f"{image.where} ({image.image_path.name})")
    by_name = {image.name: image for image in images}
    alias: dict[str, str] = {}
    for image in images:
        for key in (image.name, image.image_path.name, image.image_path.stem, Path(image.name).stem):
            alias.setdefault(key, image.name)
    explicit = None
    if lists and any(v is not None for v in lists.values()):
        explicit = {s: None if v is None else [alias.get(n, n) for n in v] for s, v in lists.items()}
    if groups is not None:
        members: dict[str, list[str]] = {}
        for name in by_name:
            members.setdefault(groups[name], []).append(name)
        if explicit is None:
            chosen = split_weighted_groups({g: len(m) for g, m in members.items()}, fractions, seed)
        else:  # lists name groups (or images, taken as their group)
            explicit = {s: None if v is None else [groups.get(n, n) for n in v] for s, v in explicit.items()}
            chosen = split_groups(list(members), fractions, seed, explicit, what="group", error=LabelsImportError,
                                  flag="--{split}-list")
        return {s: sorted((by_name[n] for g in chosen[s] for n in members[g]), key=lambda i: i.name)
                for s in SPLITS}
    names = split_groups(list(by_name), fractions, seed, explicit, what="image", error=LabelsImportError,
                         flag="--{split}-list")
    return {s: [by_name[n] for n in names[s]] for s in SPLITS}


@dataclass
class ImportResult:
    images: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    boxes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    without_boxes: int = 0    # images dropped: none of the kept categories


def import_into(outputs: SplitOutputs, splits: Mapping[str, Sequence[AnnotatedImage]], source: str,
                prefix: str = "", progress: bool | None = None) -> ImportResult:
    """Check and copy every image into `outputs` and add its rows (see utils.data.splits)."""
    from tqdm import tqdm

    result = ImportResult()
    jobs = [(split, image) for split in SPLITS for image in splits.get(split, [])]
    for _, image in jobs:  # every name checked before the first copy (the split was random: any split)
        outputs.claim(prefix + image.name, f"{image.where} ({image.image_path.name})")
    with tqdm(jobs, unit="img", desc=f"import {source}", disable=None if progress is None else not progress) as bar:
        for split, image in bar:
            try:
                data = image.image_path.read_bytes()
            except OSError as exc:
                raise LabelsImportError(f"{image.image_path}: cannot read the image named in {image.where} "
                                        f"({exc.strerror or exc}); add the image or remove the annotation"
                                        ) from exc
            width, height = image_size(data, image.image_path)
            if (width, height) != (image.width, image.height):
                raise LabelsImportError(f"{image.image_path}: image is {width}x{height} but {image.where} says "
                                        f"{image.width}x{image.height}; fix the annotation")
            filename = prefix + image.name
            (outputs.image_dir(split) / filename).write_bytes(data)
            outputs.rows[split].extend((filename, width, height, cls, *box, source)
                                       for cls, box in zip(image.categories, image.boxes.tolist(), strict=True))
            result.images[split] += 1
            result.boxes[split] += len(image.categories)
    return result


def import_labels(output_dir: str | Path, splits: Mapping[str, Sequence[AnnotatedImage]], source: str,
                  progress: bool | None = None) -> ImportResult:
    """images/<split>/ + <split>_labels.csv under output_dir; all or nothing."""
    with split_outputs(output_dir, error=LabelsImportError) as outputs:
        return import_into(outputs, splits, source, progress=progress)


def read_labels(kind: str, path: str | Path, images_dir: str | Path | None = None
                ) -> tuple[list[AnnotatedImage], list[str]]:
    """('voc', folder) or ('coco', json) -> (images, every category name the labels define)."""
    if kind == "voc":
        from utils.data.voc import categories, read_voc_folder

        images = read_voc_folder(path, images_dir)
        return images, categories(images)
    if kind == "coco":
        from utils.data.coco import read_coco_json

        return read_coco_json(path, images_dir)
    raise ValueError(f"unknown labels format {kind!r}; expected voc or coco")


def flat_name(relative: str) -> str:
    """An output file name from an image path relative to its data set ('a/b.jpg' -> 'a_b.jpg')."""
    return relative.replace("\\", "/").strip("/").replace("/", "_")

