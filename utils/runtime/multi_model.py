"""Several detectors on one frame: the hand model and the gesture/face model, merged per frame.

    from utils.runtime.multi_model import load_multi_model
    detector = load_multi_model()                 # hand_inference_graph/ + gesture_inference_graph/
    result = detector.detect(rgb_frame)           # MultiDetections
    result.boxes, result.scores, result.classes   # the hand model's boxes, as HandDetector.detect gives them
    result.gestures                               # parallel to boxes: 'open'/'closed'/'pinch'/'point' or None
    result.objects                                # faces and fingertips: DetectedObject(model, box, score, class_name)

The merge (`merge_detections`) is pure NumPy on two `Detections`, so any backend of either model
(frozen graph, SavedModel, TFLite) and any scheduling of the two runs (one after the other, or side
by side in threads) give the same result. Boxes are normalized (ymin, xmin, ymax, xmax).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.common import config
from utils.common.boxes import box_areas, iou_matrix
from utils.runtime.detector import Detections, HandDetector, default_model_path, load_inference_graph

HAND_MODEL = "hand"
GESTURE_MODEL = "gesture"

# handtrack.js's own default scoreThreshold for this model (src/index.js): below it its boxes are noise.
GESTURE_SCORE_THRESHOLD = 0.6
# A hand box takes the gesture of the gesture box it overlaps most, if that IoU reaches this: the two
# models draw a hand's extent differently (EgoHands boxes include more wrist), so this is lenient.
GESTURE_MIN_IOU = 0.3
# suppress_faces: a hand box is a face when a detected face covers at least this share of it
# (intersection / hand box area; a face box usually contains the false hand box, so IoU would be low
# for a small false box inside a big face) ...
FACE_MIN_IOA = 0.5
# ... unless the gesture model sees a hand (pose) there overlapping the hand box at least as much as the
# face does: a real hand in front of a face keeps its box.


@dataclass(frozen=True)
class DetectedObject:
    """A face or fingertip box of one of the models."""

    model: str          # which model found it ("gesture")
    box: tuple[float, float, float, float]  # normalized (ymin, xmin, ymax, xmax)
    score: float
    class_name: str     # "face", "pointtip", "pinchtip"


@dataclass
class MergeOptions:
    gesture_score_threshold: float = GESTURE_SCORE_THRESHOLD
    gesture_min_iou: float = GESTURE_MIN_IOU
    suppress_faces: bool = False
    face_min_ioa: float = FACE_MIN_IOA
    hand_classes: tuple[str, ...] = config.GESTURE_HAND_CLASSES
    face_class: str = config.GESTURE_FACE_CLASS
    object_classes: tuple[str, ...] = (config.GESTURE_FACE_CLASS, *config.GESTURE_FINGERTIP_CLASSES)


@dataclass
class MultiDetections:
    """The hand model's detections with a gesture per box, plus the other models' objects."""

    boxes: np.ndarray    # [N,4] float32, normalized, best first (the hand model's)
    scores: np.ndarray   # [N] float32
    classes: np.ndarray  # [N] int32, the hand model's label map ids
    gestures: list[str | None]        # [N] the gesture of each hand box, None where no gesture box overlaps
    gesture_scores: list[float | None]  # [N] that gesture box's score
    objects: list[DetectedObject] = field(default_factory=list)
    suppressed: int = 0  # hand boxes dropped as faces (suppress_faces)

    def hand_detections(self) -> Detections:
        return Detections(self.boxes, self.scores, self.classes)

    def as_dict(self) -> dict:
        """JSON-ready: lists of plain floats and strings, boxes normalized."""
        return {"boxes": np.round(self.boxes, 5).tolist(), "scores": np.round(self.scores, 5).tolist(),
                "classes": self.classes.tolist(), "gestures": list(self.gestures),
                "objects": [{"model": o.model, "box": [round(v, 5) for v in o.box], "score": round(o.score, 5),
                             "class_name": o.class_name} for o in self.objects]}


def intersection_over_first(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """[N,M] share of each box of `boxes_a` covered by each box of `boxes_b` (same corner order)."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = box_areas(a)[:, None]
    return np.where(area > 0, inter / np.where(area > 0, area, 1), 0.0)


def _select(detections: Detections, class_names: Mapping[int, str], wanted: tuple[str, ...],
            threshold: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    names = [class_names.get(int(c), str(int(c))) for c in detections.classes]
    keep = [i for i, name in enumerate(names) if name in wanted and detections.scores[i] >= threshold]
    return (np.asarray(detections.boxes, np.float64).reshape(-1, 4)[keep],
            np.asarray(detections.scores, np.float64)[keep], [names[i] for i in keep])


def merge_detections(hands: Detections, gestures: Detections, gesture_class_names: Mapping[int, str],
                     options: MergeOptions | None = None) -> MultiDetections:
    """One frame's hand and gesture-model detections -> MultiDetections (pure; see module doc).

    Each hand box gets the gesture (a `hand_classes` box scoring >= gesture_score_threshold) it
    overlaps most by IoU, if >= gesture_min_iou. Gesture-model boxes of `object_classes` scoring
    >= gesture_score_threshold become `objects`. With suppress_faces, a hand box at least
    `face_min_ioa` covered by a face box is dropped, unless its gesture box overlaps it (IoA) as much.
    """
    options = options or MergeOptions()
    hand_boxes = np.asarray(hands.boxes, np.float32).reshape(-1, 4)
    pose_boxes, pose_scores, pose_names = _select(gestures, gesture_class_names, options.hand_classes,
                                                  options.gesture_score_threshold)
    obj_boxes, obj_scores, obj_names = _select(gestures, gesture_class_names, options.object_classes,
                                               options.gesture_score_threshold)
    objects = [DetectedObject(GESTURE_MODEL, tuple(float(v) for v in box), float(score), name)
               for box, score, name in zip(obj_boxes, obj_scores, obj_names, strict=True)]

    names: list[str | None] = [None] * len(hand_boxes)
    scores: list[float | None] = [None] * len(hand_boxes)
    pose_ioa = np.zeros(len(hand_boxes))
    if len(hand_boxes) and len(pose_boxes):
        iou = iou_matrix(hand_boxes, pose_boxes)
        ioa = intersection_over_first(hand_boxes, pose_boxes)
        best = iou.argmax(axis=1)
        for i, j in enumerate(best):
            if iou[i, j] >= options.gesture_min_iou:
                names[i], scores[i], pose_ioa[i] = pose_names[j], float(pose_scores[j]), ioa[i, j]

    keep = np.ones(len(hand_boxes), bool)
    face_boxes = obj_boxes[[n == options.face_class for n in obj_names]]
    if options.suppress_faces and len(hand_boxes) and len(face_boxes):
        face_ioa = intersection_over_first(hand_boxes, face_boxes).max(axis=1)
        keep = ~((face_ioa >= options.face_min_ioa) & (face_ioa > pose_ioa))
    index = np.flatnonzero(keep)
    return MultiDetections(hand_boxes[index], np.asarray(hands.scores, np.float32).reshape(-1)[index],
                           np.asarray(hands.classes, np.int32).reshape(-1)[index],
                           [names[i] for i in index], [scores[i] for i in index], objects,
                           suppressed=int((~keep).sum()))


class MultiModelDetector:
    """Runs the hand model and the gesture model on a frame and merges their outputs.

    `run_models` gives each model's raw Detections (so a caller can schedule the two runs itself, e.g.
    in two threads) and `merge` combines them; `detect` does both, one model after the other.
    """

    def __init__(self, hand: HandDetector, gesture: HandDetector, options: MergeOptions | None = None):
        self.hand, self.gesture, self.options = hand, gesture, options or MergeOptions()
        self.models: dict[str, HandDetector] = {HAND_MODEL: hand, GESTURE_MODEL: gesture}

    def run_models(self, rgb: np.ndarray) -> dict[str, Detections]:
        return {name: model.detect(rgb) for name, model in self.models.items()}

    def merge(self, outputs: Mapping[str, Detections]) -> MultiDetections:
        return merge_detections(outputs[HAND_MODEL], outputs[GESTURE_MODEL], self.gesture.class_names,
                                self.options)

    def detect(self, rgb: np.ndarray) -> MultiDetections:
        return self.merge(self.run_models(rgb))

    def clone(self) -> "MultiModelDetector":
        return MultiModelDetector(self.hand.clone(), self.gesture.clone(), self.options)


def load_multi_model(hand_path: str | Path | None = None, gesture_path: str | Path | None = None,
                     num_threads: int | None = None, options: MergeOptions | None = None) -> MultiModelDetector:
    """Load both models (any format each; folders pick their fastest file) into a MultiModelDetector."""
    hand = load_inference_graph(hand_path, num_threads)
    gesture = load_inference_graph(gesture_path if gesture_path is not None
                                   else default_model_path(config.GESTURE_MODEL_DIR), num_threads)
    return MultiModelDetector(hand, gesture, options)
