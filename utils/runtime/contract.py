"""The tensor contract every exported model follows, and the preprocessing the TFLite models expect.

Frozen graph and SavedModel: `image_tensor` uint8 [1,H,W,3] RGB in; `detection_boxes`, `detection_scores`,
`detection_classes`, `num_detections` out (names in utils.common.config). The TFLite models take the
resized, normalized image instead, so the runtime does that resize here, exactly as the graph does.
"""
from __future__ import annotations

import numpy as np

from utils.common import config

# The TFLite model's input: the resized, normalized image (the runtime does the legacy resize).
TFLITE_INPUT_NAME = "preprocessed"
# Outputs of TFLite_Detection_PostProcess, in the op's order.
TFLITE_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


def legacy_resize_matrix(width: int, height: int, size: int = config.MODEL_INPUT_SIZE) -> np.ndarray:
    """Affine map (inverse) for cv2.warpAffine that samples like TF1's legacy bilinear resize.

    TF1 maps output pixel i to input i*in/out (no half-pixel offset); cv2.resize does not, so
    warpAffine with this pure scale and WARP_INVERSE_MAP is used instead (matches to ~1e-7).
    """
    return np.array([[width / size, 0.0, 0.0], [0.0, height / size, 0.0]], dtype=np.float64)


def preprocess_for_tflite(rgb: np.ndarray, size: int = config.MODEL_INPUT_SIZE) -> np.ndarray:
    """RGB uint8 [H,W,3] -> float32 [1,size,size,3] in [-1,1], as the original graph's Preprocessor.

    `size` is the model's square input (its TFLite input shape): 300 for the hand model, 320 for the
    gesture model, which resizes the same way (TF1 legacy bilinear, then x*2/255-1)."""
    import cv2

    height, width = rgb.shape[:2]
    resized = cv2.warpAffine(rgb.astype(np.float32), legacy_resize_matrix(width, height, size), (size, size),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return (resized * np.float32(2.0 / 255.0) - np.float32(1.0))[np.newaxis]
