"""The browser build in real headless Chromium: web/handtrack.js on the exported model, against the Python detector.

Chromium (Debian's package, installed by .ci/run) is driven by web/tools/drive.mjs (playwright-core from
web/node_modules, `make test` runs `npm ci`); the model is the suite's own (HANDTRACK_MODEL_DIR), exported
as `make web` does. Skipped, with the reason, where Chromium, node or the npm packages are missing.
"""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from utils.common import config
from utils.evaluation import browser
from utils.export import web

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = config.CACHE_DIR / "test_artifacts"
MIN_IOU, MAX_SCORE_GAP = 0.9, 0.02  # float32: every box, the bar
# The int8 model's scores hang on its kernels' rounding: on one hand_desk frame the native interpreter gives
# 0.758 (XNNPack), 0.848 (built-in kernels) or 0.723 (reference kernels); the browser's XNNPack in Wasm 0.793.
# Over every 9th frame of the video the browser's scores differ from Python's by 0.016 on average, 0.094 at
# most (IoU >= 0.92). So int8 is held to IoU on the hands either side scores clearly, and a wider score gap.
CONFIDENT, INT8_SCORE_GAP = 0.5, 0.1
FAKE_CAMERA_SIZE = 360  # the real 720x720 video halved: a small .y4m (I420 is 1.5 bytes a pixel)


@pytest.fixture(scope="module")
def web_model(model_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("web") / "model"
    return out, web.export_web_model(model_dir, out)


@pytest.fixture(scope="module")
def chromium_ready():
    problem = browser.missing_browser_tools()
    if problem:
        pytest.skip(f"no headless browser here: {problem}")


def test_export_cuts_the_postprocess_op_and_keeps_the_network(web_model, model_dir):
    """The exported .tflite gives the raw outputs the JS decodes; model.json carries the op's settings."""
    from utils.runtime.detector import make_tflite_interpreter

    out, meta = web_model
    assert meta["default"] == config.TFLITE_INT8_NAME and set(meta["files"]) == {config.TFLITE_INT8_NAME,
                                                                                 config.TFLITE_FP32_NAME}
    assert len(meta["anchors"]) == config.NUM_ANCHORS and meta["labels"] == {"1": "hand"}
    on_disk = json.loads((out / web.WEB_MODEL_META).read_text())
    assert on_disk["files"][config.TFLITE_FP32_NAME]["postprocess"]["nms_iou_threshold"] == pytest.approx(
        config.NMS_IOU_THRESHOLD)
    runner = make_tflite_interpreter(str(out / config.TFLITE_FP32_NAME), 1).get_signature_runner("serving_default")
    details = runner.get_output_details()
    assert {k: list(v["shape"]) for k, v in details.items()} == {
        "box_encodings": [1, config.NUM_ANCHORS, 4], "class_scores": [1, config.NUM_ANCHORS, 2]}


def test_export_refuses_a_folder_without_a_model(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "export_web.py"), "--model-dir", str(tmp_path),
                           "--output", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2 and "no TFLite model" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_server_serves_the_page_offline_with_wasm_and_the_model(web_model):
    out, _ = web_model
    if not (web.WEB_DIR / "node_modules" / "@litertjs" / "core").is_dir():
        pytest.skip("web/node_modules missing: run `make web`")
    html = (web.WEB_DIR / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # no CDN: every script comes from this server
    with web.serving(out) as url:
        with urllib.request.urlopen(url + "model/model.json") as response:
            assert json.load(response)["default"] == config.TFLITE_INT8_NAME
        with urllib.request.urlopen(url + "node_modules/@litertjs/core/wasm/litert_wasm_internal.wasm") as response:
            assert response.headers["Content-Type"] == "application/wasm"


def _hand_frames(video: Path, step: int, limit: int) -> list[np.ndarray]:
    from utils.evaluation.browser import read_frames

    return read_frames(video, limit, step)


@pytest.fixture(scope="module")
def still_images(hand_video, egohands_sample_zip, tmp_path_factory) -> list[tuple[Path, np.ndarray]]:
    """PNG files (lossless: the browser and OpenCV see the same pixels) of real hand frames."""
    import cv2

    frames = _hand_frames(hand_video, 45, 8)
    with zipfile.ZipFile(egohands_sample_zip) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))[::40][:4]
        for name in names:
            bgr = cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_COLOR)
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    folder = tmp_path_factory.mktemp("stills")
    images = []
    for i, rgb in enumerate(frames):
        path = folder / f"frame_{i:02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images.append((path, rgb))
    return images


@pytest.mark.parametrize("model_file, min_score, score_gap", [(config.TFLITE_FP32_NAME, None, MAX_SCORE_GAP),
                                                              (config.TFLITE_INT8_NAME, CONFIDENT, INT8_SCORE_GAP)])
def test_still_images_agree_with_the_python_detector(chromium_ready, web_model, model_dir, still_images,
                                                     model_file, min_score, score_gap):
    from utils.runtime.detector import load_inference_graph

    out, _ = web_model
    with web.serving(out) as url:
        # Every hand (EgoHands frames hold up to 4): a max-hands cut would pick among near-equal scores.
        answer = browser.drive({"mode": "images", "url": url, "model": model_file, "params": {"maxNumBoxes": 100},
                                "images": [str(p) for p, _ in still_images]})
    assert answer["file"] == model_file
    detector = load_inference_graph(model_dir / model_file)
    compared = 0
    for (path, rgb), result in zip(still_images, answer["images"], strict=True):
        height, width = rgb.shape[:2]
        py = browser.python_predictions(detector.detect(rgb, config.DEFAULT_SCORE_THRESHOLD), width, height)
        js = result["predictions"]
        assert all(p["class"] == "hand" for p in js)
        if min_score is not None:
            py = [p for p in py if p["score"] >= min_score]
        pairs = browser.match_predictions(js, py)
        sure_js = [p for p in js if min_score is None or p["score"] >= min_score + score_gap]
        assert len(pairs) == len(py) and len(pairs) >= len(sure_js), (path.name, js, py)
        for a, b, overlap in pairs:
            assert overlap >= MIN_IOU, (path.name, a, b)
            assert abs(a["score"] - b["score"]) <= score_gap, (path.name, a, b)
        compared += len(pairs)
    assert compared >= 6, f"only {compared} hands compared: the frames should hold more hands"


def test_webcam_page_draws_boxes_on_the_fake_camera(chromium_ready, web_model, model_dir, hand_video, tmp_path):
    """Chromium's fake camera plays real hand frames; the page finds a hand in every frame it processes."""
    import cv2

    from utils.runtime.detector import load_inference_graph

    out, meta = web_model
    detector = load_inference_graph(model_dir / meta["default"])
    size = (FAKE_CAMERA_SIZE, FAKE_CAMERA_SIZE)
    shown = [browser.y4m_round_trip(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
             for rgb in _hand_frames(hand_video, 4, 95)]
    # Only the frames where the Python detector finds a hand, clearly: whichever the page sees, it must too.
    kept = [rgb for rgb in shown if detector.detect(rgb, CONFIDENT, 1).scores.size]
    assert len(kept) >= 20, f"only {len(kept)} of {len(shown)} frames hold a hand for the Python detector"
    video = tmp_path / "hands.y4m"
    browser.write_y4m(kept, video, fps=15)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "web_webcam.png"
    screenshot.unlink(missing_ok=True)
    with web.serving(out) as url:
        answer = browser.drive({"mode": "webcam", "url": url, "video": str(video), "frames": 20,
                                "screenshot": str(screenshot)})
    frames = answer["frames"]
    assert answer["source"] == "video" and (answer["width"], answer["height"]) == size
    assert len(frames) >= 20 and all(f["hands"] >= 1 for f in frames), [f["hands"] for f in frames]
    assert answer["fps"] > 0
    # The artifact: the page as a person sees it, the camera frame with the green boxes and FPS drawn on it.
    image = cv2.imread(str(screenshot))
    assert image is not None, f"no screenshot at {screenshot}"
    green = np.all(np.abs(image.astype(int) - (77, 255, 9)) <= 30, axis=2)  # BGR of the box colour #09ff4d
    assert green.sum() > 200, f"{screenshot}: no box drawn ({green.sum()} green pixels)"


def test_flip_horizontal_detects_the_mirrored_view(chromium_ready, web_model, model_dir, still_images):
    """flipHorizontal: the page detects on the mirrored image, boxes in its pixels (as on a mirrored frame)."""
    from utils.runtime.detector import load_inference_graph

    out, _ = web_model
    path, rgb = still_images[3]
    with web.serving(out) as url:
        answer = browser.drive({"mode": "images", "url": url, "model": config.TFLITE_FP32_NAME,
                                "params": {"flipHorizontal": True}, "images": [str(path)]})
    detections = load_inference_graph(model_dir / config.TFLITE_FP32_NAME).detect(
        np.ascontiguousarray(rgb[:, ::-1]), config.DEFAULT_SCORE_THRESHOLD, config.DEFAULT_NUM_HANDS)
    py = browser.python_predictions(detections, rgb.shape[1], rgb.shape[0])
    js = answer["images"][0]["predictions"]
    pairs = browser.match_predictions(js, py)
    assert py and len(pairs) == len(py) == len(js), (js, py)
    assert all(overlap >= MIN_IOU and abs(a["score"] - b["score"]) <= MAX_SCORE_GAP for a, b, overlap in pairs)
