import numpy as np

from utils.common.boxes import (
    box_areas,
    iou_matrix,
    normalized_to_pixels,
    pixels_to_normalized,
)


def test_normalized_pixels_round_trip():
    pixels = np.array([[10, 20, 110, 220], [0, 0, 640, 480]], float)
    normalized = pixels_to_normalized(pixels, 640, 480)
    np.testing.assert_allclose(normalized[0], [20 / 480, 10 / 640, 220 / 480, 110 / 640])
    np.testing.assert_allclose(normalized_to_pixels(normalized, 640, 480), pixels)


def test_conversions_clip_to_the_image():
    np.testing.assert_allclose(normalized_to_pixels([[-0.1, -0.2, 1.3, 0.5]], 100, 50), [[0, 0, 50, 50]])
    np.testing.assert_allclose(pixels_to_normalized([[-5, 10, 120, 60]], 100, 50), [[0.2, 0, 1, 1]])


def test_iou_and_areas():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150, 0, 1]])
    np.testing.assert_allclose(box_areas(b), [100, 100, 100])
    assert iou_matrix(np.zeros((1, 4)), np.zeros((1, 4)))[0, 0] == 0  # degenerate boxes: no NaN

