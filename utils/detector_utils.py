"""The original project's runtime API, kept so its client code runs unchanged.

    from utils import detector_utils
    detection_graph, sess = detector_utils.load_inference_graph()      # the original's way
    boxes, scores = detector_utils.detect_objects(image_np, detection_graph, sess)
    detector_utils.draw_box_on_image(2, 0.2, scores, boxes, im_width, im_height, image_np)

    detector = detector_utils.load_inference_graph()                    # or the object itself
    boxes, scores, classes = detector.detect(rgb_frame)

The code lives in utils.runtime; this module only re-exports it under the original's names.
"""
from utils.runtime.detector import (  # noqa: F401
    BOX_COLOR_BGR,
    MODEL_PREFERENCE,
    Detections,
    FrozenGraphDetector,
    HandDetector,
    ModelLoadError,
    SavedModelDetector,
    TFLiteDetector,
    default_model_path,
    detect_objects,
    draw_box_on_image,
    draw_fps_on_image,
    load_inference_graph,
    make_tflite_interpreter,
)


def __getattr__(name: str):
    """`WebcamVideoStream` (imutils' threaded camera reader) is loaded on first use: imutils loads OpenCV."""
    if name == "WebcamVideoStream":
        from utils.runtime.webcam import WebcamVideoStream

        return WebcamVideoStream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
