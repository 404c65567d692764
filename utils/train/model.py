"""The trainable hand detector: the pretrained handtrack.js network rebuilt as a Keras model.

The TF.js graph (see DESIGN.md) is an SSD with a MobileNetV2 (depth 1.0) feature extractor at
300x300: feature maps from `expanded_conv_13/expand` (19x19x576) and `Conv_1` (10x10x1280), then
four extra layers of a 1x1 conv and a 3x3 stride-2 conv (5x5x512, 3x3x256, 2x2x256, 1x1x128).
Each map has a 1x1 conv box head and a 1x1 conv class head (3 anchors per cell on the first map,
6 elsewhere: 1917 anchors). Every conv pads SAME and is followed by Relu6 except the linear
`project` convs and the heads. Batch norm is folded into the weights (a depthwise conv's scale
is multiplied into its kernel here), so every conv has a bias and there is no BatchNorm layer.
Note: despite the folder name `ssdlitemobilenetv2`, the extra layers and heads are plain convs,
not SSDLite's depthwise-separable ones; the graph is reproduced as it is.
A run may add a fine layer for small hands (model.fine_anchor_scales, FINE_STRIDE): its anchors come
after the 1917, so the pretrained weights still give the original outputs on those.

Keras flavour: tf_keras (Keras 2). tf-models-official 2.20 (losses, optimizers, schedules) is
written against tf_keras, and its optimizers cannot update Keras 3 variables.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from utils.common import config
from utils.common.errors import UserError
from utils.common.fileio import sha256_of, sha256_of_files

if TYPE_CHECKING:
    from tensorflow.core.framework.graph_pb2 import GraphDef

ARCHITECTURE = "ssd_mobilenet_v2_300_handtrackjs"  # recorded with every run: restores check it
INPUT_SIZE = config.MODEL_INPUT_SIZE  # the pretrained network's; a run may train another (model.input_size)
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 128, 1024
ANCHORS_PER_LOCATION = (3, 6, 6, 6, 6, 6)
# MultipleGridAnchorGenerator of the original pipeline.config.
ANCHOR_MIN_SCALE, ANCHOR_MAX_SCALE = 0.2, 0.95
ANCHOR_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)
# (expansion, output channels, stride) of MobileNetV2's 17 inverted residual blocks.
MOBILENET_V2_BLOCKS = ((1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1),
                       (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1), (6, 96, 1), (6, 96, 1),
                       (6, 96, 1), (6, 160, 2), (6, 160, 1), (6, 160, 1), (6, 320, 1))
# SSD extra layers after Conv_1: (1x1 channels, 3x3 stride-2 channels).
EXTRA_LAYERS = ((256, 512), (128, 256), (128, 256), (64, 128))
CLASS_PRIOR = 0.01  # new class heads start predicting "background" (RetinaNet's prior init)
# Optional fine layer (model.fine_anchor_scales): hands under ~30 px at 300 have no anchor of the stride-16
# map that overlaps them by IoU 0.5, so they are learnt and localised badly. This map adds 1:1 anchors at
# stride 8: expanded_conv_6/expand (the last stride-8 activation) merged with the stride-16 map upsampled.
FINE_STRIDE = 8
FINE_BLOCK = 6              # its expand conv runs at stride 8
FINE_CHANNELS = 96
FINE_LATERAL, FINE_MERGE, FINE_UPSAMPLE = "FineFeatures/lateral", "FineFeatures/merge", "FineFeatures_upsample"
# model.fine_lateral_channels: 0 merges the whole 576-channel stride-16 map (upsampled) into the fine layer; N
# first reduces it to N channels at stride 16 (FPN's linear lateral 1x1 conv), so the merge at 38x38 is far
# cheaper: int8 invoke 14.7 -> 14.0 ms at 32 (the pretrained network without a fine layer: 11.1; README).
# Linear, so a trained full-map network narrows to it through its merge conv (narrow_fine_layer).
# model.batch_norm: the TF.js network has its batch norm folded into the convs, which leaves plain SGD
# nothing to keep activations in range (larger steps wreck it). A batch-norm model puts a BatchNormalization
# after each backbone and extra conv again, measured on training images so that it starts as the pretrained
# network (calibrate_batch_norm); exports and shipped weights fold it back (fold_model, conv_weights).
BN_SUFFIX = "_bn"
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
BN_KINDS = ("conv", "depthwise")

RUN_INFO_NAME = "run.json"  # written by train.py beside the checkpoints
INIT_CHOICES = ("pretrained", "random", "imagenet")

_FEATURES = "FeatureExtractor/MobilenetV2"


class ModelError(UserError):
    """A checkpoint, run folder or weight source that does not fit this model."""


# ----------------------------------------------------------------------------- anchors

def feature_map_sizes(input_size: int = INPUT_SIZE) -> tuple[int, ...]:
    """Side of each SSD feature map for a square input: strides 16 and 32, then four stride-2 convs,
    all padded SAME (300 -> 19, 10, 5, 3, 2, 1). The network is fully convolutional, so any size works;
    the anchors follow these sizes."""
    sizes = [math.ceil(input_size / 16), math.ceil(input_size / 32)]
    while len(sizes) < len(ANCHORS_PER_LOCATION):
        sizes.append(math.ceil(sizes[-1] / 2))
    return tuple(sizes)


FEATURE_MAP_SIZES = feature_map_sizes(INPUT_SIZE)


def fine_map_size(input_size: int = INPUT_SIZE) -> int:
    """Side of the optional stride-8 map (38 at 300)."""
    return math.ceil(input_size / FINE_STRIDE)


def anchors_for(input_size: int = INPUT_SIZE, fine_scales: Sequence[float] = ()) -> np.ndarray:
    """The anchors of the network built for `input_size` (1917 at 300), then those of the fine layer
    (one 1:1 anchor per scale and cell) when it has one."""
    anchors = ssd_anchors(feature_map_sizes(input_size))
    if not fine_scales:
        return anchors
    return np.concatenate([anchors, grid_anchors(fine_map_size(input_size), [(s, 1.0) for s in fine_scales])])


def model_anchors(model) -> np.ndarray:
    """The anchors a model built by build_ssd_model predicts for, in its output order."""
    return anchors_for(model.input_shape[1], model.fine_anchor_scales)


def grid_anchors(size: int, specs: Sequence[tuple[float, float]]) -> np.ndarray:
    """[size*size*len(specs), 4] corner anchors of one square map: (scale, aspect ratio) per cell, centres at
    (i + 0.5) / size. Order: row, column, anchor."""
    scale = np.array([s for s, _ in specs], np.float32)
    ratio = np.sqrt(np.array([a for _, a in specs], np.float32))
    heights, widths = scale / ratio, scale * ratio
    centers = (np.arange(size, dtype=np.float32) + 0.5) / np.float32(size)
    cy, cx = np.meshgrid(centers, centers, indexing="ij")
    cy, cx = cy[..., None], cx[..., None]
    boxes = np.stack(np.broadcast_arrays(cy - heights / 2, cx - widths / 2,
                                         cy + heights / 2, cx + widths / 2), axis=-1)
    return boxes.reshape(-1, 4).astype(np.float32)


def ssd_anchors(feature_map_sizes: Sequence[int] = FEATURE_MAP_SIZES) -> np.ndarray:
    """[A,4] corner anchors (ymin,xmin,ymax,xmax), normalized, in the model's output order.

    The Object Detection API's create_ssd_anchors: scales evenly spaced from 0.2 to 0.95; the
    first map has (0.1, 1:1), (0.2, 2:1), (0.2, 1:2); the others the 5 aspect ratios plus an extra
    1:1 box of scale sqrt(s_k * s_k+1). Centres at (i + 0.5) / size. Order: row, column, anchor.
    """
    n = len(feature_map_sizes)
    scales = [ANCHOR_MIN_SCALE + (ANCHOR_MAX_SCALE - ANCHOR_MIN_SCALE) * i / (n - 1) for i in range(n)] + [1.0]
    out = []
    for layer, size in enumerate(feature_map_sizes):
        if layer == 0:
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[layer], ar) for ar in ANCHOR_ASPECT_RATIOS]
            specs.append((np.sqrt(scales[layer] * scales[layer + 1]), 1.0))
        out.append(grid_anchors(size, specs))
    return np.concatenate(out).astype(np.float32)


# ----------------------------------------------------------------------------- the network

@dataclass(frozen=True)
class ConvSpec:
    """One conv layer of the network and where its weights live in the TF.js model."""

    layer: str        # Keras layer name
    tfjs_scope: str   # name prefix of its weights in weights_manifest.json
    kind: str         # "conv", "depthwise" or "head"; "fine": a layer of the fine map, not in the TF.js model


def _keras():
    import tf_keras
    return tf_keras


def _layer_name(scope: str) -> str:
    return scope.replace("/", "_")


def _initializers(kind: str):
    """He-style initialisers (there is no batch norm to rescale activations from random init)."""
    keras = _keras()
    if kind == "depthwise":  # fan-in of a 3x3 depthwise filter is 9, not 9 * channels
        return keras.initializers.TruncatedNormal(stddev=float(np.sqrt(2.0 / 9.0)))
    if kind == "linear":
        return keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")
    return keras.initializers.VarianceScaling(2.0, "fan_in", "truncated_normal")


def build_ssd_model(num_classes: int = 1, name: str = "ssd_mobilenet_v2", input_size: int = INPUT_SIZE,
                    fine_scales: Sequence[float] = (), batch_norm: bool = False, fine_lateral: int = 0):
    """The network as a tf_keras Model: preprocessed [N,S,S,3] in [-1,1] (S = input_size) ->
    {"box_encodings": [N,A,4], "class_logits": [N,A,num_classes+1]} (column 0 = background; A = 1917 at 300,
    plus len(fine_scales) per cell of the stride-8 map when `fine_scales` is given: see FINE_STRIDE).
    `batch_norm`: a BatchNormalization after each backbone and extra conv (see BN_SUFFIX).
    `fine_lateral`: channels the stride-16 map is reduced to before it joins the fine layer (0: all of it)."""
    keras = _keras()
    layers = keras.layers
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}")
    if not MIN_INPUT_SIZE <= input_size <= MAX_INPUT_SIZE:
        raise ModelError(f"input size must be in [{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}], got {input_size}")
    if fine_lateral < 0 or (fine_lateral and not fine_scales):
        raise ModelError(f"fine_lateral must be >= 0 and needs fine_scales, got {fine_lateral}")
    specs: list[ConvSpec] = []

    def normalized(x, name: str):
        if not batch_norm:
            return x
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name + BN_SUFFIX)(x)

    def conv(x, scope: str, filters: int, kernel: int, stride: int = 1, relu: bool = True):
        specs.append(ConvSpec(_layer_name(scope), f"{_FEATURES}/{scope}", "conv"))
        x = layers.Conv2D(filters, kernel, stride, padding="same", name=_layer_name(scope), use_bias=not batch_norm,
                          kernel_initializer=_initializers("conv" if relu else "linear"))(x)
        x = normalized(x, _layer_name(scope))
        return layers.ReLU(6.0, name=_layer_name(scope) + "_relu6")(x) if relu else x

    def depthwise(x, scope: str, stride: int):
        specs.append(ConvSpec(_layer_name(scope), f"{_FEATURES}/{scope}", "depthwise"))
        x = layers.DepthwiseConv2D(3, stride, padding="same", name=_layer_name(scope), use_bias=not batch_norm,
                                   depthwise_initializer=_initializers("depthwise"))(x)
        x = normalized(x, _layer_name(scope))
        return layers.ReLU(6.0, name=_layer_name(scope) + "_relu6")(x)

    image = keras.Input([input_size, input_size, 3], name="preprocessed")
    x = conv(image, "Conv", 32, 3, 2)
    features = []
    for index, (expansion, channels, stride) in enumerate(MOBILENET_V2_BLOCKS):
        block = "expanded_conv" + (f"_{index}" if index else "")
        inputs = x
        if expansion != 1:
            x = conv(x, f"{block}/expand", inputs.shape[-1] * expansion, 1)
            if index == 13:
                features.append(x)  # 19x19x576 at 300: the first SSD feature map
            if index == FINE_BLOCK:
                fine = x  # 38x38x192 at 300
        x = depthwise(x, f"{block}/depthwise", stride)
        x = conv(x, f"{block}/project", channels, 1, relu=False)
        if stride == 1 and inputs.shape[-1] == channels:
            x = layers.Add(name=_layer_name(block) + "_add")([inputs, x])
    x = conv(x, "Conv_1", 1280, 1)
    features.append(x)
    for index, (reduce, channels) in enumerate(EXTRA_LAYERS, start=2):
        x = conv(x, f"layer_19_1_Conv2d_{index}_1x1_{reduce}", reduce, 1)
        x = conv(x, f"layer_19_2_Conv2d_{index}_3x3_s2_{channels}", channels, 3, 2)
        features.append(x)

    heads = list(enumerate(zip(features, ANCHORS_PER_LOCATION, strict=True)))
    if fine_scales:  # FPN-style: stride-8 detail + the upsampled stride-16 map's meaning, then 3x3 context
        coarse = features[0]
        if fine_lateral:
            lateral = _layer_name(FINE_LATERAL)
            specs.append(ConvSpec(lateral, "", "fine"))
            coarse = layers.Conv2D(fine_lateral, 1, padding="same", name=lateral,
                                   kernel_initializer=_initializers("linear"))(coarse)
        up = layers.UpSampling2D(2, name=FINE_UPSAMPLE)(coarse)
        extra = up.shape[1] - fine.shape[1]  # 2*ceil(S/16) may exceed ceil(S/8) by one
        if extra:
            up = layers.Cropping2D(((0, extra), (0, extra)), name="FineFeatures_crop")(up)
        x = layers.Concatenate(name="FineFeatures_concat")([fine, up])
        merge, context = _layer_name(FINE_MERGE), _layer_name("FineFeatures/depthwise")
        specs += [ConvSpec(merge, "", "fine"), ConvSpec(context, "", "fine")]
        x = layers.Conv2D(FINE_CHANNELS, 1, padding="same", name=merge, kernel_initializer=_initializers("conv"))(x)
        x = layers.ReLU(6.0, name=merge + "_relu6")(x)
        x = layers.DepthwiseConv2D(3, padding="same", name=context,
                                   depthwise_initializer=_initializers("depthwise"))(x)
        x = layers.ReLU(6.0, name=context + "_relu6")(x)
        heads.append(("fine", (x, len(fine_scales))))

    prior_logit = float(np.log(CLASS_PRIOR / (1 - CLASS_PRIOR)))  # sigmoid(prior_logit) = CLASS_PRIOR
    boxes, logits = [], []
    for index, (feature, anchors) in heads:
        for head, width in (("BoxEncodingPredictor", 4), ("ClassPredictor", num_classes + 1)):
            scope = f"BoxPredictor_{index}/{head}"
            specs.append(ConvSpec(_layer_name(scope), scope, "fine" if index == "fine" else "head"))
            bias = np.zeros([anchors, width], np.float32)
            if head == "ClassPredictor":
                bias[:, 0], bias[:, 1:] = -prior_logit, prior_logit  # background likely, hands not
            y = layers.Conv2D(anchors * width, 1, padding="same", name=_layer_name(scope),
                              kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                              bias_initializer=keras.initializers.Constant(bias.ravel()))(feature)
            y = layers.Reshape([-1, width], name=_layer_name(scope) + "_reshape")(y)
            (boxes if head == "BoxEncodingPredictor" else logits).append(y)
    outputs = {"box_encodings": layers.Concatenate(axis=1, name="box_encodings")(boxes),
               "class_logits": layers.Concatenate(axis=1, name="class_logits")(logits)}
    model = keras.Model(image, outputs, name=name)
    model.conv_specs = specs  # how each layer maps to the TF.js weights
    model.num_classes = num_classes
    model.fine_anchor_scales = tuple(float(s) for s in fine_scales)
    model.fine_lateral = int(fine_lateral)
    model.batch_norm = batch_norm
    return model


def conv_weights(model, spec: ConvSpec) -> list[np.ndarray]:
    """[kernel, bias] of a conv layer as the plain network has them (batch norm folded in)."""
    weights = model.get_layer(spec.layer).get_weights()
    if not (model.batch_norm and spec.kind in BN_KINDS):
        return weights
    gamma, beta, mean, variance = model.get_layer(spec.layer + BN_SUFFIX).get_weights()
    return list(fold_batch_norm(weights[0], gamma, beta, mean, variance, BN_EPSILON, spec.kind == "depthwise"))


def set_conv_weights(model, spec: ConvSpec, kernel: np.ndarray, bias: np.ndarray) -> None:
    """Set a conv layer to compute kernel * x + bias. In a batch-norm model the bias goes to its
    BatchNormalization, which passes the conv output through (until calibrate_batch_norm)."""
    if not (model.batch_norm and spec.kind in BN_KINDS):
        model.get_layer(spec.layer).set_weights([kernel, bias])
        return
    model.get_layer(spec.layer).set_weights([kernel])
    ones = np.ones_like(bias)
    model.get_layer(spec.layer + BN_SUFFIX).set_weights([ones, bias, np.zeros_like(bias), ones - BN_EPSILON])


def calibrate_batch_norm(model, batches: Iterable) -> int:
    """Give every BatchNormalization the statistics of its input on `batches` (preprocessed images) while
    keeping what the network computes in inference mode; in training mode, where each batch normalises
    with its own statistics, it then starts close to that too. Returns the number of images measured."""
    import tensorflow as tf

    specs = [s for s in model.conv_specs if s.kind in BN_KINDS] if model.batch_norm else []
    if not specs:
        return 0
    probe = _keras().Model(model.input, [model.get_layer(s.layer).output for s in specs])
    sums = sumsq = None
    count = images = 0
    for batch in batches:
        outputs = probe(batch, training=False)
        means = [tf.reduce_mean(o, [0, 1, 2]).numpy().astype(np.float64) for o in outputs]
        squares = [tf.reduce_mean(tf.square(o), [0, 1, 2]).numpy().astype(np.float64) for o in outputs]
        sums = means if sums is None else [a + b for a, b in zip(sums, means, strict=True)]
        sumsq = squares if sumsq is None else [a + b for a, b in zip(sumsq, squares, strict=True)]
        count += 1
        images += int(batch.shape[0])
    if not count:
        raise ModelError("no images to measure batch norm statistics on")
    for spec, total, total_sq in zip(specs, sums, sumsq, strict=True):
        bn = model.get_layer(spec.layer + BN_SUFFIX)
        gamma, beta, old_mean, old_var = bn.get_weights()
        slope = gamma / np.sqrt(old_var + BN_EPSILON)  # inference: slope * z + offset, kept as it is
        offset = beta - slope * old_mean
        mean = total / count
        variance = np.maximum(total_sq / count - mean ** 2, 0.0)
        bn.set_weights([(slope * np.sqrt(variance + BN_EPSILON)).astype(np.float32),
                        (slope * mean + offset).astype(np.float32), mean.astype(np.float32),
                        variance.astype(np.float32)])
    return images


def fold_model(model):
    """The plain network (no BatchNormalization) computing what `model` computes in inference mode."""
    if not model.batch_norm:
        return model
    plain = build_ssd_model(model.num_classes, input_size=model.input_shape[1], fine_scales=model.fine_anchor_scales,
                            fine_lateral=model.fine_lateral)
    for spec in model.conv_specs:
        plain.get_layer(spec.layer).set_weights(conv_weights(model, spec))
    return plain


def narrow_fine_layer(source, target, batches: Iterable | None = None) -> float:
    """Copy a full-map fine-layer network's weights (`source`, fine_lateral 0) into `target`, the same network
    with fine_lateral N: every layer as it is, and the merge conv's stride-16 part W [576, 96] split into the
    lateral conv (576 -> N) and the merge's new part (N -> 96) through a rank-N basis P [96, N] of what that
    part adds to the merge, W c: lateral = W P, merge part = P^T. With `batches` (preprocessed images) P holds
    the top eigenvectors of W c's second moment on them (the best rank N for those activations), else W's top
    singular vectors. Exact for N >= 96. Returns the share of that energy kept."""
    if source.fine_lateral or not target.fine_lateral or not source.fine_anchor_scales:
        raise ModelError("narrow_fine_layer: needs a full-map fine-layer source and a target with a lateral conv")
    lateral, merge = _layer_name(FINE_LATERAL), _layer_name(FINE_MERGE)
    for layer in target.layers:
        if layer.weights and layer.name not in (lateral, merge):
            layer.set_weights(source.get_layer(layer.name).get_weights())
    kernel, bias = source.get_layer(merge).get_weights()  # [1, 1, fine + 576, FINE_CHANNELS]
    fine_channels = target.get_layer(merge).get_weights()[0].shape[2] - target.fine_lateral
    coarse = kernel[0, 0, fine_channels:].astype(np.float64)
    if batches is None:
        moment = coarse.T @ coarse  # W^T W: its eigenvectors are W's right singular vectors
    else:
        probe = _keras().Model(source.input, source.get_layer(FINE_UPSAMPLE).input)
        moment, count = np.zeros([coarse.shape[1]] * 2), 0
        for batch in batches:
            added = probe(batch, training=False).numpy().reshape(-1, coarse.shape[0]) @ coarse
            moment, count = moment + added.T @ added, count + len(added)
        if not count:
            raise ModelError("narrow_fine_layer: no images to measure the merge on")
    values, vectors = np.linalg.eigh(moment)  # ascending
    values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
    rank = min(target.fine_lateral, len(values))
    basis = np.zeros([coarse.shape[1], target.fine_lateral])  # channels beyond the rank stay zero
    basis[:, :rank] = vectors[:, :rank]
    target.get_layer(lateral).set_weights([(coarse @ basis)[None, None].astype(np.float32),
                                           np.zeros(target.fine_lateral, np.float32)])
    target.get_layer(merge).set_weights([np.concatenate([kernel[0, 0, :fine_channels], basis.T])[None, None]
                                         .astype(np.float32), bias])
    return float(values[:rank].sum() / values.sum())


def feature_extractor_layers(model) -> list[str]:
    """Names of the backbone + extra layers (everything but the box predictor heads)."""
    return [s.layer for s in model.conv_specs if s.kind not in ("head", "fine")]


# MobileNetV2 block names a run may freeze through (train.freeze_through): the stem, then 17 bottlenecks.
BACKBONE_BLOCKS = ("Conv", "expanded_conv", *(f"expanded_conv_{i}" for i in range(1, 17)), "Conv_1")
_BLOCK_PARTS = ("", "_expand", "_depthwise", "_project")


def freeze_through(model, block: str | None) -> list[str]:
    """Stop training the backbone from its input up to and including `block` (a BACKBONE_BLOCKS name),
    batch norm included; returns the frozen layers' names. Why: the early, high-resolution layers cost
    most of the backward pass (freezing the stride-4 blocks trains ~1.5x faster on 2 cores) and hold
    generic edges and textures, and a frozen start also keeps more of what the pretrained model knows."""
    if not block:
        return []
    if block not in BACKBONE_BLOCKS:
        raise ModelError(f"train.freeze_through: {block!r} is not a backbone block; use one of "
                         f"{', '.join(BACKBONE_BLOCKS)}")
    last = {block + part for part in _BLOCK_PARTS}
    names = [s.layer for s in model.conv_specs]
    end = max(i for i, name in enumerate(names) if name in last)
    frozen = names[:end + 1]
    for name in frozen:  # every backbone conv has its BatchNormalization when the model has batch norm
        model.get_layer(name).trainable = False
        if model.batch_norm:
            model.get_layer(name + BN_SUFFIX).trainable = False
    return frozen


# ----------------------------------------------------------------------------- weight sources

def _tfjs_layer_weights(spec: ConvSpec, weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    scope = spec.tfjs_scope
    if spec.kind == "head":
        return [weights[f"{scope}/weights"], weights[f"{scope}/biases"]]
    offset = weights[f"{scope}/BatchNorm/FusedBatchNorm/Offset"]
    if spec.kind == "depthwise":  # the graph multiplies by the folded BN scale after the conv
        scale = weights[f"{scope}/BatchNorm/FusedBatchNorm/Scaled"]
        return [weights[f"{scope}/depthwise_weights"] * scale[None, None, :, None], offset]
    return [weights[f"{scope}/Conv2D/merged_input"], offset]


def load_tfjs_weights(model, model_dir: str | Path = config.HANDTRACKJS_MODEL_DIR,
                      class_heads: bool = True) -> list[str]:
    """Copy the handtrack.js weights into `model` by name; returns the class heads it skipped (the
    fine layer, not in the pretrained network, keeps its fresh weights).

    Box heads are class-agnostic and always loaded; class heads only when `class_heads` (the
    pretrained model has 1 class: a model for another class count keeps its fresh heads).
    """
    from utils.export.tfjs import TfjsModelError, read_tfjs_weights

    if not (Path(model_dir) / "weights_manifest.json").exists():
        raise ModelError(f"{model_dir}: the pretrained handtrack.js model is not there; run `make model` "
                         f"(or fetch_pretrained.py), or train with --init random")
    try:
        weights = read_tfjs_weights(model_dir)
    except TfjsModelError as exc:
        raise ModelError(str(exc)) from exc
    skipped = []
    for spec in model.conv_specs:
        if spec.kind == "fine":  # not in the pretrained network: keeps its fresh weights
            continue
        if not class_heads and spec.layer.endswith("ClassPredictor"):
            skipped.append(spec.layer)
            continue
        layer = model.get_layer(spec.layer)
        try:
            values = _tfjs_layer_weights(spec, weights)
        except KeyError as exc:
            raise ModelError(f"{model_dir}: no TF.js weight {exc} for layer {spec.layer}: "
                             f"not the handtrack.js SSD model") from exc
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if model.batch_norm and spec.kind in BN_KINDS:
            expected.append((expected[0][-1] * (expected[0][-2] if spec.kind == "depthwise" else 1),))
        if [tuple(v.shape) for v in values] != expected:
            raise ModelError(f"{model_dir}: weights of {spec.tfjs_scope} have shapes "
                             f"{[v.shape for v in values]}, the layer needs {expected}")
        set_conv_weights(model, spec, *values)
    return skipped


# Keras MobileNetV2 (tf_keras.applications) layer names of our backbone's convs.
def _keras_mobilenet_name(layer: str) -> str | None:
    if layer == "Conv":
        return "Conv1"
    if layer == "Conv_1":
        return "Conv_1"
    if not layer.startswith("expanded_conv"):
        return None
    block, _, part = layer.rpartition("_")
    index = 0 if block == "expanded_conv" else int(block.split("_")[-1])
    return f"expanded_conv_{part}" if index == 0 else f"block_{index}_{part}"


_KERAS_BN = {"Conv1": "bn_Conv1", "Conv_1": "Conv_1_bn"}


def fold_batch_norm(kernel: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
                    variance: np.ndarray, epsilon: float, depthwise: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
    """conv (no bias) + batch norm -> one conv with bias, as the exported graph has them."""
    scale = gamma / np.sqrt(variance + epsilon)
    kernel = kernel * (scale[None, None, :, None] if depthwise else scale)
    return kernel.astype(np.float32), (beta - mean * scale).astype(np.float32)


def load_keras_mobilenet_v2(model, source) -> int:
    """Fold a Keras MobileNetV2 (conv + BatchNorm) into our backbone; returns the layers loaded."""
    loaded = 0
    for spec in model.conv_specs:
        keras_name = _keras_mobilenet_name(spec.layer)
        if keras_name is None:
            continue
        conv = source.get_layer(keras_name)
        bn = source.get_layer(_KERAS_BN.get(keras_name, keras_name + "_BN"))
        gamma, beta, mean, variance = bn.get_weights()
        kernel, bias = fold_batch_norm(conv.get_weights()[0], gamma, beta, mean, variance, bn.epsilon,
                                       depthwise=spec.kind == "depthwise")
        set_conv_weights(model, spec, kernel, bias)
        loaded += 1
    return loaded


def load_imagenet_backbone(model, weights_path: str | Path | None = None) -> int:
    """ImageNet MobileNetV2 weights (Keras applications, alpha 1.0, no top) into the backbone.

    `weights_path` is a local .h5; without it Keras looks in ~/.keras/models and else downloads,
    which fails offline: the error says where to put the file.
    """
    keras = _keras()
    weights = str(weights_path) if weights_path else "imagenet"
    if weights_path and not Path(weights_path).is_file():
        raise ModelError(f"{weights_path}: ImageNet weights file not found")
    try:
        source = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False,
                                                weights=weights, alpha=1.0)
    except Exception as exc:  # URL/OS/HTTP errors from the download or h5 loading
        if weights_path:
            raise ModelError(f"{weights_path}: not loadable as Keras MobileNetV2 (alpha 1.0, no top) weights "
                             f"({exc.__class__.__name__})") from exc
        raise ModelError(
            "ImageNet MobileNetV2 weights are not available (no internet?); download "
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 into ~/.keras/models/ "
            f"or pass its path, or use --init pretrained|random ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return load_keras_mobilenet_v2(model, source)


def initialize(model, init: str, num_classes: int, imagenet_weights: str | Path | None = None,
               tfjs_dir: str | Path = config.HANDTRACKJS_MODEL_DIR) -> str:
    """Set the starting weights; returns a one-line description."""
    if init == "pretrained":
        skipped = load_tfjs_weights(model, tfjs_dir, class_heads=num_classes == 1)
        return ("pretrained handtrack.js weights" +
                (f" (class heads re-initialised for {num_classes} classes)" if skipped else "") +
                (" (fine layer: fresh)" if model.fine_anchor_scales else ""))
    if init == "imagenet":
        count = load_imagenet_backbone(model, imagenet_weights)
        return f"ImageNet MobileNetV2 backbone ({count} layers), random SSD layers and heads"
    if init == "random":
        return "random weights"
    raise ModelError(f"unknown init {init!r}; choose one of {', '.join(INIT_CHOICES)}")


# ----------------------------------------------------------------------------- freezing / export

def freeze_core(model) -> "GraphDef":
    """The model as an export_lib "core": a frozen GraphDef, `preprocessed:0` in,
    `box_encodings:0` [N,A,4] and `class_logits:0` [N,A,C+1] out."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    size = model.input_shape[1]
    spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="preprocessed")

    @tf.function
    def core(x):
        out = model(x, training=False)
        return out["box_encodings"], out["class_logits"]

    frozen = convert_variables_to_constants_v2(core.get_concrete_function(spec))
    frozen_def = frozen.graph.as_graph_def()
    graph = tf.Graph()
    with graph.as_default():
        preprocessed = tf.compat.v1.placeholder(tf.float32, spec.shape, name="preprocessed")
        encodings, logits = tf.graph_util.import_graph_def(
            frozen_def, input_map={frozen.inputs[0].name: preprocessed},
            return_elements=[t.name for t in frozen.outputs], name="ssd")
        tf.identity(encodings, name="box_encodings")
        tf.identity(logits, name="class_logits")
    return tf.compat.v1.graph_util.extract_sub_graph(graph.as_graph_def(), ["box_encodings", "class_logits"])


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """run.json of a training run (architecture, classes, config)."""
    path = Path(run_dir) / RUN_INFO_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: not found; {run_dir} is not a run folder written by train.py") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable run description ({exc}); re-run train.py") from exc


def run_input_size(info: Mapping[str, Any]) -> int:
    """The input size a run trained at (runs from before model.input_size: 300)."""
    return int(info.get("input_size", INPUT_SIZE))


def run_network(info: Mapping[str, Any]) -> dict[str, Any]:
    """build_ssd_model's keyword arguments for the network a run (run.json) or shipped folder (model.json)
    has; fields from before a setting existed mean the original network."""
    return {"input_size": run_input_size(info),
            "fine_scales": tuple(float(s) for s in info.get("fine_anchor_scales", ())),
            "batch_norm": bool(info.get("batch_norm", False)),
            "fine_lateral": int(info.get("fine_lateral_channels", 0))}


def config_network(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """build_ssd_model's keyword arguments for a training config's `model` section."""
    return {"input_size": int(model_cfg["input_size"]),
            "fine_scales": tuple(float(s) for s in model_cfg["fine_anchor_scales"]),
            "batch_norm": bool(model_cfg["batch_norm"]),
            "fine_lateral": int(model_cfg["fine_lateral_channels"])}


# How check_run_info words a difference in each network setting.
_NETWORK_MISMATCH = {"input_size": "trained at input size {had}, this run asks for {wants}",
                     "fine_scales": "trained with fine anchor scales {had}, this run asks for {wants}",
                     "batch_norm": "trained with model.batch_norm {had}, this run asks for {wants}",
                     "fine_lateral": "trained with model.fine_lateral_channels {had}, this run asks for {wants}"}


def check_run_info(info: Mapping[str, Any], run_dir: str | Path, num_classes: int | None = None,
                   network: Mapping[str, Any] | None = None) -> None:
    """Refuse a run of another architecture or (when given) another class count or network (input size,
    fine layer, batch norm: config_network's keys)."""
    if info.get("architecture") != ARCHITECTURE:
        raise ModelError(f"{run_dir}: checkpoints are of architecture {info.get('architecture')!r}, not "
                         f"{ARCHITECTURE!r}; use another --run (or delete the folder to start over)")
    if num_classes is not None and info.get("num_classes") != num_classes:
        raise ModelError(f"{run_dir}: checkpoints were trained with {info.get('num_classes')} classes, this run "
                         f"asks for {num_classes}; use another --run (or delete the folder to start over)")
    had = run_network(info)
    for key, wants in (network or {}).items():
        if had[key] != wants:
            shown = (list(had[key]), list(wants)) if key == "fine_scales" else (had[key], wants)
            raise ModelError(f"{run_dir}: checkpoints were "
                             f"{_NETWORK_MISMATCH[key].format(had=shown[0], wants=shown[1])}; use another --run "
                             f"(or delete the folder to start over)")


def resolve_checkpoint(checkpoint: str | Path) -> tuple[Path, str]:
    """(run folder, checkpoint prefix) for a run folder (its latest checkpoint) or a prefix."""
    import tensorflow as tf

    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        prefix = tf.train.latest_checkpoint(str(checkpoint))
        if prefix is None:
            raise ModelError(f"{checkpoint}: no checkpoint in this folder; train first "
                             f"(train.py --run {checkpoint.name})")
        return checkpoint, prefix
    if not Path(f"{checkpoint}.index").exists():
        raise ModelError(f"{checkpoint}: neither a run folder nor a checkpoint prefix (no {checkpoint}.index)")
    return checkpoint.parent, str(checkpoint)


def checkpoint_fingerprint(prefix: str) -> str:
    return sha256_of_files(sorted(Path(prefix).parent.glob(Path(prefix).name + ".*")))


def restore_model(prefix: str, num_classes: int, input_size: int = INPUT_SIZE, fine_scales: Sequence[float] = (),
                  batch_norm: bool = False, fine_lateral: int = 0, name: str = "ssd_mobilenet_v2"):
    """A model with the weights of checkpoint `prefix` (optimizer state ignored)."""
    import tensorflow as tf

    model = build_ssd_model(num_classes, name=name, input_size=input_size, fine_scales=fine_scales,
                            batch_norm=batch_norm, fine_lateral=fine_lateral)
    try:
        status = tf.train.Checkpoint(model=model).restore(prefix)
        status.expect_partial().assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as exc:
        raise ModelError(f"{prefix}: checkpoint does not fit {ARCHITECTURE} with {num_classes} classes "
                         f"({str(exc).splitlines()[0]})") from exc
    return model


def export_source(checkpoint: str | Path) -> tuple[dict, Callable[[], tuple["GraphDef", np.ndarray, list[str]]]]:
    """For export_inference_graph.py --checkpoint: (source description, load) where load() gives
    (core GraphDef, anchors [A,4], class names). Cheap until load() is called."""
    from utils.common.label_map import LabelMapError, class_names, read_label_map
    from utils.train import shipped

    if shipped.is_shipped(checkpoint):  # weights alone (model-checkpoint/shipped/<name>/)
        return shipped.export_source(checkpoint)
    run_dir, prefix = resolve_checkpoint(checkpoint)
    info = read_run_info(run_dir)
    check_run_info(info, run_dir)
    label_map = run_dir / config.LABEL_MAP_NAME
    try:
        names = class_names(read_label_map(label_map))
    except LabelMapError as exc:
        raise ModelError(f"{exc}; the run folder lost its label map: re-run train.py") from exc
    if len(names) != info["num_classes"]:
        raise ModelError(f"{label_map}: {len(names)} classes but the run trained {info['num_classes']}")
    network = run_network(info)
    source = {"kind": "checkpoint", "run": run_dir.name, "checkpoint": Path(prefix).name,
              "architecture": ARCHITECTURE, "input_size": network["input_size"],
              "fine_anchor_scales": list(network["fine_scales"]), "fine_lateral_channels": network["fine_lateral"],
              "batch_norm_folded": network["batch_norm"],
              "classes": names, "checkpoint_sha256": checkpoint_fingerprint(prefix),
              "model_code_sha256": sha256_of(Path(__file__))}  # rebuild on change

    def load():
        model = fold_model(restore_model(prefix, info["num_classes"], **network))
        return freeze_core(model), model_anchors(model), names
    return source, load
