"""The runtime API: load any model in hand_inference_graph/ and detect hands in RGB frames.

    from utils.runtime import detector as detector_utils
    detector = detector_utils.load_inference_graph("hand_inference_graph/hand_detector_int8.tflite")
    boxes, scores, classes = detector.detect(rgb_frame)   # normalized (ymin, xmin, ymax, xmax)

Every backend (frozen graph, SavedModel, TFLite) returns the same thing, best score first.
The seed's helpers (`detect_objects`, `draw_box_on_image`, `draw_fps_on_image`,
`WebcamVideoStream`) keep their names and meaning. Nothing is loaded at import time.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from utils.common import config
from utils.common.checks import checked_number
from utils.common.errors import UserError
from utils.common.label_map import LabelMapError, read_label_map

BOX_COLOR_BGR = (77, 255, 9)  # the original project's green
TEXT_COLOR_BGR = (255, 255, 255)
BOX_THICKNESS = 2

# Fastest first: the default model is the first of these that exists (int8 AP@0.5 holds
# within 0.01 of float32, see tests/test_model.py).
MODEL_PREFERENCE = (config.TFLITE_INT8_NAME, config.TFLITE_FP32_NAME, config.SAVED_MODEL_NAME,
                    config.FROZEN_GRAPH_NAME)


class ModelLoadError(UserError):
    """A model file that is missing, corrupt or does not follow the tensor contract."""


class Detections(NamedTuple):
    boxes: np.ndarray    # [N,4] float32, normalized (ymin, xmin, ymax, xmax)
    scores: np.ndarray   # [N] float32, descending
    classes: np.ndarray  # [N] int32, label map ids (1-based)


def _model_error(path: Path, problem: str) -> ModelLoadError:
    return ModelLoadError(f"{path}: {problem}; run `make model` (or `make export`) to build it")


def _detections(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, count: float) -> Detections:
    n = int(count)
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4)[:n],
                      np.asarray(scores, np.float32).reshape(-1)[:n],
                      np.asarray(classes).reshape(-1)[:n].astype(np.int32))


class ImageError(UserError):
    """An image detect() cannot take (see _check_rgb for what it takes)."""


_UINT8_MAX = 255
_UINT16_TO_UINT8 = 257  # 65535 / 255: full-range 16-bit -> full-range 8-bit
_FLOAT_SLACK = 1e-3     # float rounding just outside [0, 1] is still taken (and clipped)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    """The image detect() takes, as contiguous uint8 [H,W,3] RGB; anything else is refused (ImageError).

    Taken: uint8 [H,W,3] RGB as is (the contract); float [H,W,3] in 0..1 (scaled by 255, as
    skimage/TF images are); uint16 [H,W,3] (full range, divided by 257); other integer types holding
    0..255. Refused, with one line saying what to pass: None (a failed cv2.imread), non-arrays, an
    empty image, a shape other than [H,W,3] (grayscale, RGBA, a batch), bool masks, float images
    outside 0..1 or with NaN, integers outside 0..255.
    """
    def refuse(problem: str, fix: str = "pass an RGB uint8 array [H,W,3]") -> ImageError:
        return ImageError(f"detect(): {problem}; {fix}")

    if rgb is None:
        raise refuse("the image is None (cv2.imread gives None for a missing or unreadable file)",
                     "check the file, then pass cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)")
    if not isinstance(rgb, np.ndarray):
        raise refuse(f"expected a NumPy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        fix = ("convert it with cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)" if rgb.ndim == 2 else
               "drop the alpha channel: image[..., :3]" if rgb.ndim == 3 and rgb.shape[2] == 4 else
               "pass one RGB image [H,W,3] per call")
        raise refuse(f"expected an RGB image [H,W,3], got shape {list(rgb.shape)}", fix)
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise refuse(f"the image is empty ({rgb.shape[1]}x{rgb.shape[0]} pixels)")
    kind = rgb.dtype.kind
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    if kind == "b":
        raise refuse("a bool array is a mask, not an image")
    if kind == "f":
        low, high = float(np.min(rgb)), float(np.max(rgb))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise refuse("the float image holds NaN or infinity")
        if low < -_FLOAT_SLACK or high > 1 + _FLOAT_SLACK:
            raise refuse(f"float images must hold 0..1, this one holds {low:g}..{high:g}",
                         "for 0..255 values pass image.astype(np.uint8)")
        return np.clip(np.rint(rgb * _UINT8_MAX), 0, _UINT8_MAX).astype(np.uint8)
    if rgb.dtype == np.uint16:
        return np.rint(rgb / _UINT16_TO_UINT8).astype(np.uint8)
    if kind in "iu":
        low, high = int(np.min(rgb)), int(np.max(rgb))
        if low < 0 or high > _UINT8_MAX:
            raise refuse(f"integer images must hold 0..255, this one ({rgb.dtype}) holds {low}..{high}")
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    raise refuse(f"images of type {rgb.dtype} are not supported")


def select_detections(detections: Detections, min_score: float | None = None,
                      max_hands: int | None = None) -> Detections:
    """The best `max_hands` boxes scoring above `min_score` (the original's rule); None: no limit."""
    if min_score is not None:
        checked_number(min_score, "min_score", minimum=0, maximum=1)
    if max_hands is not None:
        max_hands = checked_number(max_hands, "max_hands", minimum=0, integer=True)
    if min_score is None and max_hands is None:
        return detections
    order = np.argsort(-detections.scores, kind="stable")[:max_hands]
    if min_score is not None:
        order = order[detections.scores[order] > min_score]
    return Detections(detections.boxes[order], detections.scores[order], detections.classes[order])


@dataclass
class HandDetector:
    """Base: `detect(rgb)` -> Detections. `clone()` gives what another thread should use."""

    path: Path
    class_names: dict[int, str] = field(default_factory=lambda: {1: "hand"})
    backend: str = ""

    def detect(self, rgb: np.ndarray, min_score: float | None = None, max_hands: int | None = None
               ) -> Detections:
        """Hands in an RGB frame, best first: at most `max_hands` scoring above `min_score` (None: all).

        `rgb`: uint8 [H,W,3] RGB (a cv2 frame needs cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)); float in 0..1
        and uint16 are scaled to it; anything else raises ImageError (a UserError) saying what to pass."""
        return select_detections(self._detect(rgb), min_score, max_hands)

    def _detect(self, rgb: np.ndarray) -> Detections:
        """Every detection the model gives (the backend's part)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator["HandDetector"]:
        """`detection_graph, sess = load_inference_graph()`, the original's spelling: both names get
        this detector, which is all `detect_objects(image_np, detection_graph, sess)` needs."""
        return iter((self, self))

    def clone(self) -> "HandDetector":
        return self  # TensorFlow sessions and functions are safe to share between threads

    def class_name(self, class_id: int) -> str:
        return self.class_names.get(int(class_id), str(int(class_id)))


class FrozenGraphDetector(HandDetector):
    """The seed's way: a frozen GraphDef run through tf.compat.v1.Session."""

    def __init__(self, path: Path, class_names: dict[int, str], num_threads: int | None = None):
        super().__init__(path, class_names, "frozen_graph")
        import tensorflow as tf

        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(path.read_bytes())
        except Exception as exc:  # protobuf's DecodeError
            raise _model_error(path, f"not a readable frozen graph ({exc.__class__.__name__})") from exc
        names = {n.name for n in graph_def.node}
        missing = [t for t in (config.INPUT_TENSOR, *config.OUTPUT_TENSORS) if t not in names]
        if missing:
            raise _model_error(path, f"graph lacks the contract's tensors {missing}")
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")
        session_config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=num_threads or 0,
                                                  inter_op_parallelism_threads=num_threads or 0)
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config)
        self._fetches = [f"{n}:0" for n in config.OUTPUT_TENSORS]

    def _detect(self, rgb: np.ndarray) -> Detections:
        boxes, scores, classes, num = self.session.run(
            self._fetches, {f"{config.INPUT_TENSOR}:0": _check_rgb(rgb)[np.newaxis]})
        return _detections(boxes, scores, classes, num[0])


class SavedModelDetector(HandDetector):
    """A SavedModel's `serving_default` signature."""

    def __init__(self, path: Path, class_names: dict[int, str]):
        super().__init__(path, class_names, "saved_model")
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise _model_error(path, f"not a loadable SavedModel ({exc.__class__.__name__})") from exc
        signature = getattr(loaded, "signatures", {}).get("serving_default")
        if signature is None:
            raise _model_error(path, "SavedModel has no 'serving_default' signature")
        inputs = signature.structured_input_signature[1]
        missing = [t for t in config.OUTPUT_TENSORS if t not in signature.structured_outputs]
        if config.INPUT_TENSOR not in inputs or missing:
            raise _model_error(path, f"signature is not image_tensor -> {list(config.OUTPUT_TENSORS)}")
        self._loaded, self._signature, self._tf = loaded, signature, tf

    def _detect(self, rgb: np.ndarray) -> Detections:
        out = self._signature(**{config.INPUT_TENSOR: self._tf.constant(_check_rgb(rgb)[np.newaxis])})
        return _detections(*(out[n].numpy()[0] for n in config.OUTPUT_TENSORS[:3]),
                           out["num_detections"].numpy()[0])


_TFLITE_LOG_SILENCED = False  # the first inference of the process has run (see TFLiteDetector)


def make_tflite_interpreter(model_path: str, num_threads: int | None):
    """LiteRT's interpreter when installed (light import), else TensorFlow's own."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the install
        from tensorflow.lite.python.interpreter import Interpreter
    return Interpreter(model_path=model_path, num_threads=num_threads)


class TFLiteDetector(HandDetector):
    """TFLite: does the legacy resize itself, then the model (SSD + TFLite_Detection_PostProcess)."""

    def __init__(self, path: Path, class_names: dict[int, str], num_threads: int | None = None):
        super().__init__(path, class_names, "tflite")
        from utils.runtime.contract import TFLITE_INPUT_NAME, TFLITE_OUTPUTS

        self.num_threads = num_threads
        try:
            self.interpreter = make_tflite_interpreter(str(path), num_threads)
            self.runner = self.interpreter.get_signature_runner("serving_default")
        except (ValueError, RuntimeError) as exc:
            raise _model_error(path, f"not a loadable TFLite model with a serving_default signature "
                                     f"({str(exc).splitlines()[0]})") from exc
        inputs = self.runner.get_input_details()
        outputs = self.runner.get_output_details()
        shape = [int(d) for d in inputs[TFLITE_INPUT_NAME]["shape"]] if TFLITE_INPUT_NAME in inputs else []
        # The model's own input shape says which square size frames are resized to (300 for the
        # hand model, 320 for the gesture model): nothing to configure per model.
        if (list(inputs) != [TFLITE_INPUT_NAME] or len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2]
                or shape[3] != 3 or sorted(outputs) != sorted(TFLITE_OUTPUTS)):
            raise _model_error(path, f"TFLite tensors are not {TFLITE_INPUT_NAME}[1,S,S,3] -> "
                                     f"{list(TFLITE_OUTPUTS)}")
        self._input_name = TFLITE_INPUT_NAME
        self.input_size = shape[1]
        global _TFLITE_LOG_SILENCED
        if not _TFLITE_LOG_SILENCED:
            # TFLite prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on the process's first
            # inference, from C++ (no setting turns it off): that inference runs here, on a blank frame,
            # while no other thread reports anything.
            from utils.common.fileio import native_stderr_silenced

            detail = inputs[TFLITE_INPUT_NAME]
            try:
                with native_stderr_silenced():
                    self.runner(**{self._input_name: np.zeros(detail["shape"], detail["dtype"])})
            except (ValueError, RuntimeError) as exc:
                raise _model_error(path, f"the TFLite model does not run ({str(exc).splitlines()[0]})") from exc
            _TFLITE_LOG_SILENCED = True

    def _detect(self, rgb: np.ndarray) -> Detections:
        from utils.runtime.contract import preprocess_for_tflite

        out = self.runner(**{self._input_name: preprocess_for_tflite(_check_rgb(rgb), self.input_size)})
        # TFLite_Detection_PostProcess numbers classes from 0 (first non-background class) and does
        # not clip boxes to the image as the graph's NMS does; its slots past num_detections are
        # uninitialised (NaN at times), so only the filled ones are read.
        n = int(out["num_detections"][0])
        return _detections(np.clip(out["detection_boxes"][0][:n], 0.0, 1.0), out["detection_scores"][0][:n],
                           out["detection_classes"][0][:n] + 1, n)

    def clone(self) -> "TFLiteDetector":
        return TFLiteDetector(self.path, self.class_names, self.num_threads)  # interpreters aren't thread-safe


def default_model_path(model_dir: str | Path = config.MODEL_DIR) -> Path:
    """The fastest model present in `model_dir` (see MODEL_PREFERENCE)."""
    model_dir = Path(model_dir)
    for name in MODEL_PREFERENCE:
        if (model_dir / name).exists():
            return model_dir / name
    raise ModelLoadError(f"{model_dir}: no hand model found ({', '.join(MODEL_PREFERENCE)}); "
                         f"run `make model` to build it")


def _class_names_for(path: Path) -> dict[int, str]:
    label_map = path.parent / config.LABEL_MAP_NAME
    if not label_map.exists():
        return {1: "hand"}
    try:
        return read_label_map(label_map)
    except LabelMapError as exc:
        raise ModelLoadError(str(exc)) from exc


def load_inference_graph(path: str | Path | None = None, num_threads: int | None = None) -> HandDetector:
    """Load a model, picking the backend from the file: `.pb`, SavedModel folder or `.tflite`.

    `path` may also be a folder like hand_inference_graph/ (then its fastest model is used).
    Class names come from hand_label_map.pbtxt beside the model.
    """
    path = Path(path) if path is not None else default_model_path()
    if path.is_dir() and not (path / "saved_model.pb").exists():
        path = default_model_path(path)
    if not path.exists():
        raise _model_error(path, "model file not found")
    class_names = _class_names_for(path)
    if path.is_dir():
        return SavedModelDetector(path, class_names)
    if path.suffix == ".tflite":
        return TFLiteDetector(path, class_names, num_threads)
    if path.suffix == ".pb":
        return FrozenGraphDetector(path, class_names, num_threads)
    raise _model_error(path, "unsupported model file (expected .pb, .tflite or a SavedModel folder)")


# --- The seed's helpers, same names and meaning ------------------------------------------------

def detect_objects(image_np: np.ndarray, detection_graph: HandDetector, sess: Any = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(boxes, scores) for an RGB frame, as the seed returned them, best first. `sess` is what
    `detection_graph, sess = load_inference_graph()` gave (the same detector); it is not needed."""
    detections = detection_graph.detect(image_np)
    return detections.boxes, detections.scores


def draw_box_on_image(num_hands_detect: int, score_thresh: float, scores: np.ndarray, boxes: np.ndarray,
                      im_width: int, im_height: int, image_np: np.ndarray,
                      classes: np.ndarray | None = None, class_names: dict[int, str] | None = None) -> int:
    """Draw up to `num_hands_detect` boxes scoring above `score_thresh` on `image_np` in place.

    Returns how many were drawn. Labels are drawn when class names are given.
    """
    import cv2

    from utils.common.boxes import normalized_to_pixels

    keep = [i for i in range(min(num_hands_detect, len(scores))) if scores[i] > score_thresh]
    pixels = normalized_to_pixels(np.asarray(boxes)[keep], im_width, im_height).round().astype(int)
    for i, (x1, y1, x2, y2) in zip(keep, pixels, strict=False):
        cv2.rectangle(image_np, (x1, y1), (x2, y2), BOX_COLOR_BGR, BOX_THICKNESS, cv2.LINE_AA)
        if class_names is not None and classes is not None:
            label = f"{class_names.get(int(classes[i]), int(classes[i]))} {scores[i]:.2f}"
            cv2.putText(image_np, label, (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        BOX_COLOR_BGR, 1, cv2.LINE_AA)
    return len(keep)


def draw_fps_on_image(fps: float | str, image_np: np.ndarray) -> None:
    import cv2

    cv2.putText(image_np, f"FPS : {fps}" if not isinstance(fps, str) else fps, (20, 50),
                cv2.FONT_HERSHEY_SIMPLEX, 0.75, BOX_COLOR_BGR, 2)


def __getattr__(name: str) -> Any:
    """`WebcamVideoStream` is loaded on first use: it is imutils' class, and imutils loads OpenCV."""
    if name == "WebcamVideoStream":
        from utils.runtime.webcam import WebcamVideoStream

        return WebcamVideoStream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
