"""How well tracked boxes follow per-frame detection, and how stable their IDs are (for `make bench`).

There are no labelled tracks for the hand video, so the reference is the detector itself run on
every frame (--detect-every 1); each frame is a list of pixel boxes (xmin, ymin, xmax, ymax):

- recall: the share of reference boxes that a tracked box overlaps with IoU >= 0.5 (one-to-one);
- ID switches: a box that overlaps (IoU >= 0.5) a box of the previous frame but carries another ID;
- fragmented tracks: a new ID that starts within `gap_frames` after another ID was last shown.
  On a one-hand video such an ID is the same hand, re-identified after a short loss;
- jitter: how much a box's corners shake about their own trend (see `box_jitter`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from utils.common.boxes import iou_matrix

MATCH_IOU = 0.5
SURE_SCORE = 0.5       # reference boxes scoring this much: the hands the detector is sure of (see sure_boxes)
JITTER_WINDOW = 9      # frames of the centred moving average a box's trend is taken over (0.3 s at 30 FPS)


def _matches(a: np.ndarray, b: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one pairs (i, j) of boxes a[i], b[j] with IoU >= threshold (best total IoU)."""
    if len(a) == 0 or len(b) == 0:
        return []
    iou = iou_matrix(a, b)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if iou[i, j] >= threshold]


def recall(tracked: Sequence[np.ndarray], reference: Sequence[np.ndarray], threshold: float = MATCH_IOU) -> float:
    """Share of reference boxes found by a tracked box of the same frame (IoU >= threshold)."""
    found = sum(len(_matches(np.asarray(r), np.asarray(t), threshold)) for t, r in zip(tracked, reference,
                                                                                        strict=True))
    total = sum(len(r) for r in reference)
    return found / total if total else 1.0


def sure_boxes(boxes: Sequence[np.ndarray], scores: Sequence[Sequence[float]], min_score: float = SURE_SCORE
               ) -> list[np.ndarray]:
    """Each frame's boxes scoring at least `min_score`. Per-frame detection also keeps the detector's passing doubts
    (a second box on the hand, a small false one: scores 0.2-0.4 on the hand video) that a tracker, rightly, does
    not carry between detector runs; recall against these boxes counts the hands the detector is sure of."""
    return [np.asarray(b, float).reshape(-1, 4)[np.asarray(s, float) >= min_score]
            for b, s in zip(boxes, scores, strict=True)]


def id_switches(boxes: Sequence[np.ndarray], ids: Sequence[Sequence[int]], threshold: float = MATCH_IOU) -> int:
    """Boxes that continue a box of the previous frame (IoU >= threshold) under another ID
    (negative IDs, hands not confirmed yet, are left out)."""
    switches = 0
    for t in range(1, len(boxes)):
        for i, j in _matches(np.asarray(boxes[t - 1]), np.asarray(boxes[t]), threshold):
            before, after = int(ids[t - 1][i]), int(ids[t][j])
            switches += before >= 0 and after >= 0 and before != after
    return switches


def fragmented_tracks(ids: Sequence[Sequence[int]], gap_frames: int) -> int:
    """IDs whose first frame comes at most `gap_frames` after the last frame of an earlier ID."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t, frame_ids in enumerate(ids):
        for tid in (i for i in frame_ids if i >= 0):
            first.setdefault(int(tid), t)
            last[int(tid)] = t
    count = 0
    for tid, start in first.items():
        ended = [last[o] for o in first if o != tid and first[o] < start and last[o] < start]
        count += any(start - end <= gap_frames for end in ended)
    return count


def precision(tracked: Sequence[np.ndarray], reference: Sequence[np.ndarray], threshold: float = MATCH_IOU
              ) -> float:
    """Share of tracked boxes that a reference box of the same frame overlaps (IoU >= threshold)."""
    return recall(reference, tracked, threshold)


def track_count(ids: Sequence[Sequence[int]]) -> int:
    return len({int(tid) for frame_ids in ids for tid in frame_ids if tid >= 0})


def box_jitter(boxes: np.ndarray, window: int = JITTER_WINDOW) -> float:
    """Pixels: RMS of a box's corners about their centred moving average, over a [T,4] run of one
    hand's boxes (T >= window). Slow motion is in the trend; frame-to-frame shake is what is left."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) < window:
        raise ValueError(f"need at least {window} boxes, got {len(boxes)}")
    kernel = np.ones(window) / window
    half = window // 2
    trend = np.stack([np.convolve(boxes[:, k], kernel, mode="valid") for k in range(4)], axis=1)
    residual = boxes[half:len(boxes) - half] - trend
    return float(np.sqrt(np.mean(residual ** 2)))


def stillest_run(boxes: Sequence[np.ndarray], length: int) -> int | None:
    """Start of the `length`-frame stretch where exactly one box is shown on every frame and its
    centre moves least (total path), or None if there is no such stretch."""
    single = [len(b) == 1 for b in boxes]
    centres = np.array([((b[0][0] + b[0][2]) / 2, (b[0][1] + b[0][3]) / 2) if ok else (np.nan, np.nan)
                        for b, ok in zip(boxes, single, strict=True)])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    best, best_path = None, np.inf
    for start in range(len(boxes) - length + 1):
        if not all(single[start:start + length]):
            continue
        path = float(np.sum(steps[start:start + length - 1]))
        if path < best_path:
            best, best_path = start, path
    return best
