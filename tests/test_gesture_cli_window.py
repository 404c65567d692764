"""--models hand,gesture in a real OpenCV window under Xvfb (see tests/test_window.py): the hand box with
its gesture written under it, and a face in its own colour with its label above it."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.test_gesture_cli import oxford_image
from tests.test_window import ROOT, Screen, xvfb  # noqa: F401 - the fixture
from utils.common import config
from utils.runtime.cli import SINGLE_TITLE
from utils.runtime.detector import BOX_COLOR_BGR
from utils.runtime.multi_model import OBJECT_COLORS_BGR

DESK_FRAME = 28       # hand_desk.mp4: the hand points at the desk
EDGE_MIN_PIXELS = 40  # a row with this many box-coloured pixels is a box's horizontal edge
LABEL_MIN_PIXELS = 15
REPEATS = 20


def colour_mask(screenshot_rgb: np.ndarray, bgr: tuple[int, int, int]) -> np.ndarray:
    b, g, r = bgr
    return (np.abs(screenshot_rgb.astype(int) - (r, g, b)) <= 24).all(axis=2)


def show_and_grab(display: str, image: Path, colour_bgr: tuple[int, int, int]) -> tuple[np.ndarray, dict]:
    """Run the single-threaded detector with both models on one image in a window; (screenshot once
    `colour_bgr` shows on it, the first JSON line). The image is shown REPEATS times, as a short video
    would be: a window shown a single frame is sometimes never painted under a busy Xvfb."""
    frames = image.parent / "frames"
    frames.mkdir()
    for i in range(REPEATS):
        (frames / f"{i:03d}{image.suffix}").write_bytes(image.read_bytes())

    env = dict(os.environ, DISPLAY=display, TF_CPP_MIN_LOG_LEVEL="2", QT_QPA_PLATFORM="xcb", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "detect_single_threaded.py", "--source", str(frames), "--display", "1",
                                "--fps", "0", "--models", "hand,gesture", "--json", "-", "--linger", "30"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The JSON line goes out just before the frame is shown: wait for it, then for the window.
        ready, _, _ = select.select([process.stdout], [], [], 45)
        assert ready, "no JSON line in time"
        line = json.loads(process.stdout.readline())
        deadline, shown, screen = time.monotonic() + 45, False, Screen(display, SINGLE_TITLE)
        while time.monotonic() < deadline and not shown and process.poll() is None:
            time.sleep(0.5)
            screenshot = screen.grab()
            shown = colour_mask(screenshot, colour_bgr).sum() > 2 * EDGE_MIN_PIXELS
        if shown:
            time.sleep(1.0)  # let it settle, then look again
            screenshot = screen.grab()
        assert process.poll() is None, f"the script ended early:\n{process.communicate()[1]}"
    finally:
        process.kill()
        process.wait()
    if os.environ.get("HANDTRACK_KEEP_SCREENSHOT"):
        cv2.imwrite(os.environ["HANDTRACK_KEEP_SCREENSHOT"], cv2.cvtColor(screenshot, cv2.COLOR_RGB2BGR))
    return screenshot, line


def box_edges(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, top, x2, bottom) of the box drawn in `mask`'s colour, from its long horizontal edges."""
    rows = np.flatnonzero(mask.sum(axis=1) >= EDGE_MIN_PIXELS)
    assert len(rows), f"no box edge in the colour ({int(mask.sum())} pixels of it)"
    xs = np.flatnonzero(mask[rows[-1]])
    return int(xs.min()), int(rows[0]), int(xs.max()), int(rows[-1])


@pytest.mark.timeout(120)
def test_window_shows_the_gesture_under_the_hand_box(xvfb, hand_video, model_dir, tmp_path):  # noqa: F811
    capture = cv2.VideoCapture(str(hand_video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, DESK_FRAME)
    ok, bgr = capture.read()
    capture.release()
    assert ok
    cv2.imwrite(str(tmp_path / "desk.png"), bgr)
    screenshot, line = show_and_grab(xvfb, tmp_path / "desk.png", BOX_COLOR_BGR)
    assert line["gestures"][0] in config.GESTURE_HAND_CLASSES, line

    green = colour_mask(screenshot, BOX_COLOR_BGR)
    x1, top, x2, bottom = box_edges(green)
    assert green[max(top - 20, 0):top - 2, x1:x2 + 60].sum() >= LABEL_MIN_PIXELS, "no 'hand score' label above"
    assert green[bottom + 3:bottom + 30, x1 - 2:x2 + 2].sum() >= LABEL_MIN_PIXELS, "no gesture label under the box"


@pytest.mark.timeout(120)
def test_window_shows_the_face_in_its_colour_with_its_label(xvfb, model_dir, tmp_path):  # noqa: F811
    photo = oxford_image("Buffy_1.jpg", tmp_path)
    screenshot, line = show_and_grab(xvfb, photo, OBJECT_COLORS_BGR[config.GESTURE_FACE_CLASS])
    assert [o["class_name"] for o in line["objects"]].count(config.GESTURE_FACE_CLASS) == 1, line

    orange = colour_mask(screenshot, OBJECT_COLORS_BGR[config.GESTURE_FACE_CLASS])
    x1, top, x2, bottom = box_edges(orange)
    face = next(o["box"] for o in line["objects"])
    # Qt may scale the picture to its window: compare shapes, not sizes.
    assert (x2 - x1) / (bottom - top) == pytest.approx((face[2] - face[0]) / (face[3] - face[1]), rel=0.15)
    assert orange[max(top - 20, 0):top - 2, x1:x2 + 60].sum() >= LABEL_MIN_PIXELS, "no 'face score' label above"
    if line["boxes"]:  # the hand model's box beside the face, in its own colour
        assert colour_mask(screenshot, BOX_COLOR_BGR).sum() > EDGE_MIN_PIXELS
