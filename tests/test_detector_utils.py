"""The runtime API: backend choice, the seed's helpers, and clear errors for bad model files."""
from __future__ import annotations

import numpy as np
import pytest

from utils import detector_utils
from utils.common import config
from utils.detector_utils import ModelLoadError


def test_backend_is_picked_from_the_file(model_dir):
    expected = {config.FROZEN_GRAPH_NAME: "frozen_graph", config.SAVED_MODEL_NAME: "saved_model",
                config.TFLITE_FP32_NAME: "tflite", config.TFLITE_INT8_NAME: "tflite"}
    for name, backend in expected.items():
        assert detector_utils.load_inference_graph(model_dir / name).backend == backend
    assert detector_utils.load_inference_graph(model_dir).path.name == config.TFLITE_INT8_NAME


def test_seed_helpers_keep_their_meaning(model_dir, chess_sample):
    frame = chess_sample[0][0]
    detector = detector_utils.load_inference_graph(model_dir / config.TFLITE_FP32_NAME)
    boxes, scores = detector_utils.detect_objects(frame, detector)
    assert boxes.shape[1] == 4 and scores[0] > 0.5
    canvas = np.zeros_like(frame)
    drawn = detector_utils.draw_box_on_image(2, 0.2, scores, boxes, frame.shape[1], frame.shape[0], canvas)
    assert drawn == 2
    assert (canvas == detector_utils.BOX_COLOR_BGR).all(axis=2).sum() > 200
    detector_utils.draw_fps_on_image(30, canvas)


def test_clone_gives_a_working_independent_tflite_interpreter(model_dir, chess_sample):
    detector = detector_utils.load_inference_graph(model_dir / config.TFLITE_INT8_NAME)
    twin = detector.clone()
    assert twin.interpreter is not detector.interpreter
    frame = chess_sample[0][1]
    np.testing.assert_array_equal(twin.detect(frame).scores, detector.detect(frame).scores)


def _tiny_tflite(path):
    tf = pytest.importorskip("tensorflow")

    class Other(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * 2.0}

    module = Other()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    path.write_bytes(converter.convert())


def _saved_model_without_signature(path):
    tf = pytest.importorskip("tensorflow")
    tf.saved_model.save(tf.Module(), str(path))


@pytest.mark.parametrize("name, make, problem", [
    ("missing.tflite", None, "not found"),
    ("corrupt.pb", lambda p: p.write_bytes(b"\x00garbage" * 10), "not a readable frozen graph"),
    ("corrupt.tflite", lambda p: p.write_bytes(b"TFL3" + b"\x00" * 64), "not a loadable TFLite model"),
    ("other.tflite", _tiny_tflite, "TFLite tensors are not"),
    ("no_signature", _saved_model_without_signature, "no 'serving_default' signature"),
    ("model.onnx", lambda p: p.write_bytes(b"onnx"), "unsupported model file"),
])
def test_bad_model_files_give_one_clear_error(tmp_path, name, make, problem):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(ModelLoadError) as info:
        detector_utils.load_inference_graph(path)
    message = str(info.value)
    assert problem in message and str(path) in message and "make model" in message
    assert "\n" not in message


def test_a_graph_without_the_contract_is_refused(tmp_path):
    tf = pytest.importorskip("tensorflow")
    graph = tf.Graph()
    with graph.as_default():
        tf.constant(1.0, name="something_else")
    path = tmp_path / "other.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(ModelLoadError, match="lacks the contract's tensors"):
        detector_utils.load_inference_graph(path)


def test_no_model_in_folder_says_make_model(tmp_path):
    with pytest.raises(ModelLoadError, match="make model"):
        detector_utils.default_model_path(tmp_path)


def test_detect_keeps_the_best_hands_above_min_score(model_dir, chess_sample):
    frame = chess_sample[0][0]
    detector = detector_utils.load_inference_graph(model_dir / config.TFLITE_INT8_NAME)
    everything = detector.detect(frame)
    assert len(everything.scores) > 2 and (np.diff(everything.scores) <= 0).all()
    kept = detector.detect(frame, min_score=0.2, max_hands=1)
    assert len(kept.scores) == 1 and kept.scores[0] == everything.scores[0] > 0.2
    np.testing.assert_array_equal(kept.boxes[0], everything.boxes[0])
    assert len(detector.detect(frame, min_score=0.999999)) == 3  # a Detections tuple, maybe empty
    assert len(detector.detect(frame, min_score=0.999999).scores) == 0
    assert len(detector.detect(frame, max_hands=0).scores) == 0


def test_webcam_video_stream_is_imutils_with_a_frame_index(hand_video):
    from imutils.video import WebcamVideoStream as ImutilsStream

    stream = detector_utils.WebcamVideoStream(str(hand_video), width=320, height=240)
    assert isinstance(stream, ImutilsStream)
    first_index, first = stream.read_indexed()
    assert first_index == 0 and first.shape[2] == 3 and stream.size()[0] > 0
    stream.start()
    stream._thread.join(60)  # a file ends; a camera would run until stop()
    index, last = stream.read_indexed()
    assert index == 377 and last is None and stream.read() is None  # hand_desk.mp4: 378 frames, then the end
    stream.stop()
    assert not stream.stream.isOpened()


def test_a_tflite_model_loads_and_runs_without_tensorflow(model_dir):
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from utils import detector_utils\n"
            f"d = detector_utils.load_inference_graph({str(model_dir / config.TFLITE_INT8_NAME)!r})\n"
            "d.detect(np.zeros((240, 320, 3), np.uint8))\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'imutils') if m in sys.modules)\n"
            "print('loaded:', heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=config.ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded: []"
