"""The trainable Keras model reproduces the pretrained handtrack.js graph; weight sources; export_source."""
from __future__ import annotations

import numpy as np
import pytest

from utils.common import config
from utils.train.model import (
    ANCHORS_PER_LOCATION,
    FEATURE_MAP_SIZES,
    ModelError,
    build_ssd_model,
    export_source,
    fold_batch_norm,
    freeze_core,
    initialize,
    load_keras_mobilenet_v2,
    load_tfjs_weights,
    ssd_anchors,
)

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def tfjs_dir():
    if not (config.HANDTRACKJS_MODEL_DIR / "weights_manifest.json").exists():
        pytest.skip(f"{config.HANDTRACKJS_MODEL_DIR} not found: run `make model`")
    return config.HANDTRACKJS_MODEL_DIR


@pytest.fixture(scope="module")
def graph_core(tfjs_dir):
    from utils.export.tfjs import core_graph_def_from_tfjs, load_tfjs_graph_def

    return core_graph_def_from_tfjs(load_tfjs_graph_def(tfjs_dir))


@pytest.fixture(scope="module")
def pretrained_model(tfjs_dir):
    model = build_ssd_model(1)
    load_tfjs_weights(model, tfjs_dir)
    return model


@pytest.fixture(scope="module")
def real_batch(chess_sample):
    from utils.export.exporter import legacy_resize_and_normalize

    frames = chess_sample[0][::25]  # 4 real frames spread over the video
    return legacy_resize_and_normalize(tf.constant(np.stack(frames))).numpy()


def run_core(core, batch):
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(core, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run(["box_encodings:0", "class_logits:0"], {"preprocessed:0": batch})


def test_anchors_are_the_graphs(graph_core):
    anchors = ssd_anchors()
    assert anchors.shape == (sum(s * s * a for s, a in zip(FEATURE_MAP_SIZES, ANCHORS_PER_LOCATION, strict=True)), 4)
    assert anchors.shape[0] == config.NUM_ANCHORS
    np.testing.assert_allclose(anchors, graph_core[1], atol=1e-6)


def test_keras_model_matches_the_graph_on_real_frames(graph_core, pretrained_model, real_batch):
    """Raw box encodings and class logits of the Keras model = the TF.js graph's, within 1e-4."""
    encodings, logits = run_core(graph_core[0], real_batch)
    out = pretrained_model(real_batch, training=False)
    assert out["box_encodings"].shape == (len(real_batch), config.NUM_ANCHORS, 4)
    assert out["class_logits"].shape == (len(real_batch), config.NUM_ANCHORS, 2)
    np.testing.assert_allclose(out["box_encodings"].numpy(), encodings, atol=1e-4)
    np.testing.assert_allclose(out["class_logits"].numpy(), logits, atol=1e-4)
    assert np.abs(logits).max() > 5, "real frames should give confident logits (a meaningful comparison)"


def test_frozen_core_gives_the_keras_outputs(pretrained_model, real_batch):
    core = freeze_core(pretrained_model)
    assert {n.name for n in core.node} >= {"preprocessed", "box_encodings", "class_logits"}
    assert not any(n.op in ("VarHandleOp", "ReadVariableOp") for n in core.node), "variables left unfrozen"
    encodings, logits = run_core(core, real_batch)
    out = pretrained_model(real_batch, training=False)
    np.testing.assert_allclose(encodings, out["box_encodings"].numpy(), atol=1e-5)
    np.testing.assert_allclose(logits, out["class_logits"].numpy(), atol=1e-5)


def test_four_class_model_keeps_backbone_and_box_heads(tfjs_dir, pretrained_model):
    model = build_ssd_model(4)
    assert model.output_shape["class_logits"] == (None, config.NUM_ANCHORS, 5)
    description = initialize(model, "pretrained", 4, tfjs_dir=tfjs_dir)
    assert "re-initialised" in description
    for name in ("Conv", "expanded_conv_13_expand", "BoxPredictor_0_BoxEncodingPredictor"):
        for ours, theirs in zip(model.get_layer(name).get_weights(), pretrained_model.get_layer(name).get_weights(),
                                strict=True):
            np.testing.assert_array_equal(ours, theirs)
    # A fresh class head predicts background: sigmoid(hand) ~ 0.01 (the random kernel spreads it a little).
    logits = model(np.zeros([1, 300, 300, 3], np.float32))["class_logits"].numpy()
    hand_scores = tf.sigmoid(logits[..., 1:]).numpy()
    assert hand_scores.mean() < 0.05 and np.median(hand_scores) < 0.05


def test_imagenet_backbone_folds_batch_norm_exactly():
    """Keras MobileNetV2 (conv + BN) folded into our convs gives the same features."""
    import tf_keras

    source = tf_keras.applications.MobileNetV2(input_shape=(300, 300, 3), include_top=False, weights=None)
    rng = np.random.default_rng(0)
    for layer in source.layers:  # non-trivial batch norm statistics
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    model = build_ssd_model(1)
    assert load_keras_mobilenet_v2(model, source) == 52  # 1 + 17 blocks (2 or 3 convs) + Conv_1
    ours = tf_keras.Model(model.input, model.get_layer("Conv_1_relu6").output)
    x = np.random.default_rng(1).uniform(-1, 1, [2, 300, 300, 3]).astype(np.float32)
    np.testing.assert_allclose(ours(x).numpy(), source(x, training=False).numpy(), atol=1e-4)


def test_fold_batch_norm_math():
    kernel = np.random.default_rng(0).normal(size=[1, 1, 2, 3]).astype(np.float32)
    gamma, beta, mean, var = (np.array(v, np.float32) for v in ([1, 2, 3], [0, 1, 2], [1, 0, -1], [4, 1, 0.25]))
    folded, bias = fold_batch_norm(kernel, gamma, beta, mean, var, 0.0)
    x = np.array([0.5, -1.0], np.float32)
    expected = (x @ kernel[0, 0] - mean) / np.sqrt(var) * gamma + beta
    np.testing.assert_allclose(x @ folded[0, 0] + bias, expected, rtol=1e-6)


def test_imagenet_unavailable_is_one_clear_error(monkeypatch, tmp_path):
    import tf_keras

    def offline(**kwargs):
        raise OSError("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tf_keras.applications, "MobileNetV2", offline)
    with pytest.raises(ModelError, match="ImageNet MobileNetV2 weights are not available .*~/.keras/models"):
        initialize(build_ssd_model(1), "imagenet", 1)
    with pytest.raises(ModelError, match="not found"):
        initialize(build_ssd_model(1), "imagenet", 1, imagenet_weights=tmp_path / "missing.h5")


def test_pretrained_weights_missing_says_make_model(tmp_path):
    with pytest.raises(ModelError, match="run `make model`"):
        load_tfjs_weights(build_ssd_model(1), tmp_path)


def test_export_source_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(ModelError, match="no checkpoint in this folder"):
        export_source(tmp_path)
    with pytest.raises(ModelError, match="neither a run folder nor a checkpoint prefix"):
        export_source(tmp_path / "ckpt-7")
    run = tmp_path / "run"
    model = build_ssd_model(1)
    tf.train.Checkpoint(model=model).save(str(run / "ckpt"))
    with pytest.raises(ModelError, match="run.json: not found"):
        export_source(run)
    (run / "run.json").write_text('{"architecture": "yolo", "num_classes": 1}')
    with pytest.raises(ModelError, match="architecture 'yolo'"):
        export_source(run)


@pytest.mark.parametrize("size, maps", [(300, (19, 10, 5, 3, 2, 1)), (320, (20, 10, 5, 3, 2, 1)),
                                        (384, (24, 12, 6, 3, 2, 1)), (448, (28, 14, 7, 4, 2, 1))])
def test_anchors_follow_the_feature_maps_of_any_input_size(size, maps):
    from utils.train.model import anchors_for, feature_map_sizes

    assert feature_map_sizes(size) == maps
    model = build_ssd_model(1, input_size=size)
    assert model.output["box_encodings"].shape[1] == len(anchors_for(size))


def test_box_encoding_round_trips_and_the_teacher_maps_onto_other_anchors():
    import tensorflow as tf

    from utils.export.exporter import decode_boxes, encode_boxes
    from utils.train.model import anchors_for
    from utils.train.training import nearest_anchors

    anchors = anchors_for(300)
    boxes = tf.constant([[[0.1, 0.2, 0.4, 0.3]] * len(anchors)], tf.float32)
    assert np.allclose(decode_boxes(encode_boxes(boxes, anchors), anchors).numpy(), boxes.numpy(), atol=1e-5)
    assert (nearest_anchors(anchors, anchors) == np.arange(len(anchors))).all()
    index = nearest_anchors(anchors, anchors_for(448))
    assert index.shape == (len(anchors_for(448)),)
    # the first student anchor (top-left, smallest) maps to the teacher's top-left smallest one
    assert index[0] == 0


@pytest.mark.parametrize("size", [300, 312])
def test_fine_layer_adds_stride_8_anchors_and_leaves_the_pretrained_outputs(size, pretrained_model, tfjs_dir):
    """model.fine_anchor_scales: a stride-8 map's 1:1 anchors after the original ones; the pretrained
    weights give the original network's outputs on the original anchors, the fresh layer predicts background."""
    import tensorflow as tf

    from utils.train.model import anchors_for, fine_map_size, initialize, model_anchors

    scales = (0.05, 0.07, 0.1)
    coarse = anchors_for(size)
    anchors = anchors_for(size, scales)
    assert fine_map_size(size) == -(-size // 8)
    assert len(anchors) == len(coarse) + fine_map_size(size) ** 2 * len(scales)
    assert np.array_equal(anchors[:len(coarse)], coarse)
    sides = anchors[len(coarse):, 2] - anchors[len(coarse):, 0]
    assert np.allclose(sorted(set(np.round(sides, 4))), scales)
    model = build_ssd_model(1, input_size=size, fine_scales=scales)
    assert model.output["box_encodings"].shape[1] == len(model_anchors(model)) == len(anchors)
    if size != 300:
        return
    assert "fine layer: fresh" in initialize(model, "pretrained", 1, tfjs_dir=tfjs_dir)
    batch = tf.random.stateless_uniform([2, 300, 300, 3], (1, 2), -1, 1)
    out, original = model(batch), pretrained_model(batch)
    assert np.array_equal(out["class_logits"].numpy()[:, :len(coarse)], original["class_logits"].numpy())
    fine_scores = tf.sigmoid(out["class_logits"][:, len(coarse):, 1]).numpy()
    assert fine_scores.max() < 0.05  # the class prior: no hands until trained


def test_fine_lateral_conv_narrows_the_coarse_map_and_keeps_the_anchors(pretrained_model, tfjs_dir, tmp_path):
    """model.fine_lateral_channels: the stride-16 map is reduced to N channels before it joins the fine layer;
    the same anchors, a fresh layer (pretrained outputs unchanged), a checkpoint of the other variant refused."""
    import tensorflow as tf

    from utils.train.model import ModelError, anchors_for, initialize, restore_model

    scales = (0.05, 0.1)
    coarse = len(anchors_for(300))
    model = build_ssd_model(1, fine_scales=scales, fine_lateral=16)
    lateral = model.get_layer(next(s.layer for s in model.conv_specs if "lateral" in s.layer))
    assert lateral.filters == 16 and lateral.input.shape[1:] == (19, 19, 576)
    merge = model.get_layer(next(s.layer for s in model.conv_specs if "merge" in s.layer))
    assert merge.input.shape[-1] == 192 + 16  # the stride-8 expand + the narrowed, upsampled stride-16 map
    assert model.output["class_logits"].shape[1] == len(anchors_for(300, scales))
    assert "fine layer: fresh" in initialize(model, "pretrained", 1, tfjs_dir=tfjs_dir)
    batch = tf.random.stateless_uniform([1, 300, 300, 3], (5, 6), -1, 1)
    assert np.array_equal(model(batch)["class_logits"].numpy()[:, :coarse],
                          pretrained_model(batch)["class_logits"].numpy())
    prefix = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    with pytest.raises(ModelError, match="does not fit"):
        restore_model(prefix, 1, fine_scales=scales)  # the full-map variant
    with pytest.raises(ModelError, match="needs fine_scales"):
        build_ssd_model(1, fine_lateral=16)


def test_a_trained_fine_layer_narrows_by_svd():
    """narrow_fine_layer: a full-map fine layer copied into a lateral one; the same outputs at 96 channels
    (the merge's rank), the best rank-8 approximation at 8 (all energy below 1, the fine outputs nearby)."""
    import tensorflow as tf

    from utils.train.model import ModelError, anchors_for, narrow_fine_layer

    scales = (0.05, 0.1)
    coarse = len(anchors_for(300))
    tf.keras.utils.set_random_seed(7)
    full = build_ssd_model(1, fine_scales=scales)  # random weights: every singular value matters
    batch = tf.random.stateless_uniform([1, 300, 300, 3], (7, 8), -1, 1)
    want = full(batch)["box_encodings"].numpy()
    exact = build_ssd_model(1, fine_scales=scales, fine_lateral=96)
    assert narrow_fine_layer(full, exact) == pytest.approx(1.0)
    assert np.allclose(exact(batch)["box_encodings"].numpy(), want, atol=1e-4)
    narrow = build_ssd_model(1, fine_scales=scales, fine_lateral=8)
    kept = narrow_fine_layer(full, narrow)
    assert 0.05 < kept < 0.5
    got = narrow(batch)["box_encodings"].numpy()
    assert np.array_equal(got[:, :coarse], want[:, :coarse])  # the other maps are untouched
    error = np.abs(got[:, coarse:] - want[:, coarse:]).mean()
    assert 0 < error < np.abs(want[:, coarse:]).mean()
    # fitted on the images themselves: more of what they add kept, closer outputs on them
    fitted = build_ssd_model(1, fine_scales=scales, fine_lateral=8)
    assert narrow_fine_layer(full, fitted, [batch]) > kept
    assert np.abs(fitted(batch)["box_encodings"].numpy()[:, coarse:] - want[:, coarse:]).mean() < error
    with pytest.raises(ModelError, match="needs a full-map fine-layer source"):
        narrow_fine_layer(exact, narrow)


def test_the_teacher_leaves_the_fine_anchors_to_the_labels(pretrained_model):
    """Same input size: the teacher's outputs unchanged on the original anchors and no distillation on
    the fine ones (distill_anchors 0), whatever the student predicts there."""
    import tensorflow as tf

    from utils.train.model import anchors_for
    from utils.train.training import distillation_losses, load_config, teacher_on_student_anchors

    scales = (0.05, 0.1)
    coarse, total = len(anchors_for(300)), len(anchors_for(300, scales))
    teach = teacher_on_student_anchors(pretrained_model, 300, scales)
    batch = tf.random.stateless_uniform([1, 300, 300, 3], (3, 4), -1, 1)
    taught, original = teach(batch), pretrained_model(batch)
    assert taught["class_logits"].shape[1] == total
    assert np.array_equal(taught["class_logits"].numpy()[:, :coarse], original["class_logits"].numpy())
    assert np.allclose(taught["box_encodings"].numpy()[:, :coarse], original["box_encodings"].numpy(), atol=1e-3)
    assert taught["distill_anchors"].numpy().sum() == coarse
    student = {key: tf.concat([taught[key][:, :coarse], tf.fill([1, total - coarse, taught[key].shape[-1]], 9.0)],
                              axis=1) for key in ("class_logits", "box_encodings")}
    loss = distillation_losses(student, taught, tf.ones([1]), load_config(None, ["loss.distillation_weight=1"])["loss"])
    assert float(loss["distillation"]) == pytest.approx(0.0, abs=1e-4)


def test_batch_norm_model_starts_as_the_pretrained_network_and_folds_back(pretrained_model, tfjs_dir, real_batch):
    """model.batch_norm: with the pretrained weights it computes the folded network exactly; measured on real
    frames it still does (inference mode) and stays close in training mode; fold_model gives the plain
    network back (what exports and shipped weights hold)."""
    import tensorflow as tf

    from utils.train.model import BN_SUFFIX, calibrate_batch_norm, conv_weights, fold_model, initialize

    model = build_ssd_model(1, batch_norm=True)
    initialize(model, "pretrained", 1, tfjs_dir=tfjs_dir)
    batch = tf.constant(real_batch)
    want = pretrained_model(batch)["class_logits"].numpy()
    assert np.abs(model(batch)["class_logits"].numpy() - want).max() < 1e-4
    assert calibrate_batch_norm(model, [batch, batch[::-1]]) == 2 * len(real_batch)
    bn = model.get_layer("Conv" + BN_SUFFIX)
    assert np.abs(bn.moving_variance.numpy() - 1 + 1e-3).max() > 0.1  # measured, not the pass-through values
    assert np.abs(model(batch)["class_logits"].numpy() - want).max() < 1e-2
    training = tf.sigmoid(model(batch, training=True)["class_logits"]).numpy()
    assert np.abs(training - tf.sigmoid(want).numpy()).max() < 0.1  # batch statistics of the same frames
    plain = fold_model(model)
    assert not plain.batch_norm and not any(BN_SUFFIX in layer.name for layer in plain.layers)
    assert np.abs(plain(batch)["class_logits"].numpy() - want).max() < 2e-2
    spec = next(s for s in model.conv_specs if s.kind == "depthwise")
    assert [w.shape for w in conv_weights(model, spec)] == [w.shape for w in pretrained_model.get_layer(
        spec.layer).get_weights()]


@pytest.mark.parametrize("batch_norm", [False, True])
def test_freeze_through_stops_training_the_early_backbone(batch_norm):
    """train.freeze_through: a training step leaves the stem up to the named block as it was (batch norm
    included) and still trains the block after it; an unknown block name is one error naming the choices."""
    import tf_keras

    from utils.train.model import BN_SUFFIX, freeze_through

    model = build_ssd_model(1, batch_norm=batch_norm)
    frozen = freeze_through(model, "expanded_conv_3")
    assert frozen[0] == "Conv" and frozen[-1] == "expanded_conv_3_project" and len(frozen) == 12
    before = {layer.name: [w.numpy().copy() for w in layer.weights] for layer in model.layers if layer.weights}
    images = tf.random.stateless_uniform([2, 300, 300, 3], (5, 6), -1, 1)
    with tf.GradientTape() as tape:
        out = model(images, training=True)
        loss = tf.reduce_mean(tf.square(out["class_logits"])) + tf.reduce_mean(tf.square(out["box_encodings"]))
    grads = tape.gradient(loss, model.trainable_variables)
    tf_keras.optimizers.SGD(0.1).apply_gradients(zip(grads, model.trainable_variables, strict=True))

    def changed(name):
        weights = model.get_layer(name).weights
        return any(not np.array_equal(a, w.numpy()) for a, w in zip(before[name], weights, strict=True))

    assert not any(changed(name) for name in frozen)
    if batch_norm:  # moving statistics too: a frozen BatchNormalization runs in inference mode
        assert not changed("expanded_conv_3_project" + BN_SUFFIX)
    assert changed("expanded_conv_4_expand")
    assert freeze_through(build_ssd_model(1), None) == []
    with pytest.raises(ModelError, match=r"'expanded_conv_99' is not a backbone block; use one of Conv, "):
        freeze_through(model, "expanded_conv_99")
