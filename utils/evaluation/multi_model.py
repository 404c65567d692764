"""Figures for the hand + gesture models (issue 14): the gesture model as a hand detector, and how
many of the hand model's false positives on faces `suppress_faces` removes (Oxford Hands images).
"""
from __future__ import annotations

import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.common import config
from utils.common.boxes import iou_matrix, normalized_to_pixels
from utils.runtime.detector import Detections, HandDetector
from utils.runtime.multi_model import MergeOptions, MultiModelDetector, intersection_over_first, merge_detections

MATCH_IOU = 0.5  # a detection matches a labelled hand at IoU >= 0.5 (the AP@0.5 criterion)


class HandClassesOnly:
    """A detector view of the gesture model that keeps only its hand classes, all as class 1 'hand'."""

    def __init__(self, detector: HandDetector, hand_classes: Sequence[str] = config.GESTURE_HAND_CLASSES):
        self.detector = detector
        self.hand_ids = np.array([i for i, n in detector.class_names.items() if n in hand_classes], np.int32)
        if not len(self.hand_ids):
            raise ValueError(f"{detector.path}: the model has none of the classes {list(hand_classes)}")
        self.class_names = {1: "hand"}

    def detect(self, rgb: np.ndarray) -> Detections:
        found = self.detector.detect(rgb)
        keep = np.isin(found.classes, self.hand_ids)
        return Detections(found.boxes[keep], found.scores[keep], np.ones(int(keep.sum()), np.int32))


def face_false_positives(hand_boxes_px: np.ndarray, truth_px: np.ndarray, face_boxes_px: np.ndarray,
                         match_iou: float = MATCH_IOU) -> np.ndarray:
    """Mask of hand boxes (pixels) that match no labelled hand (IoU < match_iou) and overlap a face."""
    hand_boxes_px = np.asarray(hand_boxes_px, np.float64).reshape(-1, 4)
    unmatched = (iou_matrix(hand_boxes_px, truth_px).max(axis=1, initial=0.0) < match_iou
                 if len(truth_px) else np.ones(len(hand_boxes_px), bool))
    on_face = (intersection_over_first(hand_boxes_px, face_boxes_px).max(axis=1, initial=0.0) > 0
               if len(face_boxes_px) else np.zeros(len(hand_boxes_px), bool))
    return unmatched & on_face


def iter_tar_images(tar_path: str | Path, names: set[str], limit: int | None, every: int = 1
                    ) -> Iterator[tuple[str, np.ndarray]]:
    """(basename, RGB) of the archive's images whose basename is in `names`: every `every`-th one, up to
    `limit`, streamed from the .tar.gz in archive order (nothing extracted to disk)."""
    import cv2

    seen = taken = 0
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            base = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or base not in names or "/images/" not in member.name:
                continue
            seen += 1
            if (seen - 1) % every:
                continue
            bgr = cv2.imdecode(np.frombuffer(tar.extractfile(member).read(), np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{tar_path}:{member.name}: not a decodable image")
            yield base, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            taken += 1
            if limit is not None and taken >= limit:
                return


@dataclass
class FaceSuppressionStudy:
    """Counts over a set of labelled images, hand boxes scoring >= score_threshold."""

    images: int = 0
    labelled_hands: int = 0
    false_on_face: dict[str, int] = field(default_factory=lambda: {"without": 0, "with": 0})
    true_hands: dict[str, int] = field(default_factory=lambda: {"without": 0, "with": 0})  # boxes matching a hand
    boxes_kept: dict[str, int] = field(default_factory=lambda: {"without": 0, "with": 0})
    faces: int = 0
    truth: list = field(default_factory=list)
    found: dict[str, list] = field(default_factory=lambda: {"without": [], "with": []})


def study_face_suppression(detector: MultiModelDetector, samples: Iterator[tuple[np.ndarray, np.ndarray]],
                           score_threshold: float = config.DEFAULT_SCORE_THRESHOLD,
                           suppress_options: MergeOptions | None = None) -> FaceSuppressionStudy:
    """Run both models once per (RGB, labelled pixel boxes) sample; merge without and with
    suppress_faces. Returns counts and per-image annotations for coco_evaluate."""
    from utils.evaluation.coco import ImageAnnotations

    base = detector.options
    with_faces = suppress_options or MergeOptions(**{**base.__dict__, "suppress_faces": True})
    without = MergeOptions(**{**with_faces.__dict__, "suppress_faces": False})
    study = FaceSuppressionStudy()
    for rgb, truth_px in samples:
        height, width = rgb.shape[:2]
        outputs = detector.run_models(rgb)
        study.images += 1
        study.labelled_hands += len(truth_px)
        study.truth.append(ImageAnnotations(width, height, truth_px, np.ones(len(truth_px), np.int64)))
        for key, options in (("without", without), ("with", with_faces)):
            merged = merge_detections(outputs["hand"], outputs["gesture"], detector.gesture.class_names, options)
            faces = [o.box for o in merged.objects if o.class_name == options.face_class]
            face_px = normalized_to_pixels(np.asarray(faces).reshape(-1, 4), width, height)
            boxes_px = normalized_to_pixels(merged.boxes, width, height)
            study.found[key].append(ImageAnnotations(width, height, boxes_px, np.ones(len(boxes_px), np.int64),
                                                     merged.scores))
            shown = merged.scores >= score_threshold
            study.boxes_kept[key] += int(shown.sum())
            study.false_on_face[key] += int(face_false_positives(boxes_px[shown], truth_px, face_px).sum())
            if len(truth_px):
                study.true_hands[key] += int((iou_matrix(boxes_px[shown], truth_px).max(axis=1, initial=0.0)
                                              >= MATCH_IOU).sum())
            if key == "without":
                study.faces += len(faces)
    return study
