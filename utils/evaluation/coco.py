"""COCO detection metrics (pycocotools) for hand detectors, from plain per-image arrays."""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class ImageAnnotations:
    """Boxes of one image in pixels (xmin, ymin, xmax, ymax); classes are label map ids."""

    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray | None = None  # detections only


def _xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])


def coco_evaluate(ground_truth: Sequence[ImageAnnotations], detections: Sequence[ImageAnnotations],
                  class_names: dict[int, str] | None = None, class_agnostic: bool = False) -> dict:
    """AP@0.5, AP@[.5:.95], AR@100 and the precision-recall curve at IoU 0.5 (all classes averaged).

    `class_agnostic` scores every box as one class (e.g. a 1-class detector against 4-class labels).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(detections)} detection images")
    ids = sorted({int(c) for gt in ground_truth for c in gt.classes} | set(class_names or {})) or [1]
    if class_agnostic:
        ids = [1]
    categories = [{"id": i, "name": (class_names or {}).get(i, str(i))} for i in ids]
    images, gt_anns, det_anns = [], [], []
    for image_id, (gt, det) in enumerate(zip(ground_truth, detections, strict=False), 1):
        images.append({"id": image_id, "width": gt.width, "height": gt.height})
        for box, cls in zip(_xywh(gt.boxes), gt.classes, strict=False):
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": image_id, "bbox": box.tolist(),
                            "area": float(box[2] * box[3]), "iscrowd": 0,
                            "category_id": 1 if class_agnostic else int(cls)})
        for box, cls, score in zip(_xywh(det.boxes), det.classes, det.scores, strict=False):
            det_anns.append({"image_id": image_id, "bbox": box.tolist(), "score": float(score),
                             "category_id": 1 if class_agnostic else int(cls)})
    coco_gt = COCO()
    coco_gt.dataset = {"images": images, "annotations": gt_anns, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        if not det_anns:
            return {"AP50": 0.0, "AP": 0.0, "AR100": 0.0, "recall": [], "precision": [],
                    "images": len(images), "ground_truth_boxes": len(gt_anns), "detections": 0}
        coco_dt = coco_gt.loadRes(det_anns)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # precision: [T iou thresholds, R recall points, K classes, A areas, M max dets]; IoU .5, all areas, 100 dets
    precision = evaluator.eval["precision"][0, :, :, 0, -1]
    valid = precision > -1
    curve = np.where(valid.any(axis=1), np.where(valid, precision, 0).sum(1) / np.maximum(valid.sum(1), 1), 0)
    return {"AP50": float(evaluator.stats[1]), "AP": float(evaluator.stats[0]),
            "AR100": float(evaluator.stats[8]), "recall": evaluator.params.recThrs.tolist(),
            "precision": curve.tolist(), "images": len(images), "ground_truth_boxes": len(gt_anns),
            "detections": len(det_anns)}


def detections_to_annotations(detections, width: int, height: int) -> ImageAnnotations:
    """A detector_utils.Detections -> ImageAnnotations in pixels."""
    from utils.common.boxes import normalized_to_pixels

    return ImageAnnotations(width, height, normalized_to_pixels(detections.boxes, width, height),
                            np.asarray(detections.classes), np.asarray(detections.scores))
