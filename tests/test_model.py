"""The pretrained EgoHands model, rebuilt from handtrack.js, in every format (built by `make model`)."""
from __future__ import annotations

import numpy as np
import pytest

from utils import detector_utils
from utils.common import config
from utils.common.boxes import iou_matrix
from utils.evaluation.coco import coco_evaluate, detections_to_annotations

BACKENDS = {
    "frozen_graph": config.FROZEN_GRAPH_NAME,
    "saved_model": config.SAVED_MODEL_NAME,
    "tflite_fp32": config.TFLITE_FP32_NAME,
    "tflite_int8": config.TFLITE_INT8_NAME,
}


@pytest.fixture(scope="module")
def detections(model_dir, chess_sample):
    """Each backend's detections on the 100 CHESS frames (computed once)."""
    frames, _ = chess_sample
    results = {}
    for backend, name in BACKENDS.items():
        detector = detector_utils.load_inference_graph(model_dir / name)
        results[backend] = [detector.detect(frame) for frame in frames]
    return results


def _ap50(detections, chess_sample) -> float:
    frames, truth = chess_sample
    height, width = frames[0].shape[:2]
    return coco_evaluate(truth, [detections_to_annotations(d, width, height) for d in detections])["AP50"]


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_backend_finds_the_hands(backend, detections, chess_sample):
    assert _ap50(detections[backend], chess_sample) >= 0.95


def test_frozen_graph_and_saved_model_are_identical(detections):
    for frozen, saved in zip(detections["frozen_graph"], detections["saved_model"], strict=False):
        np.testing.assert_array_equal(frozen.boxes, saved.boxes)
        np.testing.assert_array_equal(frozen.scores, saved.scores)
        np.testing.assert_array_equal(frozen.classes, saved.classes)


def test_tflite_fp32_scores_match_the_graph(detections):
    compared = 0
    for graph, lite in zip(detections["frozen_graph"], detections["tflite_fp32"], strict=False):
        confident = graph.scores > 0.05
        overlap = iou_matrix(graph.boxes[confident], lite.boxes)
        match = overlap.argmax(axis=1)
        assert (overlap.max(axis=1) > 0.99).all(), "a graph detection has no TFLite twin"
        np.testing.assert_allclose(lite.scores[match], graph.scores[confident], atol=1e-3)
        compared += int(confident.sum())
    assert compared > 100


def test_int8_accuracy_holds(detections, chess_sample):
    fp32, int8 = (_ap50(detections[b], chess_sample) for b in ("tflite_fp32", "tflite_int8"))
    assert int8 >= fp32 - 0.01


def test_default_model_is_the_fastest_whose_accuracy_holds(model_dir):
    assert detector_utils.default_model_path(model_dir).name == config.TFLITE_INT8_NAME


def test_contract_classes_and_label_map(detections, model_dir):
    for results in detections.values():
        assert all(set(d.classes.tolist()) <= {1} for d in results)
        assert all((np.diff(d.scores) <= 0).all() for d in results), "scores not sorted best first"
        assert all(((d.boxes >= 0) & (d.boxes <= 1)).all() for d in results if len(d.boxes))
    assert detector_utils.load_inference_graph(model_dir / config.TFLITE_FP32_NAME).class_names == {1: "hand"}


def test_rebuilt_graph_matches_the_original_tfjs_graph(model_dir, chess_sample):
    """Our frozen graph (batch resize, no TF1 while_loop) gives the original graph's raw outputs."""
    tf = pytest.importorskip("tensorflow")
    from utils.export.tfjs import load_tfjs_graph_def

    if not config.HANDTRACKJS_MODEL_DIR.exists():
        pytest.skip(f"{config.HANDTRACKJS_MODEL_DIR} not found: run `make model`")
    original = tf.Graph()
    with original.as_default():
        tf.graph_util.import_graph_def(load_tfjs_graph_def(config.HANDTRACKJS_MODEL_DIR), name="")
    ours = detector_utils.load_inference_graph(model_dir / config.FROZEN_GRAPH_NAME)
    with tf.compat.v1.Session(graph=original) as session:
        for frame in chess_sample[0][:5]:
            scores, boxes = session.run(["Postprocessor/Slice:0", "Postprocessor/ExpandDims_1:0"],
                                        {"image_tensor:0": frame[None]})
            raw_scores, raw_boxes = ours.session.run(["raw_detection_scores:0", "raw_detection_boxes:0"],
                                                     {"image_tensor:0": frame[None]})
            np.testing.assert_allclose(raw_scores.ravel(), scores.ravel(), atol=1e-6)
            np.testing.assert_allclose(raw_boxes.ravel(), boxes.ravel(), atol=1e-6)


def test_tflite_resize_matches_the_graph_preprocessor(chess_sample):
    tf = pytest.importorskip("tensorflow")
    from utils.export.exporter import legacy_resize_and_normalize
    from utils.runtime.contract import preprocess_for_tflite

    frame = chess_sample[0][0]
    expected = legacy_resize_and_normalize(tf.constant(frame[None])).numpy()
    np.testing.assert_allclose(preprocess_for_tflite(frame), expected, atol=1e-4)
