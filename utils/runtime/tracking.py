"""Hands with identities: a tracker that takes `Detections` per frame and returns boxes with track IDs.

    tracker = HandTracker(fps=30.0)
    for i, rgb in enumerate(frames):
        detections = detector.detect(rgb, min_score=0.2, max_hands=2) if i % every == 0 else None
        hands = tracker.update(detections, (width, height), image=rgb[..., 1])  # any grey view of the frame
        hands.boxes, hands.track_ids, hands.predicted   # normalized boxes, IDs from 1, carried boxes

The association and motion model come from Roboflow's `trackers` package (Apache-2.0; numpy, scipy,
opencv and `supervision`, no torch): ByteTrack by default, SORT and OC-SORT on request. Not chosen:
`norfair` (needs numpy < 2), `boxmot` (pulls torch), `supervision`'s own older ByteTrack (its authors
moved their trackers into `trackers`). Measured on the real hand video (detector at 320x240, its kept
boxes replayed through each tracker; ID switches / recall against per-frame detection): at N = 1 without
smoothing ByteTrack 4 / 1.000, OC-SORT 3 / 1.000, SORT 7 / 1.000; at N = 3 all three 1 switch, recall
0.960 / 0.952 / 0.960. With smoothing OC-SORT's filter lagged (recall 0.83 at N = 3) while ByteTrack's
held 0.96: ByteTrack it is.

What this module adds around the library:
- Frames where the detector did not run (`--detect-every N`): the library's tracker is only told
  about frames the detector saw, with their time, so its Kalman filter steps over the gap and a hand
  is only "missed" when the detector ran and did not find it. In between, each hand's box moves with
  the image (optical flow, when `update` is given the frame: the detectors give it whenever N > 1),
  else by the library's Kalman prediction for that frame (on a copy of its filter); flagged `predicted`.
- Confirmed hands are matched to the detections before tracks not confirmed yet (CONFIRMED_MATCH_PRIORITY).
- IDs survive misses up to `max_miss_seconds` (1 s) of the source's time in the library; after that a
  hand that shows again near where it was lost, within REID_SECONDS, takes its old ID back; any other
  hand gets a new ID. A new hand is shown at once but gets its ID when CONFIRM_RUNS detector runs in a
  row saw it (track_ids UNCONFIRMED until then), so a false positive of a few runs never takes an ID; IDs
  count from 1.
- Shown: the hands the detector found on its latest run (not the ones it lost), moved by the tracker
  on the frames in between.
- `smooth`: the box shown for a detected hand is the Kalman filter's estimate instead of the raw
  detection, with a filter that trusts a single detection less than ByteTrack's default (see
  SMOOTH_MEASUREMENT_NOISE); it follows motion but not the detector's frame-to-frame jitter.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from utils.common.boxes import iou_matrix, normalized_to_pixels, pixels_to_normalized
from utils.common.checks import checked_number
from utils.common.errors import UserError

ALGORITHMS = ("bytetrack", "ocsort", "sort")
DEFAULT_ALGORITHM = "bytetrack"
DEFAULT_FPS = 30.0
MAX_MISS_SECONDS = 1.0            # a hand unseen this long loses its ID
MIN_TRACK_IOU = 0.1               # a detection continues a track when it overlaps its prediction this much
LIBRARY_BUFFER_FPS = 30.0         # `trackers` counts lost_track_buffer in frames of a 30 FPS video
# ByteTrack's filter multiplies the measurement noise by 0.1 (it trusts every detection); smoothing
# scales it up so one detection moves the estimate less. Picked on the real video: factors 1, 5, 8, 10,
# 12, 20, 100 took the stillest second's jitter from 2.08 px (320x240) to 1.84, 1.59, 1.50, 1.46, 1.42,
# 1.33, 0.99, and N = 3 recall from 0.960 to 0.960, 0.955, 0.960, 0.952, 0.952, 0.952, 0.902: 8 keeps
# the recall and takes 28% off the jitter.
SMOOTH_MEASUREMENT_NOISE = 8.0
LABEL_FONT_SCALE = 0.45          # the detector's label size, on frames up to LABEL_FONT_REFERENCE_WIDTH wide
LABEL_FONT_REFERENCE_WIDTH = 640
UNCONFIRMED = -1                  # track_ids value of a hand seen by one detector run so far
# Re-association after a miss: a newly confirmed track takes the ID of a hand lost at most this long
# ago whose last box was near (centres at most REID_DISTANCE box diagonals apart), instead of a new ID.
# The library only re-matches a lost track by IoU with its Kalman prediction, which a hand that moved
# during the miss fails. Measured on the real hand video (see README "Tracking").
REID_SECONDS = 3.0
# Detector runs in a row that give a hand its ID (the library's minimum_consecutive_frames): on the real hand
# video, 3 keeps the small false hands of a few frames from taking IDs (the one hand: 3 IDs at N = 1 with 1 or 2).
CONFIRM_RUNS = 3
REID_DISTANCE = 1.5
# Confirmed tracks are matched first, as in ByteTrack's paper: the library matches every track at once, maximizing
# the sum of IoUs, so a pending duplicate box (the detector's second box on the same hand) could take a confirmed
# hand's detection and leave it the false box beside it. On the real hand video at N = 3 that handed the hand a
# third ID. Their IoUs weigh this much more in the library's assignment.
CONFIRMED_MATCH_PRIORITY = 1000.0
# Optical flow on the frames the detector skips (`update(..., image=)`): each box moves by the median
# Lucas-Kanade motion of the corners found inside it since the previous frame; fewer than FLOW_MIN_POINTS
# followed points leave it to the Kalman prediction. On the real hand video this took recall against per-frame
# detection from 0.921 to 0.932 at N = 3 and from 0.851 to 0.910 at N = 5 (a full-similarity fit with
# scale did no better); see README "Tracking".
FLOW_MAX_CORNERS = 40
FLOW_CORNER_QUALITY = 0.01
FLOW_CORNER_DISTANCE = 4          # px between corners
FLOW_MIN_POINTS = 4
FLOW_WINDOW = (15, 15)            # Lucas-Kanade window and pyramid levels (OpenCV's tutorial values)
FLOW_LEVELS = 2


class TrackedHands(NamedTuple):
    """One frame's tracked hands; the first three fields mean what `Detections`' do."""

    boxes: np.ndarray      # [N,4] float32, normalized (ymin, xmin, ymax, xmax)
    scores: np.ndarray     # [N] float32, the score of the hand's latest detection
    classes: np.ndarray    # [N] int32, label map ids
    track_ids: np.ndarray  # [N] int64, from 1, stable while the hand is tracked; UNCONFIRMED (-1) for a
                           # hand seen by one detector run only (it gets its ID on the next one)
    predicted: np.ndarray  # [N] bool: the detector did not run on this frame, the tracker placed the box

    @classmethod
    def empty(cls) -> "TrackedHands":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32),
                   np.zeros(0, np.int64), np.zeros(0, bool))


@dataclass
class _Visible:
    """A hand the latest detector run found: its library tracklet (its Kalman filter), the library's
    ID (-1 until confirmed), and its detection's score and class."""

    tracklet: object | None
    library_id: int
    score: float
    class_id: int
    track_id: int = UNCONFIRMED   # the public ID (from 1)
    box: np.ndarray | None = None  # pixels (xmin, ymin, xmax, ymax) shown on the latest frame


@dataclass
class _Seen:
    """Where and when a public ID was last shown, for re-association after a miss."""

    frame: int
    box: np.ndarray   # pixels (xmin, ymin, xmax, ymax)


def _smoothing_estimator(base: type) -> type:
    """`base` (one of the library's Kalman box filters) trusting one detection less."""

    class Smoothed(base):
        def __init__(self, bbox: np.ndarray):
            super().__init__(bbox)
            # Tracklets scale this again after construction (ByteTrack: x0.1); the ratio holds.
            self.kf.measurement_noise = self.kf.measurement_noise * SMOOTH_MEASUREMENT_NOISE

    Smoothed.__name__ = Smoothed.__qualname__ = f"Smoothed{base.__name__}"
    return Smoothed


def _confirmed_first_iou(threshold: float):
    """The library's IoU with the rows of confirmed tracks weighted by CONFIRMED_MATCH_PRIORITY where they reach
    `threshold`: the library's optimal assignment then matches confirmed tracks among themselves first and pending
    ones to the detections left (pairs under the threshold stay unmatchable). The library asks for the IoU of its
    tracks' predictions in its `tracks` order (or of the tracks its first pass left, a subset: plain IoU then);
    `tracker` is set once the library's tracker exists."""
    import supervision as sv
    from trackers.utils.iou import BaseIoU

    class ConfirmedFirstIoU(BaseIoU):
        tracker = None

        def _compute(self, boxes_1: np.ndarray, boxes_2: np.ndarray) -> np.ndarray:
            iou = sv.box_iou_batch(boxes_1, boxes_2)
            tracks = self.tracker.tracks if self.tracker is not None else []
            if len(tracks) != len(boxes_1):
                return iou
            confirmed = np.asarray([t.tracker_id >= 0 for t in tracks])[:, None]
            return np.where(confirmed & (iou >= threshold), iou * CONFIRMED_MATCH_PRIORITY, iou)

    return ConfirmedFirstIoU()


def _make_library_tracker(algorithm: str, fps: float, max_miss_seconds: float, score_thresh: float,
                          smooth: bool):
    import trackers
    from trackers.utils.state_representations import XCYCSRStateEstimator, XYXYStateEstimator

    buffer = max(1, round(max_miss_seconds * LIBRARY_BUFFER_FPS))  # the library's unit: 30 FPS frames
    estimator = XCYCSRStateEstimator if algorithm == "ocsort" else XYXYStateEstimator  # their defaults
    common = {"lost_track_buffer": buffer, "frame_rate": fps, "minimum_iou_threshold": MIN_TRACK_IOU,
              "minimum_consecutive_frames": CONFIRM_RUNS,
              "state_estimator_class": _smoothing_estimator(estimator) if smooth else estimator}
    # The caller already keeps only detections above its score threshold: every one of them may
    # start or continue a track (the library's defaults would ignore hands scoring under 0.6).
    if algorithm == "bytetrack":
        iou = _confirmed_first_iou(MIN_TRACK_IOU)
        iou.tracker = trackers.ByteTrackTracker(**common, track_activation_threshold=score_thresh,
                                                high_conf_det_threshold=score_thresh, iou=iou)
        return iou.tracker
    if algorithm == "ocsort":
        return trackers.OCSORTTracker(**common, high_conf_det_threshold=score_thresh)
    if algorithm == "sort":
        return trackers.SORTTracker(**common, track_activation_threshold=score_thresh)
    raise ValueError(f"unknown tracker {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")


class HandTracker:
    """Per-frame `update(detections or None, (width, height))` -> `TrackedHands`, in frame order.

    `fps` is the source's frame rate: frame k is at k / fps seconds, so misses are measured in the
    source's time whatever the processing speed (and a multi-threaded run gives the same IDs).
    """

    def __init__(self, fps: float = DEFAULT_FPS, smooth: bool = True, algorithm: str = DEFAULT_ALGORITHM,
                 max_miss_seconds: float = MAX_MISS_SECONDS, score_thresh: float = 0.0):
        checked_number(fps, "fps", above=0)
        checked_number(max_miss_seconds, "max_miss_seconds", minimum=0)
        checked_number(score_thresh, "score_thresh", minimum=0, maximum=1)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown tracker {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        self.fps, self.smooth, self.algorithm = float(fps), smooth, algorithm
        self._tracker = _make_library_tracker(algorithm, self.fps, max_miss_seconds, score_thresh, smooth)
        self._reid_frames = REID_SECONDS * self.fps
        self._frame = -1                  # frames seen so far - 1
        self._last_detected_frame = -1
        self._visible: list[_Visible] = []  # what the latest detector run found
        self._public: dict[int, int] = {}   # library track ID -> public ID
        self._seen: dict[int, _Seen] = {}   # public ID -> where it was last shown
        self._next_id = 1
        self._last_gray: np.ndarray | None = None  # the previous frame's `image`, for optical flow

    def reset(self) -> None:
        """Forget every track (a new video)."""
        self._tracker.reset()
        self._frame, self._last_detected_frame, self._visible = -1, -1, []
        self._public, self._seen, self._next_id = {}, {}, 1
        self._last_gray = None

    def update(self, detections, frame_size: tuple[int, int], index: int | None = None,
               image: np.ndarray | None = None) -> TrackedHands:
        """Next frame: its `Detections` (already filtered to the hands to keep), or None where the
        detector did not run. `frame_size` is (width, height) of the frame the detector saw (the
        tracker works in its pixels). `index`: the frame's position in the source when frames were
        dropped in between (a live source); default: the frame after the previous one. `image`: that
        frame (uint8 grey, or BGR) on every frame, to move the boxes between detector runs by optical flow
        instead of the Kalman prediction alone."""
        if not hasattr(frame_size, "__len__") or len(frame_size) != 2:
            raise UserError(f"frame_size is {frame_size!r}; expected (width, height)")
        width, height = (checked_number(side, name, minimum=1, integer=True)
                         for side, name in zip(frame_size, ("frame_size width", "frame_size height"), strict=True))
        if index is not None and index <= self._frame:
            raise ValueError(f"frame {index} comes after frame {self._frame}: frames must be tracked in order")
        gray = _gray(image, width, height) if image is not None else None
        self._frame = self._frame + 1 if index is None else index
        try:
            if detections is None:
                return self._predict(width, height, gray)
            return self._detect(detections, width, height)
        finally:
            self._last_gray = gray

    # -- internals ---------------------------------------------------------------------------------

    def _detect(self, detections, width: int, height: int) -> TrackedHands:
        import supervision as sv

        xyxy = normalized_to_pixels(detections.boxes, width, height).astype(np.float32).reshape(-1, 4)
        scores = np.asarray(detections.scores, np.float32).reshape(-1)
        classes = np.asarray(detections.classes, np.int32).reshape(-1)
        result = self._tracker.update(sv.Detections(xyxy=xyxy, confidence=scores, class_id=classes),
                                      timestamp=self._frame / self.fps)
        self._last_detected_frame = self._frame
        confirmed = {t.tracker_id: t for t in self._tracker.tracks if t.tracker_id >= 0}
        # Tracks not confirmed yet (born on this run or an earlier one): the library gives their detection the
        # ID -1 until CONFIRM_RUNS runs in a row saw it; each is the pending track its box overlaps most.
        pending = [t for t in self._tracker.tracks if t.tracker_id < 0 and t.time_since_update == 0]
        visible = []
        for box, score, class_id, tid in zip(result.xyxy, result.confidence, result.class_id,
                                             result.tracker_id, strict=True):
            if tid >= 0:
                tracklet = confirmed[int(tid)]
                shown = tracklet.get_state_bbox() if self.smooth else box
            else:
                tracklet = _best_overlap(pending, box)
                shown = box
            visible.append(_Visible(tracklet, int(tid), float(score), int(class_id),
                                    box=np.asarray(shown, np.float64)))
        self._assign_ids(visible, confirmed)
        order = np.argsort([-v.score for v in visible], kind="stable")  # best first, as Detections
        self._visible = [visible[i] for i in order]
        return self._result(self._visible, False, width, height)

    def _assign_ids(self, visible: list["_Visible"], confirmed: dict) -> None:
        """Public IDs: a known library track keeps its own; a newly confirmed one takes the nearest
        hand lost within REID_SECONDS (see REID_DISTANCE), else the next free ID."""
        known = [k for k, v in enumerate(visible) if v.library_id in self._public]
        fresh = [k for k, v in enumerate(visible) if v.library_id >= 0 and v.library_id not in self._public]
        for k in known:
            visible[k].track_id = self._public[visible[k].library_id]
        shown = {visible[k].track_id for k in known}
        for k in fresh:
            box = visible[k].box
            lost = [(pid, seen) for pid, seen in self._seen.items() if pid not in shown
                    and self._frame - seen.frame <= self._reid_frames and _near(seen.box, box)]
            if lost:
                pid = min(lost, key=lambda item: _centre_distance(item[1].box, box))[0]
                self._retire(pid, confirmed)
            else:
                pid, self._next_id = self._next_id, self._next_id + 1
            self._public[visible[k].library_id] = pid
            visible[k].track_id = pid
            shown.add(pid)
        for v in visible:
            if v.track_id != UNCONFIRMED:
                self._seen[v.track_id] = _Seen(self._frame, v.box)

    def _retire(self, pid: int, confirmed: dict) -> None:
        """The library tracks that held public ID `pid` before it moved to a new track: dropped, so that
        a late match of the old track cannot show the same ID twice."""
        for library_id in [lid for lid, p in self._public.items() if p == pid]:
            del self._public[library_id]
            old = confirmed.get(library_id)
            if old is not None and old in self._tracker.tracks:
                self._tracker.tracks.remove(old)

    def _predict(self, width: int, height: int, gray: np.ndarray | None) -> TrackedHands:
        alive = {id(t) for t in self._tracker.tracks}
        shown = [v for v in self._visible if v.tracklet is not None and id(v.tracklet) in alive]
        steps = float(self._frame - self._last_detected_frame)
        flow = gray is not None and self._last_gray is not None
        for seen in shown:
            box = _flow_moved(seen.box, self._last_gray, gray) if flow and seen.box is not None else None
            if box is None:
                # The library's Kalman prediction `steps` frames on, on a copy: the real filter only
                # steps when the detector runs again.
                estimator = copy.deepcopy(seen.tracklet.state_estimator)
                estimator.predict(steps, self.fps)
                box = np.asarray(estimator.state_to_bbox(), np.float64)
            seen.box = box
        return self._result(shown, True, width, height)

    @staticmethod
    def _result(shown: list["_Visible"], predicted: bool, width: int, height: int) -> TrackedHands:
        """The hands `shown`, at their `box`."""
        if not shown:
            return TrackedHands.empty()
        pixels = np.asarray([v.box for v in shown], np.float64).reshape(-1, 4)
        pixels[:, [0, 2]] = np.sort(pixels[:, [0, 2]], axis=1)  # a prediction may invert a box
        pixels[:, [1, 3]] = np.sort(pixels[:, [1, 3]], axis=1)
        return TrackedHands(pixels_to_normalized(pixels, width, height).astype(np.float32),
                            np.asarray([v.score for v in shown], np.float32),
                            np.asarray([v.class_id for v in shown], np.int32),
                            np.asarray([v.track_id for v in shown], np.int64),
                            np.full(len(shown), predicted))


def _gray(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` as uint8 grey, checked against the frame size."""
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.shape[:2] != (height, width):
        raise UserError(f"image is {image.dtype} {image.shape}; expected uint8 grey or BGR of the frame_size "
                        f"{width}x{height}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def _flow_moved(box: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray | None:
    """`box` (pixels) moved by the median optical flow of the corners inside it from `before` to `after`
    (grey frames); None when too few corners were followed."""
    import cv2

    height, width = before.shape
    x1, y1, x2, y2 = np.clip(np.round(box), 0, [width, height, width, height]).astype(int)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    mask = np.zeros_like(before)
    mask[y1:y2, x1:x2] = 255
    corners = cv2.goodFeaturesToTrack(before, FLOW_MAX_CORNERS, FLOW_CORNER_QUALITY, FLOW_CORNER_DISTANCE, mask=mask)
    if corners is None or len(corners) < FLOW_MIN_POINTS:
        return None
    moved, status, _ = cv2.calcOpticalFlowPyrLK(before, after, corners, None, winSize=FLOW_WINDOW,
                                                maxLevel=FLOW_LEVELS)
    followed = status.reshape(-1) == 1
    if followed.sum() < FLOW_MIN_POINTS:
        return None
    dx, dy = np.median((moved - corners).reshape(-1, 2)[followed], axis=0)
    return np.asarray(box, np.float64) + [dx, dy, dx, dy]


def _best_overlap(tracklets: list, box: np.ndarray) -> object | None:
    """The tracklet whose state box overlaps `box` most (IoU > 0), or None."""
    if not tracklets:
        return None
    iou = iou_matrix(np.asarray(box, np.float64).reshape(1, 4),
                     np.asarray([t.get_state_bbox() for t in tracklets], np.float64))[0]
    return tracklets[int(np.argmax(iou))] if iou.max() > 0 else None


def _centre_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2))


def _near(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether box b lies where box a was (centres within REID_DISTANCE of the larger diagonal)."""
    diagonal = max(float(np.hypot(a[2] - a[0], a[3] - a[1])), float(np.hypot(b[2] - b[0], b[3] - b[1])))
    return _centre_distance(a, b) <= REID_DISTANCE * diagonal


def draw_tracked_hands(image: np.ndarray, hands: TrackedHands, class_names: dict[int, str] | None = None) -> None:
    """Draw tracked hands on a BGR image in place: the box, and "#ID class score" above it (no ID
    while unconfirmed); boxes the tracker placed (predicted) are drawn thinner."""
    import cv2

    from utils.runtime.detector import BOX_COLOR_BGR, BOX_THICKNESS

    height, width = image.shape[:2]
    font_scale = LABEL_FONT_SCALE * max(1.0, width / LABEL_FONT_REFERENCE_WIDTH)  # readable on big frames
    pixels = normalized_to_pixels(hands.boxes, width, height).round().astype(int)
    for (x1, y1, x2, y2), score, class_id, tid, predicted in zip(pixels, hands.scores, hands.classes,
                                                                 hands.track_ids, hands.predicted, strict=True):
        cv2.rectangle(image, (x1, y1), (x2, y2), BOX_COLOR_BGR, 1 if predicted else BOX_THICKNESS, cv2.LINE_AA)
        name = (class_names or {}).get(int(class_id), str(int(class_id)))
        label = f"#{tid} {name} {score:.2f}" if tid > 0 else f"{name} {score:.2f}"
        cv2.putText(image, label, (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, BOX_COLOR_BGR, 1,
                    cv2.LINE_AA)


def detection_frames(every: int) -> Callable[[int], bool]:
    """Whether the detector runs on frame `index` (0-based) with --detect-every `every`."""
    if every < 1:
        raise ValueError(f"--detect-every must be >= 1, got {every}")
    return lambda index: index % every == 0
