"""Box conversions and overlaps in NumPy (no TensorFlow needed).

Normalized boxes are (ymin, xmin, ymax, xmax) in [0, 1], the TF Object Detection API's order;
pixel boxes are (xmin, ymin, xmax, ymax), the order of the CSVs and of OpenCV drawing.
"""
from __future__ import annotations

import numpy as np


def normalized_to_pixels(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """[N,4] normalized (ymin,xmin,ymax,xmax) -> [N,4] float pixels (xmin,ymin,xmax,ymax), clipped."""
    boxes = clip_normalized(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    ymin, xmin, ymax, xmax = boxes.T
    return np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=1)


def pixels_to_normalized(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """[N,4] pixels (xmin,ymin,xmax,ymax) -> [N,4] normalized (ymin,xmin,ymax,xmax), clipped."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    xmin, ymin, xmax, ymax = boxes.T
    return clip_normalized(np.stack([ymin / height, xmin / width, ymax / height, xmax / width], axis=1))


def clip_normalized(boxes: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(boxes, dtype=np.float64), 0.0, 1.0)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas of [N,4] boxes in either corner order (both orders are min,min,max,max)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """[N,M] intersection over union of two sets of boxes in the same corner order."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)

