"""The shipped default model (model-checkpoint/shipped/<name>/, built by `make model`): the figures the
README and its README.md claim, per source, on the shared data made as `make data DATASETS="egohands
oxford" DATA_ARGS="--carve-eval 0.1"` makes it: EgoHands' CHESS test video and Oxford's carved eval sources.

`make test` builds the model into .cache/test_default_model (HANDTRACK_DEFAULT_MODEL_DIR)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import evaluate
import mix_datasets
from utils.common import config

EGOHANDS_TEST_AP50 = 0.97   # issue 11's figures: keep the egocentric view ...
OXFORD_EVAL_AP50 = 0.60     # ... and find third-person hands
INT8_TOLERANCE = 0.01       # int8 within this of float32, per source


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
def everyview_splits(tmp_path_factory, egohands_sample_zip) -> Path:
    if not config.SHARED_OXFORD_ARCHIVE.exists():
        pytest.skip(f"Oxford Hands archive not found at {config.SHARED_OXFORD_ARCHIVE}: put the shared data beside "
                    f"the checkout or set HANDTRACK_SHARED_DIR")
    out = tmp_path_factory.mktemp("everyview")
    assert mix_datasets.main(["egohands", "oxford", "--egohands-zip", str(egohands_sample_zip), "--oxford-archive",
                              str(config.SHARED_OXFORD_ARCHIVE), "--carve-eval", "0.1", "--output-dir", str(out),
                              "--no-progress"]) == 0
    return out


def _ap50(model: Path, splits: Path, split: str, out: Path) -> dict:
    name = f"{model.stem}_{split}"
    assert evaluate.main(["--model", str(model), "--labels", str(splits / f"{split}_labels.csv"), "--images",
                          str(splits / "images" / split), "--output-dir", str(out), "--name", name,
                          "--no-progress"]) == 0
    result = json.loads((out / f"{name}.json").read_text())
    return {source: m["AP50"] for source, m in result["per_source"].items()}


def test_the_default_model_keeps_the_egocentric_view_and_finds_third_person_hands(default_model_dir, everyview_splits,
                                                                                  tmp_path):
    figures = {}
    for name in (config.TFLITE_FP32_NAME, config.TFLITE_INT8_NAME):
        model = default_model_dir / name
        figures[name] = {"egohands": _ap50(model, everyview_splits, "test", tmp_path)["egohands"],
                         "oxford": _ap50(model, everyview_splits, "eval", tmp_path)["oxford"]}
    fp32, int8 = figures[config.TFLITE_FP32_NAME], figures[config.TFLITE_INT8_NAME]
    for ap in (fp32, int8):
        assert ap["egohands"] >= EGOHANDS_TEST_AP50, figures
        assert ap["oxford"] >= OXFORD_EVAL_AP50, figures
    for source in fp32:
        assert abs(int8[source] - fp32[source]) <= INT8_TOLERANCE, figures
