"""Shared fixtures: real data in ../shared (skipped with a message when absent) and built models."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.common import config  # noqa: E402


def _require(path: Path, what: str, how: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path}: {how}")
    return path


@pytest.fixture(scope="session")
def egohands_sample_zip() -> Path:
    return _require(config.SHARED_EGOHANDS_ZIP, "EgoHands sample zip",
                    "put the shared data beside the checkout or set HANDTRACK_SHARED_DIR")


@pytest.fixture(scope="session")
def egohands_sample_labels() -> Path:
    return _require(config.SHARED_EGOHANDS_LABELS, "EgoHands sample labels.csv",
                    "put the shared data beside the checkout or set HANDTRACK_SHARED_DIR")


@pytest.fixture(scope="session")
def webcam_hands_dir() -> Path:
    return _require(config.SHARED_WEBCAM_DIR, "webcam-hands VOC folder",
                    "put the shared data beside the checkout or set HANDTRACK_SHARED_DIR")


@pytest.fixture(scope="session")
def hand_video() -> Path:
    return _require(config.SHARED_HAND_VIDEO, "real hand video",
                    "put the shared data beside the checkout or set HANDTRACK_SHARED_DIR")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The built hand_inference_graph/ (made by `make model`)."""
    for name in (config.FROZEN_GRAPH_NAME, config.SAVED_MODEL_NAME, config.TFLITE_FP32_NAME,
                 config.TFLITE_INT8_NAME):
        _require(config.MODEL_DIR / name, f"model file {name}", "run `make model` first")
    return config.MODEL_DIR


@pytest.fixture(scope="session")
def chess_sample(egohands_sample_zip, egohands_sample_labels):
    """The CHESS_COURTYARD_B_T frames (RGB) and their ground truth as class-agnostic hands."""
    import zipfile

    import cv2
    import numpy as np
    import pandas as pd

    from utils.evaluation.coco import ImageAnnotations

    video = "CHESS_COURTYARD_B_T"
    labels = pd.read_csv(egohands_sample_labels)
    frames, truth = [], []
    with zipfile.ZipFile(egohands_sample_zip) as archive:
        names = sorted(n for n in archive.namelist() if f"/{video}/" in n and n.endswith(".jpg"))
        for name in names:
            bgr = cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_COLOR)
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            rows = labels[labels.filename == f"{video}/{name.rsplit('/', 1)[1]}"]
            truth.append(ImageAnnotations(bgr.shape[1], bgr.shape[0],
                                          rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy(float),
                                          np.ones(len(rows), int)))
    assert len(frames) == 100, f"expected 100 {video} frames in {egohands_sample_zip}"
    return frames, truth
