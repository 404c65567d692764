"""A COCO detection json (instances_*.json, CVAT/Roboflow "COCO" exports) -> AnnotatedImage list.

Reads `images` (id, file_name, width, height), `annotations` (image_id, category_id, bbox = [x, y, w, h]
in pixels) and `categories` (id, name). Crowd annotations (iscrowd = 1) mark groups, not single hands,
and are skipped. Images are found under --images, else beside the json. Every entry is checked; the
first problem stops the import.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from utils.data.annotated import AnnotatedImage, LabelsImportError, check_boxes, flat_name

SOURCE = "coco"
_FIX = "fix the json"


def _field(entry: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(entry, Mapping) or key not in entry:
        raise LabelsImportError(f"{where}: no {key!r}; {_FIX}")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise LabelsImportError(f"{where}: {key!r} is {value!r}; {_FIX}")
    return value


def read_coco_json(json_path: str | Path, images_dir: str | Path | None = None
                   ) -> tuple[list[AnnotatedImage], list[str]]:
    """(AnnotatedImage per image that has annotations, in `images` order; every category name)."""
    json_path = Path(json_path)
    images_dir = Path(images_dir) if images_dir else json_path.parent
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LabelsImportError(f"{json_path}: no such file; pass the COCO annotation json") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsImportError(f"{json_path}: cannot read it ({exc}); pass the COCO annotation json") from exc
    except json.JSONDecodeError as exc:
        raise LabelsImportError(f"{json_path}: malformed JSON ({exc}); {_FIX}") from exc
    except RecursionError as exc:
        raise LabelsImportError(f"{json_path}: JSON nested too deeply to be a COCO detection json; {_FIX}") from exc
    if not isinstance(data, dict):
        raise LabelsImportError(f"{json_path}: top level is not an object; not a COCO detection json")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise LabelsImportError(f"{json_path}: no {', '.join(repr(m) for m in missing)} list; not a COCO "
                                "detection json (instances_*.json)")
    category_names: dict[int, str] = {}
    for i, category in enumerate(data["categories"]):
        where = f"{json_path}: categories[{i}]"
        category_id = _field(category, "id", where, int)
        if category_id in category_names:
            raise LabelsImportError(f"{where}: category id {category_id} repeats (also "
                                    f"{category_names[category_id]!r}); give each category its own id: {_FIX}")
        category_names[category_id] = str(_field(category, "name", where, str))
    entries: dict[int, dict[str, Any]] = {}
    for i, image in enumerate(data["images"]):
        where = f"{json_path}: images[{i}]"
        image_id = _field(image, "id", where, (int, str))
        if image_id in entries:
            raise LabelsImportError(f"{where}: image id {image_id!r} repeats; {_FIX}")
        entries[image_id] = {"file_name": _field(image, "file_name", where, str),
                             "width": _field(image, "width", where, int),
                             "height": _field(image, "height", where, int), "boxes": [], "names": [],
                             "where": where}
    for i, ann in enumerate(data["annotations"]):
        where = f"{json_path}: annotations[{i}]"
        if isinstance(ann, Mapping) and ann.get("iscrowd", 0):
            continue
        image_id = _field(ann, "image_id", where, (int, str))
        category_id = _field(ann, "category_id", where, int)
        bbox = _field(ann, "bbox", where, list)
        if image_id not in entries:
            raise LabelsImportError(f"{where}: image_id {image_id!r} is not in 'images'; {_FIX}")
        if category_id not in category_names:
            raise LabelsImportError(f"{where}: category_id {category_id} is not in 'categories'; {_FIX}")
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise LabelsImportError(f"{where}: bbox {bbox!r} is not [x, y, width, height]; {_FIX}")
        x, y, w, h = (float(v) for v in bbox)
        entries[image_id]["boxes"].append([x, y, x + w, y + h])
        entries[image_id]["names"].append(category_names[category_id])
    images = []
    for entry in entries.values():
        if not entry["boxes"]:
            continue
        boxes = np.asarray(entry["boxes"], dtype=np.float64).reshape(-1, 4)
        where = f"{entry['where']} ({entry['file_name']})"
        check_boxes(boxes, entry["width"], entry["height"], where)
        images.append(AnnotatedImage(images_dir / entry["file_name"], flat_name(entry["file_name"]), entry["width"],
                                     entry["height"], boxes, tuple(entry["names"]), where))
    return images, sorted(set(category_names.values()))
