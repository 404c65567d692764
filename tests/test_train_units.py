"""Small pieces of training: config validation, target assignment, losses, flip class swap (no training)."""
from __future__ import annotations

import numpy as np
import pytest

from utils.train.inputs import BOX_TARGETS, BOX_WEIGHTS, CLS_TARGETS, CLS_WEIGHTS, SsdInput, flip_class_map
from utils.train.training import DEFAULT_CONFIG, ConfigError, build_optimizer, learning_rate_at, load_config, ssd_losses

tf = pytest.importorskip("tensorflow")


def test_flip_swaps_left_and_right():
    assert flip_class_map(["myleft", "myright", "yourleft", "yourright"]) == [0, 2, 1, 4, 3]
    assert flip_class_map(["hand"]) == [0, 1]


def test_config_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  steps: 40\noptimization:\n  learning_rate:\n    cosine:\n"
                    "      initial_learning_rate: 0.01\n")
    cfg = load_config(path, ["augment.random_crop=false", "data.eval_split=null"])
    assert cfg["train"]["steps"] == 40 and cfg["train"]["batch_size"] == DEFAULT_CONFIG["train"]["batch_size"]
    assert cfg["augment"]["random_crop"] is False and cfg["data"]["eval_split"] is None
    assert cfg["optimization"]["optimizer"]["type"] == "sgd"  # merged, not replaced
    # 1e-5 is a float (PyYAML alone reads it as a string), in files and in --set / --learning-rate
    path.write_text("optimization:\n  learning_rate:\n    cosine:\n      initial_learning_rate: 3e-4\n")
    assert load_config(path)["optimization"]["learning_rate"]["cosine"]["initial_learning_rate"] == 3e-4
    assert load_config(None, ["train.weight_decay=1e-5"])["train"]["weight_decay"] == 1e-5
    _, schedule = build_optimizer(cfg)
    # warmup (5% of the steps = 2) then a cosine decay over train.steps
    assert learning_rate_at(schedule, 0) == 0.0
    assert learning_rate_at(schedule, 2) == pytest.approx(0.01 * (1 + np.cos(np.pi * 2 / 40)) / 2, rel=1e-5)
    assert learning_rate_at(schedule, 40) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("override, message", [
    ("loss.focal=1", "unknown config key 'loss.focal'"),
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("train.batch_size=2.5", "'train.batch_size' must be a int"),
    ("augment.random_crop=yes please", "'augment.random_crop' must be a bool"),
    ("matcher.unmatched_threshold=0.7", "unmatched_threshold <= matcher.matched_threshold"),
    ("loss.classification=softmax", "loss.classification must be one of sigmoid_hnm, focal"),
    ("optimization.learning_rate.type=cosine_restarts", "optimization:"),
    ("train", "expected KEY=VALUE"),
    ("train.freeze_through=block_3", "train.freeze_through must be a backbone block, one of Conv, expanded_conv, "),
    ("loss.distillation_weight=.nan", "'loss.distillation_weight' must be a finite number, got nan"),
    ("data.source_weights=[1, .inf]", "'data.source_weights' must be a finite number, got \\[1.0, inf\\]"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("'", "'")):
        load_config(None, [override])


def _input(anchors):
    return SsdInput(np.asarray(anchors, np.float32), 1, ["hand"], {})


def test_anchor_matching_and_encoding():
    anchors = [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0], [0.1, 0.1, 0.45, 0.45]]
    boxes = tf.constant([[0.0, 0.0, 0.5, 0.5], [0.6, 0.6, 0.9, 0.95]])
    targets = _input(anchors).assign_targets(boxes, tf.constant([1, 1], tf.int64))
    # anchor 0: the first box exactly (IoU 1); anchor 1 best for the second (force-matched, IoU 0.42 < 0.5);
    # anchor 3 overlaps the first box with IoU 0.49 < 0.5: background; anchor 2 touches nothing.
    np.testing.assert_array_equal(targets[CLS_TARGETS].numpy(), [1, 1, 0, 0])
    np.testing.assert_array_equal(targets[BOX_WEIGHTS].numpy(), [1, 1, 0, 0])
    np.testing.assert_array_equal(targets[CLS_WEIGHTS].numpy(), [1, 1, 1, 1])
    np.testing.assert_allclose(targets[BOX_TARGETS].numpy()[0], [0, 0, 0, 0], atol=1e-5)
    # Faster R-CNN coder, scales 10,10,5,5: centre offsets over anchor size, log size ratios
    expected = [10 * (0.75 - 0.75) / 0.5, 10 * (0.775 - 0.75) / 0.5, 5 * np.log(0.3 / 0.5), 5 * np.log(0.35 / 0.5)]
    np.testing.assert_allclose(targets[BOX_TARGETS].numpy()[1], expected, rtol=1e-4)


def test_image_without_hands_is_all_background():
    targets = _input([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]]).assign_targets(tf.zeros([0, 4]), tf.zeros([0], tf.int64))
    np.testing.assert_array_equal(targets[CLS_TARGETS].numpy(), [0, 0])
    np.testing.assert_array_equal(targets[BOX_WEIGHTS].numpy(), [0, 0])


def _batch(num_anchors=10):
    """One image: anchor 0 positive (class 1), the rest background with rising hand logits."""
    logits = np.zeros([1, num_anchors, 2], np.float32)
    logits[0, :, 1] = np.arange(num_anchors, dtype=np.float32) - 5  # anchors 9, 8, 7 are the hardest negatives
    logits[0, 0] = [-2.0, 2.0]
    outputs = {"class_logits": tf.constant(logits), "box_encodings": tf.zeros([1, num_anchors, 4])}
    cls = np.zeros([1, num_anchors], np.int32)
    cls[0, 0] = 1
    box_targets = np.zeros([1, num_anchors, 4], np.float32)
    box_targets[0, 0] = [0.5, -2.0, 0.0, 0.0]
    targets = {CLS_TARGETS: tf.constant(cls), BOX_TARGETS: tf.constant(box_targets),
               BOX_WEIGHTS: tf.constant((cls > 0).astype(np.float32)), CLS_WEIGHTS: tf.ones([1, num_anchors])}
    return outputs, targets, logits


def _bce(logits, labels):
    return np.sum(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits))))


def test_hard_negative_mining_keeps_three_hardest_negatives_per_positive():
    outputs, targets, logits = _batch()
    losses = ssd_losses(outputs, targets, DEFAULT_CONFIG["loss"])
    expected = _bce(logits[0, 0], np.array([0, 1])) + sum(_bce(logits[0, i], np.array([1, 0])) for i in (7, 8, 9))
    assert float(losses["classification"]) == pytest.approx(expected, rel=1e-5)  # normalised by 1 positive
    # smooth L1: 0.5 * 0.5^2 + (2 - 0.5)
    assert float(losses["localization"]) == pytest.approx(0.125 + 1.5, rel=1e-6)
    assert float(losses["total"]) == pytest.approx(expected + 1.625, rel=1e-5)


def test_focal_loss_uses_every_anchor_and_down_weights_easy_ones():
    outputs, targets, _ = _batch()
    cfg = {**DEFAULT_CONFIG["loss"], "classification": "focal"}
    focal = float(ssd_losses(outputs, targets, cfg)["classification"])
    easy = {**outputs, "class_logits": outputs["class_logits"] * 0 + tf.constant([[[5.0, -5.0]]])}
    assert 0 < float(ssd_losses(easy, targets, cfg)["classification"]) < focal
    assert np.isfinite(focal)


@pytest.mark.parametrize("name", ["egohands", "sample", "scratch", "everyview", "everyview_stage1", "everyview_stage2"])
def test_shipped_configs_load(name):
    """model-checkpoint/*.yaml fit the TrainingConfig tree; only the chosen optimizer's settings are kept."""
    from utils.common import config

    cfg = load_config(config.CHECKPOINT_DIR / f"{name}.yaml")
    optimizer = cfg["optimization"]["optimizer"]
    assert set(optimizer) == {"type", optimizer["type"]}
    assert isinstance(cfg["optimization"]["learning_rate"]["cosine"]["initial_learning_rate"], float)
    assert set(cfg) == set(DEFAULT_CONFIG)
