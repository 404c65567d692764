"""HandTracker: IDs through misses, crossing hands, new IDs after a long absence, predicted boxes
between detector runs, smoothing; on fabricated Detections sequences and on the real hand video."""
from __future__ import annotations

import numpy as np
import pytest

from utils.common.boxes import normalized_to_pixels, pixels_to_normalized
from utils.common.errors import UserError
from utils.evaluation import tracking as metrics
from utils.runtime.detector import Detections
from utils.runtime.tracking import (
    CONFIRM_RUNS,
    REID_SECONDS,
    UNCONFIRMED,
    HandTracker,
    TrackedHands,
    detection_frames,
)

SIZE = (640, 480)
FPS = 30.0


def hands(*pixel_boxes, score: float = 0.9) -> Detections:
    """Detections for pixel boxes (xmin, ymin, xmax, ymax) in a SIZE frame."""
    boxes = pixels_to_normalized(np.asarray(pixel_boxes, float).reshape(-1, 4), *SIZE).astype(np.float32)
    return Detections(boxes, np.full(len(boxes), score, np.float32), np.ones(len(boxes), np.int32))


NOTHING = hands()


def pixels(result: TrackedHands) -> np.ndarray:
    return normalized_to_pixels(result.boxes, *SIZE)


def moving_box(t: int, x0: float = 100, y0: float = 200, vx: float = 3.0, w: float = 80, h: float = 100):
    return (x0 + vx * t, y0, x0 + vx * t + w, y0 + h)


def _seen(tracker: HandTracker, box, runs: int = CONFIRM_RUNS) -> TrackedHands:
    """`runs` detector runs finding the hand at `box`; the last result."""
    return [tracker.update(hands(box), SIZE) for _ in range(runs)][-1]


def test_first_sightings_are_unconfirmed_then_numbered_from_one():
    """A hand is shown at once, but takes an ID only when CONFIRM_RUNS runs in a row have seen it."""
    tracker = HandTracker(FPS)
    for t in range(CONFIRM_RUNS - 1):
        early = tracker.update(hands(moving_box(t)), SIZE)
        assert early.track_ids.tolist() == [UNCONFIRMED] and not early.predicted.any()
    confirmed = tracker.update(hands(moving_box(CONFIRM_RUNS - 1)), SIZE)
    assert confirmed.track_ids.tolist() == [1]
    assert confirmed.scores.tolist() == pytest.approx([0.9]) and confirmed.classes.tolist() == [1]


def test_id_kept_through_a_ten_frame_miss():
    tracker = HandTracker(FPS, smooth=False)
    ids = [tracker.update(hands(moving_box(t)), SIZE).track_ids.tolist() for t in range(10)]
    assert ids[-1] == [1]
    for _ in range(10):  # the detector runs and finds nothing: no box is shown, the ID is kept
        assert len(tracker.update(NOTHING, SIZE).boxes) == 0
    back = tracker.update(hands(moving_box(20)), SIZE)
    assert back.track_ids.tolist() == [1]


def _absent(tracker: HandTracker, seconds: float) -> None:
    for _ in range(int(seconds * FPS)):
        tracker.update(NOTHING, SIZE)


def test_a_hand_back_near_where_it_was_lost_takes_its_id_back():
    """Lost for 2 s (past the library's 1 s) and moved by half its size: the same hand, the same ID."""
    tracker = HandTracker(FPS)
    for t in range(10):
        tracker.update(hands(moving_box(t, vx=0)), SIZE)
    _absent(tracker, 2.0)
    again = _seen(tracker, moving_box(0, x0=150, vx=0))  # IoU 0.3 with the lost box
    assert again.track_ids.tolist() == [1]


def test_new_id_after_a_long_absence_or_far_away():
    for seconds, x0 in ((REID_SECONDS + 1, 100), (0.5, 500)):
        tracker = HandTracker(FPS)
        for t in range(10):
            tracker.update(hands(moving_box(t, vx=0)), SIZE)
        _absent(tracker, seconds)
        if x0 != 100:  # the first hand is still tracked (lost < 1 s) while another shows far away
            assert _seen(tracker, moving_box(0, x0=x0, vx=0)).track_ids.tolist() == [2]
            continue
        assert _seen(tracker, moving_box(0, vx=0)).track_ids.tolist() == [2]


def test_a_reused_id_is_never_shown_twice():
    """The old library track may match again after its ID moved on: it must not show that ID too."""
    tracker = HandTracker(FPS, smooth=False)
    for t in range(10):
        tracker.update(hands(moving_box(t, vx=0)), SIZE)
    _absent(tracker, 0.5)
    ids = []
    for _ in range(10):  # the hand jumps by its own width (no IoU): a new library track, ID 1 reused
        ids.append(tracker.update(hands(moving_box(0, x0=180, vx=0)), SIZE).track_ids.tolist())
    assert ids[-1] == [1]
    both = [tracker.update(hands(moving_box(0, x0=100, vx=0), moving_box(0, x0=180, vx=0)), SIZE)
            for _ in range(CONFIRM_RUNS)][-1]
    assert sorted(both.track_ids.tolist()) == [1, 2]


def test_a_duplicate_box_never_takes_a_confirmed_hands_detection():
    """A second box on the hand starts a pending track; on the next run the hand's detection overlaps the confirmed
    hand a little more than the pending box, and a small false box overlaps both a little. Matching all tracks at
    once (the library's sum of IoUs: 0.81 + 0.33 < 0.79 + 0.36) gives the confirmed ID to the false box; matched
    first, the confirmed hand keeps its own detection (the real video's third ID at N = 3)."""
    tracker = HandTracker(FPS, smooth=False)
    hand, duplicate = (100, 100, 200, 200), (110, 110, 190, 190)
    assert _seen(tracker, hand, CONFIRM_RUNS + 2).track_ids.tolist() == [1]
    tracker.update(hands(hand, duplicate), SIZE)
    detection, false_box = (105, 105, 195, 195), (100, 100, 160, 160)
    result = tracker.update(hands(detection, false_box), SIZE)
    shown_as_1 = pixels(result)[result.track_ids == 1]
    assert len(shown_as_1) == 1 and shown_as_1[0].tolist() == pytest.approx(detection, abs=0.5)


def test_two_hands_crossing_slowly_keep_their_ids():
    tracker = HandTracker(FPS)
    # Left hand moves right, right hand moves left, at the same height: their boxes overlap mid-way.
    frames = 60
    last = None
    for t in range(frames):
        left = moving_box(t, x0=100, vx=4.0)
        right = moving_box(t, x0=100 + 4.0 * frames, vx=-4.0)
        result = tracker.update(hands(left, right), SIZE)
        if t >= CONFIRM_RUNS - 1:
            by_id = dict(zip(result.track_ids.tolist(), pixels(result)[:, 0], strict=True))
            assert sorted(by_id) == [1, 2]
            last = by_id
        if t == CONFIRM_RUNS - 1:
            first_ids = {int(i): x for i, x in zip(result.track_ids, pixels(result)[:, 0], strict=True)}
            left_id = min(first_ids, key=first_ids.get)
    # The hand that started on the left ends on the right, under the same ID.
    assert last[left_id] == pytest.approx(moving_box(frames - 1, x0=100, vx=4.0)[0], abs=8)


def test_detect_every_three_predicts_the_frames_between():
    tracker = HandTracker(FPS, smooth=False)
    every = detection_frames(3)
    results = [tracker.update(hands(moving_box(t)) if every(t) else None, SIZE) for t in range(15)]
    assert all(len(r.boxes) == 1 for r in results)
    assert [bool(r.predicted[0]) for r in results] == [t % 3 != 0 for t in range(15)]
    # Predicted boxes follow the motion the filter learnt (3 px per frame to the right).
    for t in range(6, 15):
        if t % 3:
            assert pixels(results[t])[0, 0] == pytest.approx(moving_box(t)[0], abs=3.0)
            assert results[t].track_ids.tolist() == [1]
    # Between the first two runs the unconfirmed hand is carried too, still without an ID.
    assert results[1].track_ids.tolist() == [UNCONFIRMED] and results[1].predicted.all()


def test_a_hand_lost_by_the_detector_is_not_carried():
    tracker = HandTracker(FPS)
    every = detection_frames(2)
    for t in range(6):
        tracker.update(hands(moving_box(t)) if every(t) else None, SIZE)
    assert len(tracker.update(NOTHING, SIZE).boxes) == 0  # frame 6: the detector ran and found nothing
    assert len(tracker.update(None, SIZE).boxes) == 0     # frame 7: nothing to carry


def test_smoothing_reduces_jitter_of_a_still_hand():
    rng = np.random.default_rng(0)
    still = np.array([200, 150, 300, 280], float)
    noisy = [still + rng.normal(0, 3, 4) for _ in range(90)]
    jitter = {}
    for smooth in (False, True):
        tracker = HandTracker(FPS, smooth=smooth)
        shown = [pixels(tracker.update(hands(box), SIZE))[0] for box in noisy]
        jitter[smooth] = metrics.box_jitter(np.array(shown[10:]))
    assert jitter[True] < 0.8 * jitter[False]


def test_reset_forgets_tracks():
    tracker = HandTracker(FPS)
    for t in range(3):
        tracker.update(hands(moving_box(t)), SIZE)
    tracker.reset()
    assert tracker.update(hands(moving_box(3)), SIZE).track_ids.tolist() == [UNCONFIRMED]


def _textured_frame(x: int, y: int = 150, side: int = 100) -> np.ndarray:
    """A SIZE grey frame: flat, with a square of fixed random texture (a 'hand') at x, y."""
    frame = np.full(SIZE[::-1], 90, np.uint8)
    frame[y:y + side, x:x + side] = np.random.default_rng(7).integers(0, 255, (side, side), dtype=np.uint8)
    return frame


def test_boxes_between_detector_runs_follow_the_image():
    """A still hand, then it moves 8 px a frame on frames the detector skips: the Kalman prediction (its velocity
    learned as 0) keeps the box still, the optical flow of the frame moves it with the hand."""
    hand = (200, 150, 300, 250)
    for image in (True, False):
        tracker = HandTracker(FPS, smooth=False)
        for _ in range(CONFIRM_RUNS + 2):
            tracker.update(hands(hand), SIZE, image=_textured_frame(200) if image else None)
        for step in (1, 2):
            result = tracker.update(None, SIZE, image=_textured_frame(200 + 8 * step) if image else None)
            assert result.predicted.all() and result.track_ids.tolist() == [1]
            expected = np.add(hand, [8 * step, 0, 8 * step, 0]) if image else hand
            assert pixels(result)[0].tolist() == pytest.approx(expected, abs=1.0), (image, step)


def test_a_blank_frame_leaves_the_box_to_the_kalman_prediction():
    tracker = HandTracker(FPS, smooth=False)
    blank = np.full(SIZE[::-1], 90, np.uint8)  # no corners to follow
    for t in range(CONFIRM_RUNS + 2):
        tracker.update(hands(moving_box(t)), SIZE, image=blank)
    result = tracker.update(None, SIZE, image=blank)
    assert pixels(result)[0].tolist() == pytest.approx(moving_box(CONFIRM_RUNS + 2), abs=1.5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="fps"):
        HandTracker(0)
    with pytest.raises(ValueError, match="unknown tracker"):
        HandTracker(FPS, algorithm="deepsort")
    with pytest.raises(ValueError, match="detect-every"):
        detection_frames(0)
    with pytest.raises(UserError, match="expected uint8 grey or BGR of the frame_size 640x480"):
        HandTracker(FPS).update(None, SIZE, image=np.zeros((240, 320), np.uint8))


# --- The real video ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def video_detections(hand_video, model_dir):
    """The default model's kept detections on every frame of the real hand video (320x240)."""
    import cv2

    from utils.common import config
    from utils.runtime import detector as detector_utils

    detector = detector_utils.load_inference_graph(detector_utils.default_model_path(model_dir))
    capture = cv2.VideoCapture(str(hand_video))
    kept = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        rgb = cv2.cvtColor(cv2.resize(bgr, (320, 240)), cv2.COLOR_BGR2RGB)
        d = detector.detect(rgb)
        keep = np.argsort(-d.scores, kind="stable")[:config.DEFAULT_NUM_HANDS]
        keep = keep[d.scores[keep] > config.DEFAULT_SCORE_THRESHOLD]
        kept.append(Detections(d.boxes[keep], d.scores[keep], d.classes[keep]))
    capture.release()
    assert len(kept) > 300
    return kept


def track_video(detections: list[Detections], every: int, smooth: bool) -> tuple[list, list]:
    tracker = HandTracker(FPS, smooth=smooth)
    run = detection_frames(every)
    boxes, ids = [], []
    for t, d in enumerate(detections):
        result = tracker.update(d if run(t) else None, (320, 240))
        boxes.append(normalized_to_pixels(result.boxes, 320, 240))
        ids.append(result.track_ids.tolist())
    return boxes, ids


def test_real_video_tracked_boxes_follow_the_detector(video_detections):
    reference = [normalized_to_pixels(d.boxes, 320, 240) for d in video_detections]
    boxes, ids = track_video(video_detections, every=3, smooth=True)
    assert metrics.recall(boxes, reference) >= 0.9
    assert metrics.id_switches(boxes, ids) <= 2
    assert metrics.track_count(ids) <= 10  # one hand, plus the detector's short-lived second boxes


def test_real_video_smoothing_steadies_the_stillest_second(video_detections):
    reference = [normalized_to_pixels(d.boxes, 320, 240) for d in video_detections]
    start = metrics.stillest_run(reference, int(FPS))
    assert start is not None
    jitter = {}
    for smooth in (False, True):
        boxes, _ = track_video(video_detections, every=1, smooth=smooth)
        run = boxes[start:start + int(FPS)]
        assert all(len(b) == 1 for b in run)
        jitter[smooth] = metrics.box_jitter(np.concatenate(run))
    assert jitter[True] < 0.9 * jitter[False]
