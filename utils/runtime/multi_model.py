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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from utils.common import config
from utils.common.boxes import box_areas, iou_matrix, normalized_to_pixels
from utils.common.errors import UserError
from utils.runtime.detector import (
    BOX_COLOR_BGR,
    Detections,
    HandDetector,
    ModelLoadError,
    default_model_path,
    load_inference_graph,
)

HAND_MODEL = "hand"
GESTURE_MODEL = "gesture"
MODEL_NAMES = (HAND_MODEL, GESTURE_MODEL)  # what --models accepts; the hand model is always one of them

# Drawing (BGR): hand boxes keep the detector's green; the gesture model's objects get their own colours.
OBJECT_COLORS_BGR = {config.GESTURE_FACE_CLASS: (0, 140, 255),                    # orange
                     **{name: (255, 0, 255) for name in config.GESTURE_FINGERTIP_CLASSES}}  # magenta
OTHER_OBJECT_COLOR_BGR = (255, 255, 0)
LABEL_FONT_SCALE = 0.45           # as the hand labels, on frames up to LABEL_FONT_REFERENCE_WIDTH wide
LABEL_FONT_REFERENCE_WIDTH = 640
OBJECT_BOX_THICKNESS = 2

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


def parse_models(text: str) -> tuple[str, ...]:
    """--models 'hand' or 'hand,gesture' -> the model names, hand first; a UserError for anything else."""
    names = [name.strip().lower() for name in text.split(",")]
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown or HAND_MODEL not in names or len(set(names)) != len(names):
        problem = (f"unknown model {unknown[0]!r}" if unknown else
                   "the hand model must be one of them" if HAND_MODEL not in names else "a model is named twice")
        raise UserError(f"--models {text!r}: {problem}; give {HAND_MODEL!r} or {HAND_MODEL},{GESTURE_MODEL!r}")
    return tuple(name for name in MODEL_NAMES if name in names)


def gesture_model_path(path: str | Path | None = None) -> Path:
    """The gesture model to load: `path` (a file, or a folder like gesture_inference_graph/ for its fastest
    file), by default config.GESTURE_MODEL_DIR; a ModelLoadError saying `make model` when it is not there."""
    path = Path(path) if path is not None else config.GESTURE_MODEL_DIR
    if path.is_dir() and not (path / "saved_model.pb").exists():  # a folder of models, not a SavedModel
        try:
            return default_model_path(path)
        except ModelLoadError:
            pass  # its message speaks of the hand model
    elif path.exists():
        return path
    raise ModelLoadError(f"{path}: no gesture model found; run `make model` to build it (it exports "
                         f"{config.GESTURE_MODEL_DIR.name}/ beside the hand model), or pass its folder")


def load_gesture_model(path: str | Path | None = None, num_threads: int | None = None) -> HandDetector:
    """The 7-class gesture/face model (see gesture_model_path)."""
    return load_inference_graph(gesture_model_path(path), num_threads)


def load_multi_model(hand_path: str | Path | None = None, gesture_path: str | Path | None = None,
                     num_threads: int | None = None, options: MergeOptions | None = None) -> MultiModelDetector:
    """Load both models (any format each; folders pick their fastest file) into a MultiModelDetector."""
    hand = load_inference_graph(hand_path, num_threads)
    return MultiModelDetector(hand, load_gesture_model(gesture_path, num_threads), options)


# --- Per frame in the detectors (utils.runtime.loop) ------------------------------------------------

def gestures_by_box(boxes: np.ndarray, gestures: Detections, gesture_class_names: Mapping[int, str],
                    options: MergeOptions | None = None) -> list[str | None]:
    """The gesture of each of `boxes` (normalized) by the merge's own rule, faces not suppressed: used
    to label the tracker's boxes, which are the detections moved or smoothed."""
    options = replace(options or MergeOptions(), suppress_faces=False)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    hands = Detections(boxes, np.ones(len(boxes), np.float32), np.ones(len(boxes), np.int32))
    return merge_detections(hands, gestures, gesture_class_names, options).gestures


class GestureMemory:
    """Gestures and objects for tracked hands, in frame order (`--track`, `--detect-every N`).

    On a frame both models ran on, each tracked box takes the gesture its box overlaps (gestures_by_box)
    and the objects are that frame's. On a frame the detector skipped, the models did not run: each
    tracked hand keeps the gesture its track ID had on the last frame they ran (None for a hand not yet
    confirmed), and the objects shown are the last frame's, unmoved (faces move little; fingertips may lag).
    """

    def __init__(self, gesture_class_names: Mapping[int, str], options: MergeOptions | None = None):
        self.class_names, self.options = gesture_class_names, options or MergeOptions()
        self._by_track: dict[int, str | None] = {}
        self._objects: list[DetectedObject] = []

    def update(self, tracked, gestures: Detections | None,
               objects: list[DetectedObject] | None) -> tuple[list[str | None], list[DetectedObject]]:
        """`tracked`: the tracker's hands (boxes, track_ids) of this frame; `gestures`: the gesture
        model's raw detections, None where it did not run. Returns (gestures parallel to the boxes, objects)."""
        ids = [int(t) for t in tracked.track_ids]
        if gestures is None:
            return [self._by_track.get(t) if t > 0 else None for t in ids], list(self._objects)
        names = gestures_by_box(tracked.boxes, gestures, self.class_names, self.options)
        self._by_track = {t: name for t, name in zip(ids, names, strict=True) if t > 0}
        self._objects = list(objects or [])
        return names, list(self._objects)


def objects_record(objects: list[DetectedObject], width: int, height: int, decimals: int = 4) -> list[dict]:
    """--json `objects` of a frame: box [xmin, ymin, xmax, ymax] in pixels of a `width` x `height`
    frame (as the hand boxes), score, class_name and the model that found it."""
    if not objects:
        return []
    pixels = normalized_to_pixels(np.asarray([o.box for o in objects], np.float64), width, height)
    return [{"model": o.model, "box": [int(v) for v in box], "score": round(o.score, decimals),
             "class_name": o.class_name} for o, box in zip(objects, pixels.round().astype(int), strict=True)]


def _font_scale(width: int) -> float:
    return LABEL_FONT_SCALE * max(1.0, width / LABEL_FONT_REFERENCE_WIDTH)  # readable on big frames


def draw_gestures(image: np.ndarray, boxes: np.ndarray, gestures: list[str | None]) -> None:
    """Each hand box's gesture, in the hand colour, just under the box (its class and score are above it)."""
    import cv2

    height, width = image.shape[:2]
    scale = _font_scale(width)
    pixels = normalized_to_pixels(np.asarray(boxes).reshape(-1, 4), width, height).round().astype(int)
    for (x1, _, _, y2), gesture in zip(pixels, gestures, strict=True):
        if gesture is not None:
            baseline = min(y2 + round(16 * scale / LABEL_FONT_SCALE), height - 4)  # inside at the bottom edge
            cv2.putText(image, gesture, (x1 + 2, baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, BOX_COLOR_BGR, 1,
                        cv2.LINE_AA)


def draw_objects(image: np.ndarray, objects: list[DetectedObject]) -> None:
    """Faces and fingertips on a BGR image in place, each class in its colour, labelled 'class score'."""
    import cv2

    height, width = image.shape[:2]
    scale = _font_scale(width)
    for obj in objects:
        (x1, y1, x2, y2), = normalized_to_pixels(np.asarray([obj.box]), width, height).round().astype(int)
        color = OBJECT_COLORS_BGR.get(obj.class_name, OTHER_OBJECT_COLOR_BGR)
        cv2.rectangle(image, (x1, y1), (x2, y2), color, OBJECT_BOX_THICKNESS, cv2.LINE_AA)
        cv2.putText(image, f"{obj.class_name} {obj.score:.2f}", (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, color, 1, cv2.LINE_AA)
