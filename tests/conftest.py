"""Shared fixtures: real data in ../shared (skipped with a message when absent) and built models."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils import config  # noqa: E402


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
