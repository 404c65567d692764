"""The shipped default model (model-checkpoint/shipped/allview/, built by `make model`): the figures its
README.md and the README claim, per source, on the shared data split as `make data-allview` splits it:
EgoHands' CHESS test video, Oxford's carved eval sources (Movie_forrest, Skin), the webcam eval sessions.

`make test` builds the model into .cache/test_default_model (HANDTRACK_DEFAULT_MODEL_DIR)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import evaluate
import mix_datasets
from utils.common import config

# AP@0.5 a little under what the shipped model measured (its README.md: int8 / fp32 0.963 / 0.963 on CHESS,
# 0.487 / 0.496 on Oxford eval, 1.000 / 1.000 on the webcam eval sessions)
FLOORS = {"egohands test": 0.95, "oxford eval": 0.47, "webcam eval": 0.97}
# int8 within this of float32, per source: measured 0.009 at most (Oxford), against the 0.01 asked of the model;
# a little looser here, as the floors are, for calibration ranges that shift with another machine's float maths.
INT8_TOLERANCE = 0.015


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    if "HANDTRACK_DEFAULT_MODEL_DIR" not in os.environ:
        pytest.skip("no shipped weights in model-checkpoint/shipped/ yet (`make test` builds the first one there is "
                    "into .cache/test_default_model and sets HANDTRACK_DEFAULT_MODEL_DIR)")
    path = Path(os.environ["HANDTRACK_DEFAULT_MODEL_DIR"])
    manifest = path / config.MANIFEST_NAME
    assert manifest.exists() and json.loads(manifest.read_text())["source"]["kind"] == "shipped", path
    return path


@pytest.fixture(scope="session")
def allview_splits(tmp_path_factory, egohands_sample_zip, webcam_hands_dir) -> Path:
    if not config.SHARED_OXFORD_ARCHIVE.exists():
        pytest.skip(f"Oxford Hands archive not found at {config.SHARED_OXFORD_ARCHIVE}: put the shared data beside "
                    f"the checkout or set HANDTRACK_SHARED_DIR")
    out = tmp_path_factory.mktemp("allview")
    assert mix_datasets.main(["egohands", "oxford", f"webcam=voc:{webcam_hands_dir}", "--egohands-zip",
                              str(egohands_sample_zip), "--oxford-archive", str(config.SHARED_OXFORD_ARCHIVE),
                              "--carve-eval", "0.1", "--group-by", str(config.SHARED_WEBCAM_SESSIONS),
                              "--output-dir", str(out), "--no-progress"]) == 0
    return out


def _ap50(model: Path, splits: Path, split: str, out: Path) -> dict:
    name = f"{model.stem}_{split}"
    assert evaluate.main(["--model", str(model), "--labels", str(splits / f"{split}_labels.csv"), "--images",
                          str(splits / "images" / split), "--output-dir", str(out), "--name", name,
                          "--no-progress"]) == 0
    result = json.loads((out / f"{name}.json").read_text())
    return {f"{source} {split}": m["AP50"] for source, m in result["per_source"].items()}


def test_the_default_model_finds_hands_from_every_viewpoint(default_model_dir, allview_splits, tmp_path):
    figures = {}
    for name in (config.TFLITE_FP32_NAME, config.TFLITE_INT8_NAME):
        model = default_model_dir / name
        figures[name] = {**_ap50(model, allview_splits, "test", tmp_path), **_ap50(model, allview_splits, "eval",
                                                                                  tmp_path)}
    fp32, int8 = figures[config.TFLITE_FP32_NAME], figures[config.TFLITE_INT8_NAME]
    for ap in (fp32, int8):
        for source, floor in FLOORS.items():
            assert ap[source] >= floor, (source, figures)
    for source in FLOORS:
        assert abs(int8[source] - fp32[source]) <= INT8_TOLERANCE, (source, figures)
