"""The hand + gesture merge (utils/runtime/multi_model.py) and the TF.js graph-model pieces that need no
model: fabricated detections, label-map text and weight shards."""
from __future__ import annotations

import json

import numpy as np
import pytest

from utils.runtime.detector import Detections
from utils.runtime.multi_model import (
    MergeOptions,
    intersection_over_first,
    merge_detections,
)

GESTURE_NAMES = {1: "open", 2: "closed", 3: "pinch", 4: "point", 5: "face", 6: "pointtip", 7: "pinchtip"}
ID = {name: i for i, name in GESTURE_NAMES.items()}


def dets(rows: list[tuple[tuple[float, float, float, float], float, int]]) -> Detections:
    boxes = np.array([r[0] for r in rows], np.float32).reshape(-1, 4)
    return Detections(boxes, np.array([r[1] for r in rows], np.float32), np.array([r[2] for r in rows], np.int32))


# Normalized (ymin, xmin, ymax, xmax).
LEFT_HAND = (0.50, 0.10, 0.80, 0.30)
RIGHT_HAND = (0.50, 0.60, 0.80, 0.85)
FACE = (0.05, 0.35, 0.45, 0.65)
ON_FACE = (0.15, 0.40, 0.35, 0.55)   # a "hand" box the hand model puts on the face


def test_each_hand_box_gets_the_gesture_it_overlaps_most():
    hands = dets([(LEFT_HAND, 0.9, 1), (RIGHT_HAND, 0.8, 1), ((0.0, 0.9, 0.1, 1.0), 0.3, 1)])
    gestures = dets([
        ((0.52, 0.12, 0.80, 0.31), 0.90, ID["open"]),     # on the left hand, IoU ~0.85
        ((0.40, 0.05, 0.90, 0.40), 0.95, ID["closed"]),   # also on the left hand but looser (IoU ~0.34)
        ((0.50, 0.62, 0.78, 0.85), 0.70, ID["point"]),    # the right hand
        ((0.0, 0.9, 0.1, 1.0), 0.50, ID["pinch"]),        # on the third box but below the score threshold
    ])
    merged = merge_detections(hands, gestures, GESTURE_NAMES)
    assert merged.gestures == ["open", "point", None]
    assert merged.gesture_scores[0] == pytest.approx(0.90)
    np.testing.assert_array_equal(merged.boxes, hands.boxes)  # hand boxes pass through untouched
    np.testing.assert_array_equal(merged.scores, hands.scores)
    assert merged.objects == [] and merged.suppressed == 0

    lenient = merge_detections(hands, gestures, GESTURE_NAMES, MergeOptions(gesture_score_threshold=0.4))
    assert lenient.gestures[2] == "pinch"
    strict = merge_detections(hands, gestures, GESTURE_NAMES, MergeOptions(gesture_min_iou=0.9))
    assert strict.gestures == [None, None, None]


def test_faces_and_fingertips_become_objects():
    hands = dets([(LEFT_HAND, 0.9, 1)])
    gestures = dets([(FACE, 0.97, ID["face"]), ((0.50, 0.25, 0.55, 0.30), 0.7, ID["pointtip"]),
                     ((0.6, 0.6, 0.7, 0.7), 0.65, ID["pinchtip"]), ((0.1, 0.1, 0.2, 0.2), 0.3, ID["face"]),
                     (LEFT_HAND, 0.8, ID["pinch"])])
    merged = merge_detections(hands, gestures, GESTURE_NAMES)
    assert [(o.model, o.class_name) for o in merged.objects] == [
        ("gesture", "face"), ("gesture", "pointtip"), ("gesture", "pinchtip")]
    assert merged.objects[0].box == pytest.approx(FACE)
    assert merged.objects[0].score == pytest.approx(0.97)
    assert merged.gestures == ["pinch"]
    as_json = json.loads(json.dumps(merged.as_dict()))
    assert set(as_json) == {"boxes", "scores", "classes", "gestures", "objects"}
    assert len(as_json["boxes"]) == len(as_json["gestures"]) == 1
    assert as_json["objects"][0] == {"model": "gesture", "box": pytest.approx(list(FACE)), "score": 0.97,
                                     "class_name": "face"}


def test_suppress_faces_drops_hand_boxes_on_a_face_only():
    hands = dets([(ON_FACE, 0.95, 1), (LEFT_HAND, 0.9, 1), ((0.35, 0.25, 0.55, 0.40), 0.5, 1)])
    gestures = dets([(FACE, 0.9, ID["face"]), (LEFT_HAND, 0.8, ID["open"])])
    kept = merge_detections(hands, gestures, GESTURE_NAMES)
    assert len(kept.boxes) == 3 and kept.suppressed == 0
    merged = merge_detections(hands, gestures, GESTURE_NAMES, MergeOptions(suppress_faces=True))
    # ON_FACE lies wholly inside the face; the third box only 1/6 in it (below face_min_ioa 0.5).
    assert merged.suppressed == 1
    np.testing.assert_allclose(merged.boxes, hands.boxes[1:])
    assert merged.gestures == ["open", None]
    assert [o.class_name for o in merged.objects] == ["face"]  # the face itself is still reported


def test_suppress_faces_keeps_a_hand_in_front_of_a_face():
    # The gesture model sees a hand pose on the box at least as well as the face covers it: a real hand.
    hands = dets([(ON_FACE, 0.95, 1)])
    gestures = dets([(FACE, 0.9, ID["face"]), (ON_FACE, 0.85, ID["point"])])
    merged = merge_detections(hands, gestures, GESTURE_NAMES, MergeOptions(suppress_faces=True))
    assert merged.suppressed == 0 and merged.gestures == ["point"]
    # A face below the score threshold suppresses nothing.
    weak_face = dets([(FACE, 0.4, ID["face"])])
    assert merge_detections(hands, weak_face, GESTURE_NAMES, MergeOptions(suppress_faces=True)).suppressed == 0


def test_merge_of_empty_detections():
    empty = dets([])
    merged = merge_detections(empty, empty, GESTURE_NAMES, MergeOptions(suppress_faces=True))
    assert merged.boxes.shape == (0, 4) and merged.gestures == [] and merged.objects == []
    only_hands = merge_detections(dets([(LEFT_HAND, 0.9, 1)]), empty, GESTURE_NAMES, MergeOptions(suppress_faces=True))
    assert only_hands.gestures == [None] and only_hands.suppressed == 0


def test_intersection_over_first():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], float)
    b = np.array([[5, 5, 20, 20], [0, 0, 10, 5]], float)
    np.testing.assert_allclose(intersection_over_first(a, b), [[0.25, 0.5], [0.0, 0.0]])


def test_face_false_positives_counts_unmatched_boxes_on_faces():
    from utils.evaluation.multi_model import face_false_positives

    truth = np.array([[100, 100, 150, 150]], float)
    faces = np.array([[200, 0, 300, 100]], float)
    boxes = np.array([[101, 101, 151, 149],   # the labelled hand
                      [220, 20, 260, 60],     # on the face, no hand there: counted
                      [400, 400, 420, 420]],  # a false positive elsewhere
                     float)
    np.testing.assert_array_equal(face_false_positives(boxes, truth, faces), [False, True, False])
    np.testing.assert_array_equal(face_false_positives(boxes, np.zeros((0, 4)), np.zeros((0, 4))), [False] * 3)


def test_read_js_label_map(tmp_path):
    from utils.export.tfjs import TfjsModelError, read_js_label_map

    js = tmp_path / "index.js"
    js.write_text('const x = 1;\nconst labelMap = {\n  1: "open",\n  2: \'closed\',\n};\nconst other = {3: "no"};\n')
    assert read_js_label_map(js) == ["open", "closed"]
    js.write_text("const labelMap = {2: 'a'};")
    with pytest.raises(TfjsModelError, match="ids 1..N"):
        read_js_label_map(js)


def test_package_label_order_is_the_pinned_tarball_s(tmp_path):
    """The gesture label map comes from the pinned package's src/index.js; its order is the model's."""
    import tarfile

    from utils.common import config
    from utils.export.pretrained import tarball_name
    from utils.export.tfjs import read_js_label_map

    tarball = config.HANDTRACKJS_CACHE / tarball_name()
    if not tarball.exists():
        pytest.skip(f"{tarball} not found: run fetch_pretrained.py")
    with tarfile.open(tarball) as tar:
        (tmp_path / "index.js").write_bytes(tar.extractfile(config.HANDTRACKJS_INDEX_JS).read())
    names = read_js_label_map(tmp_path / "index.js")
    assert names == ["open", "closed", "pinch", "point", "face", "pointtip", "pinchtip"]
    assert set(names) == {*config.GESTURE_HAND_CLASSES, config.GESTURE_FACE_CLASS, *config.GESTURE_FINGERTIP_CLASSES}


def test_weight_groups_dequantize_float16_and_uint8(tmp_path):
    from utils.export.tfjs import TfjsModelError, read_weight_groups

    halves = np.array([0.5, -1.25, 3.0], np.float16)
    quant = np.array([0, 128, 255], np.uint8)
    ints = np.array([7, -2], np.int32)
    (tmp_path / "shard").write_bytes(halves.tobytes() + quant.tobytes() + ints.tobytes())
    groups = [{"paths": ["shard"], "weights": [
        {"name": "h", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
        {"name": "q", "shape": [3, 1], "dtype": "float32",
         "quantization": {"dtype": "uint8", "min": -1.0, "scale": 0.01}},
        {"name": "i", "shape": [2], "dtype": "int32"}]}]
    weights = read_weight_groups(tmp_path, groups, tmp_path / "model.json")
    np.testing.assert_array_equal(weights["h"], [0.5, -1.25, 3.0])
    assert weights["h"].dtype == np.float32
    np.testing.assert_allclose(weights["q"], [[-1.0], [0.28], [1.55]], atol=1e-6)
    np.testing.assert_array_equal(weights["i"], ints)
    groups[0]["weights"].append({"name": "extra", "shape": [4], "dtype": "float32"})
    with pytest.raises(TfjsModelError, match="truncated"):
        read_weight_groups(tmp_path, groups, tmp_path / "model.json")
