"""The training config: one tree of tf-models-official hyperparams dataclasses, strict keys.

`TrainingConfig` holds every key and its default; model-checkpoint/<run>.yaml and train.py's
`--set key=value` override it through `official.modeling.hyperparams` (`override_params_dict`,
is_strict=True), so a key the tree does not have is an error naming the key and where it came
from. The `optimization` section is tf-models-official's own OptimizationConfig.

To add a setting, add a field to its section below (sections are plain dataclasses: `data` for
what is read, `loss` for what is optimised); YAML files and --set pick it up with no other change.
The rest of training reads the resolved config as a plain dict (`load_config`), as run.json stores it.

Importing this module imports TensorFlow (hyperparams does) but runs no TensorFlow op: the config
is read before MultiWorkerMirroredStrategy, which must be created before any op runs.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from official.modeling import optimization
from official.modeling.hyperparams import base_config, params_dict

from utils.common.errors import UserError
from utils.train.model import BACKBONE_BLOCKS, INPUT_SIZE, MAX_INPUT_SIZE, MIN_INPUT_SIZE


class ConfigError(UserError):
    """A config file or override that does not fit TrainingConfig."""


Section = base_config.Config


@dataclasses.dataclass
class ModelConfig(Section):
    num_classes: int = 1                    # 1 = 'hand' (multi-class records are merged), or the label map's count
    init: str = "pretrained"                # pretrained (handtrack.js) | random | imagenet (backbone only)
    imagenet_weights: str | None = None  # local Keras MobileNetV2 no-top .h5 for init: imagenet
    # Start from another run's weights instead (its folder: latest checkpoint; or a checkpoint prefix), e.g. a
    # second stage; the network settings below must be that run's. Optimizer state and step start afresh.
    init_checkpoint: str | None = None
    # Square input side. 300 is the pretrained network's; a larger one sees small hands in more pixels
    # (the network is fully convolutional, the anchors follow the feature maps) at about (size/300)^2 the cost.
    input_size: int = INPUT_SIZE
    # 1:1 anchor scales (fractions of the input side) of an extra stride-8 map for small hands, e.g.
    # [0.05, 0.07, 0.1]; empty: the original network. New layers, trained from scratch (model.py FINE_STRIDE).
    fine_anchor_scales: list[float] = dataclasses.field(default_factory=list)
    # With a fine layer: 0 merges the whole stride-16 map into it; N > 0 first reduces that map to N channels
    # (a 1x1 conv, FPN's lateral), a cheaper merge (model.py FINE_CHANNELS). Started from a full-map run
    # (init_checkpoint), its weights are narrowed to fit (model.py narrow_fine_layer).
    fine_lateral_channels: int = 0
    # Batch norm trained again: a BatchNormalization after each backbone and extra conv, measured on
    # calibration_images training images so that training starts from the pretrained network's outputs;
    # folded back into the convs for export and shipping (same speed). Tolerates larger steps.
    batch_norm: bool = False
    batch_norm_calibration_images: int = 256


@dataclasses.dataclass
class DataConfig(Section):
    dir: str = "data"                       # <dir>/<split>.record(-shards) + hand_label_map.pbtxt (relative to repo)
    train_split: str = "train"
    eval_split: str | None = "test"      # evaluated during/after training; null: no evaluation
    # Records come in labels-CSV order, grouped by source and video: a buffer spanning only a few groups
    # makes training drift from one group to the next. It holds the encoded records (~50-150 KB each).
    shuffle_buffer: int = 4096              # 1: record order (deterministic runs)
    cache: bool = False                     # keep the record bytes in memory (small datasets)
    # Per-source sampling: each example is drawn from sources[i] with probability source_weights[i]
    # (normalised), whatever the sources' sizes; empty: records as they come (the `source` record field).
    sources: list[str] = dataclasses.field(default_factory=list)
    source_weights: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TrainConfig(Section):
    batch_size: int = 8                     # global batch, split over the replicas of all workers
    steps: int = 2000
    steps_per_loop: int = 10                # steps per compiled loop (progress and summaries update this often)
    checkpoint_interval: int = 100
    max_to_keep: int = 3
    eval_interval: int = 0                  # steps between evaluations; 0: evaluate once, at the end
    eval_batch_size: int = 8
    clip_gradient_norm: float | None = 10.0  # of the global (all-replica) gradient; null: no clipping
    # Backbone block (model.py BACKBONE_BLOCKS, e.g. expanded_conv_3) up to which the network is not
    # trained: faster steps (the early high-resolution layers cost most of the backward pass); null: all trained.
    freeze_through: str | None = None
    weight_decay: float = 0.0               # L2 on conv kernels
    seed: int = 0


@dataclasses.dataclass
class LossConfig(Section):
    classification: str = "sigmoid_hnm"     # sigmoid_hnm (the original: sigmoid + hard negative mining) | focal
    negatives_per_positive: int = 3         # hard negative mining
    min_negatives: int = 3
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    classification_weight: float = 1.0
    localization_weight: float = 1.0
    huber_delta: float = 1.0                # smooth L1
    # The pretrained model as a teacher: its outputs are a target on these sources' images, so the view
    # it knows (egocentric) is kept while others are learnt. 0: off; needs model.num_classes 1.
    distillation_weight: float = 0.0
    distillation_box_weight: float = 1.0    # box encodings, on anchors the teacher is confident about
    distillation_min_score: float = 0.5
    distillation_sources: list[str] = dataclasses.field(default_factory=lambda: ["egohands"])
    # Another teacher than the pretrained model: a run (or checkpoint) of this project's network with this
    # run's input size and anchors, so its outputs are exact targets on every anchor, the fine layer's too
    # (the pretrained 300x300 model is mapped onto a larger input's anchors and has no fine ones). "": off.
    distillation_checkpoint: str = ""
    # The stage's starting weights (model.init_checkpoint) as a second teacher on these sources' images
    # (learning without forgetting): what an earlier stage learnt there is kept while this one learns the
    # rest. The same loss as the distillation, weighted by keep_weight. 0: off.
    keep_weight: float = 0.0
    keep_sources: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class MatcherConfig(Section):
    matched_threshold: float = 0.5
    unmatched_threshold: float = 0.5


@dataclasses.dataclass
class AugmentConfig(Section):
    horizontal_flip: float = 0.5            # probability; left/right class names swap with the image
    random_crop: bool = True                # SSD random crop (applied to half the images)
    crop_min_scale: float = 0.3
    crop_aspect_ratio: list[float] = dataclasses.field(default_factory=lambda: [0.5, 2.0])
    brightness: float = 0.2                 # colour jitter magnitudes
    contrast: float = 0.2
    saturation: float = 0.2


def default_optimization() -> optimization.OptimizationConfig:
    """SGD with momentum, cosine decay, linear warmup. Left null: decay_steps = train.steps and
    warmup_steps = 5% of train.steps (see build_optimizer), so a short run still reaches its rate."""
    return optimization.OptimizationConfig({
        "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
        "learning_rate": {"type": "cosine", "cosine": {"initial_learning_rate": 0.004, "decay_steps": None}},
        "warmup": {"type": "linear", "linear": {"warmup_steps": None, "warmup_learning_rate": 0.0}},
    })


@dataclasses.dataclass
class TrainingConfig(Section):
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    matcher: MatcherConfig = dataclasses.field(default_factory=MatcherConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    optimization: optimization.OptimizationConfig = dataclasses.field(default_factory=default_optimization)


CHOICES = {("model", "init"): ("pretrained", "random", "imagenet"),
           ("loss", "classification"): ("sigmoid_hnm", "focal")}
POSITIVE_TRAIN_KEYS = ("batch_size", "steps", "steps_per_loop", "checkpoint_interval", "max_to_keep",
                       "eval_batch_size", "seed")
ONEOF_SECTIONS = ("optimizer", "learning_rate", "warmup")  # optimization's one-of parts: only the chosen type is shown


def as_plain_dict(tree: TrainingConfig) -> dict:
    """The config as a plain dict; of optimization's one-of parts only the chosen type's settings."""
    cfg = tree.as_dict()
    for part in ONEOF_SECTIONS:
        chosen = cfg["optimization"][part]
        cfg["optimization"][part] = {"type": chosen["type"], **({chosen["type"]: chosen[chosen["type"]]}
                                                                if chosen["type"] in chosen else {})}
    cfg["optimization"] = {k: v for k, v in cfg["optimization"].items() if k in ONEOF_SECTIONS or v is not None}
    return cfg


DEFAULT_CONFIG: dict[str, Any] = as_plain_dict(TrainingConfig())  # every key and its default, for reading


# ----------------------------------------------------------------------------- checking an override

def _field_types(node: params_dict.ParamsDict) -> dict[str, Any]:
    hints = typing.get_type_hints(type(node))
    return {name: hint for name, hint in hints.items() if name in node.as_dict()}


def _optional(hint: Any) -> tuple[Any, bool]:
    """(T, True) for Optional[T] / T | None, else (hint, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _leaf(hint: Any, value: Any, source: str, where: str) -> Any:
    """The value checked against its field's type (an int is accepted, as a float, for a float)."""
    kind, optional = _optional(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {where!r} must be a {getattr(kind, '__name__', kind)}, got null")
    if kind is bool or isinstance(value, bool):
        ok = kind is bool and isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    elif kind in (int, str):
        ok = isinstance(value, kind)
    elif typing.get_origin(kind) in (list, tuple):
        items = typing.get_args(kind)
        ok = isinstance(value, (list, tuple))
        if ok and items and items[0] is float:
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            value = [float(v) for v in value] if ok else value
        kind = typing.get_origin(kind)
    else:
        ok = True  # anything else: tf-models-official checks it when building
    if not ok:
        raise ConfigError(f"{source}: {where!r} must be a {getattr(kind, '__name__', kind)}, got {value!r}")
    numbers = value if isinstance(value, list) else [value]
    if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
        # YAML's .nan / .inf: every float setting is a rate, weight, threshold or size, none of them infinite
        raise ConfigError(f"{source}: {where!r} must be a finite number, got {value!r}")
    return value


def checked_override(node: params_dict.ParamsDict, override: Mapping, source: str, path: str = "") -> dict:
    """`override` with every key known to `node` and every value of its field's type; ConfigError naming
    the key and `source` otherwise. Returns it with ints converted for float fields."""
    fields = _field_types(node)
    out = {}
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in fields:
            detail = f" ({path.split('.')[0]}: {key!r} does not exist in {type(node).__name__})" if path else ""
            raise ConfigError(f"{source}: unknown config key {where!r}{detail}; known keys here: "
                              f"{', '.join(sorted(fields))}")
        current = getattr(node, key)
        sub_type = node._get_subconfig_type(key, subconfig_type=type(None))
        if isinstance(current, params_dict.ParamsDict) or (current is None and sub_type is not type(None)):
            if not isinstance(value, Mapping):
                child = current if current is not None else sub_type()
                raise ConfigError(f"{source}: {where!r} must be a mapping of {', '.join(sorted(_field_types(child)))}")
            out[key] = checked_override(current if current is not None else sub_type(), value, source, where + ".")
        else:
            out[key] = _leaf(fields[key], value, source, where)
    return out


def apply_override(tree: TrainingConfig, override: Mapping, source: str) -> None:
    """Check `override` (a nested mapping) and apply it with hyperparams' strict override."""
    if not isinstance(override, Mapping):
        raise ConfigError(f"{source}: expected a mapping of {', '.join(DEFAULT_CONFIG)}")
    params_dict.override_params_dict(tree, checked_override(tree, override, source), is_strict=True)


def parse_set(item: str) -> dict:
    """`a.b.c=VALUE` (VALUE in YAML) as {'a': {'b': {'c': value}}}."""
    import yaml

    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=500")
    try:
        nested: Any = load_yaml(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(exc).splitlines()[0]})") from exc
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def load_yaml(text: str) -> Any:
    """yaml.safe_load, except that 1e-5 is a float as in YAML 1.2 and JSON (PyYAML's YAML 1.1 wants 1.0e-5)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    exponent = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent, list("-+0123456789"))
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader


def read_yaml(path: str | Path) -> Any:
    import yaml

    try:
        return load_yaml(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc


def load_config_tree(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainingConfig:
    """TrainingConfig defaults, overridden by a YAML file and then by `key.sub=value` items; validated."""
    tree = TrainingConfig()
    if path is not None:
        apply_override(tree, read_yaml(path), str(path))
    for item in overrides:
        apply_override(tree, parse_set(item), f"--set {item}")
    validate_config(tree)
    return tree


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict:
    """The resolved config (see load_config_tree) as a plain dict, as run.json stores it."""
    return as_plain_dict(load_config_tree(path, overrides))


# ----------------------------------------------------------------------------- semantic checks

def validate_config(tree: TrainingConfig, source: str = "config") -> None:
    """What types alone do not say: choices, positive counts, thresholds, the optimizer's types."""
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(tree, section), key)
        if value not in allowed:
            raise ConfigError(f"{source}: {section}.{key} must be one of {', '.join(allowed)}, got {value!r}")
    for key in POSITIVE_TRAIN_KEYS:
        value = getattr(tree.train, key)
        if value < (0 if key == "seed" else 1):
            raise ConfigError(f"{source}: train.{key} must be >= {0 if key == 'seed' else 1}, got {value}")
    if tree.data.shuffle_buffer < 1:
        raise ConfigError(f"{source}: data.shuffle_buffer must be >= 1 (1: record order), "
                          f"got {tree.data.shuffle_buffer}")
    if tree.model.num_classes < 1:
        raise ConfigError(f"{source}: model.num_classes must be >= 1, got {tree.model.num_classes}")
    matcher = tree.matcher
    if not 0 < matcher.unmatched_threshold <= matcher.matched_threshold <= 1:
        raise ConfigError(f"{source}: need 0 < matcher.unmatched_threshold <= matcher.matched_threshold <= 1")
    if any(not 0 < scale < 1 for scale in tree.model.fine_anchor_scales):
        raise ConfigError(f"{source}: model.fine_anchor_scales are fractions of the input side in (0, 1), e.g. "
                          f"[0.05, 0.07, 0.1]; got {list(tree.model.fine_anchor_scales)}")
    if tree.model.fine_lateral_channels < 0 or (tree.model.fine_lateral_channels and not tree.model.fine_anchor_scales):
        raise ConfigError(f"{source}: model.fine_lateral_channels must be >= 0 and needs model.fine_anchor_scales, "
                          f"got {tree.model.fine_lateral_channels}")
    if not MIN_INPUT_SIZE <= tree.model.input_size <= MAX_INPUT_SIZE:
        raise ConfigError(f"{source}: model.input_size must be in [{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}], got "
                          f"{tree.model.input_size}")
    if tree.train.freeze_through is not None and tree.train.freeze_through not in BACKBONE_BLOCKS:
        raise ConfigError(f"{source}: train.freeze_through must be a backbone block, one of "
                          f"{', '.join(BACKBONE_BLOCKS)}; got {tree.train.freeze_through!r}")
    if not 0 <= tree.augment.horizontal_flip <= 1:
        raise ConfigError(f"{source}: augment.horizontal_flip is a probability in [0, 1]")
    data = tree.data
    if len(data.sources) != len(data.source_weights) or any(w <= 0 for w in data.source_weights) \
            or len(set(data.sources)) != len(data.sources):
        raise ConfigError(f"{source}: data.sources and data.source_weights are parallel lists of distinct "
                          f"sources and positive weights, e.g. [egohands, oxford] and [1, 1]; got "
                          f"{list(data.sources)} and {list(data.source_weights)}")
    loss = tree.loss
    if loss.distillation_weight < 0 or loss.distillation_box_weight < 0:
        raise ConfigError(f"{source}: loss.distillation_weight and loss.distillation_box_weight must be >= 0")
    if loss.distillation_weight > 0 and not loss.distillation_checkpoint and tree.model.num_classes != 1:
        raise ConfigError(f"{source}: loss.distillation_weight needs model.num_classes 1 (the teacher is the "
                          f"1-class pretrained model) or a loss.distillation_checkpoint of this run's classes")
    if loss.distillation_checkpoint and loss.distillation_weight <= 0:
        raise ConfigError(f"{source}: loss.distillation_checkpoint needs loss.distillation_weight > 0 (the weight "
                          f"of its targets)")
    if loss.keep_weight < 0:
        raise ConfigError(f"{source}: loss.keep_weight must be >= 0, got {loss.keep_weight}")
    if loss.keep_weight > 0:
        if not tree.model.init_checkpoint or not loss.keep_sources:
            raise ConfigError(f"{source}: loss.keep_weight needs model.init_checkpoint (the teacher) and "
                              f"loss.keep_sources (its images), e.g. [oxford]")
        both = set(loss.keep_sources) & set(loss.distillation_sources if loss.distillation_weight > 0 else ())
        if both:
            raise ConfigError(f"{source}: source(s) {', '.join(sorted(both))} in both loss.distillation_sources "
                              f"and loss.keep_sources; each source has one teacher")
    if len(tree.augment.crop_aspect_ratio) != 2:
        raise ConfigError(f"{source}: augment.crop_aspect_ratio is [low, high], got {tree.augment.crop_aspect_ratio}")
    for part in ONEOF_SECTIONS:
        oneof = getattr(tree.optimization, part)
        options = sorted(k for k in oneof.as_dict() if k != "type") if oneof.type in oneof.__dict__ else []
        if oneof.type is not None and not options:
            known = sorted(k for k in oneof.__dict__ if not k.startswith("_") and k not in ("type", "default_params",
                                                                                             "restrictions"))
            raise ConfigError(f"optimization: unknown {part} type {oneof.type!r}; choose one of {', '.join(known)}")
    optimization_config(as_plain_dict(tree))  # the chosen optimizer and schedules exist


def optimization_config(cfg: Mapping) -> optimization.OptimizationConfig:
    """cfg['optimization'] as tf-models-official's OptimizationConfig, null decay/warmup steps filled in
    from train.steps. Builds nothing (runs no TensorFlow op)."""
    opt = optimization.OptimizationConfig()
    try:
        opt.override(cfg["optimization"], is_strict=True)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"optimization: {str(exc).strip(chr(34))} (see official.modeling.optimization "
                          f"configs)") from exc
    try:
        chosen = opt.optimizer.get() is not None and opt.learning_rate.get() is not None
    except ValueError:  # a type that names no config
        chosen = False
    if not chosen:
        raise ConfigError(f"optimization: unknown optimizer type {opt.optimizer.type!r} or learning_rate "
                          f"type {opt.learning_rate.type!r}")
    steps = cfg["train"]["steps"]
    for part, key, value in ((opt.learning_rate, "decay_steps", steps), (opt.warmup, "warmup_steps",
                                                                          max(1, steps // 20))):
        params = part.get() if part.type else None
        if params is not None and key in params.as_dict() and getattr(params, key) is None:
            setattr(params, key, value)
    return opt


def build_optimizer(cfg: Mapping):
    """(tf_keras optimizer, learning-rate schedule) from cfg['optimization'] via official.modeling."""
    factory = optimization.OptimizerFactory(optimization_config(cfg))
    try:
        schedule = factory.build_learning_rate()
        float(schedule(0) if callable(schedule) else schedule)
        return factory.build_optimizer(schedule), schedule
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"optimization: cannot build the optimizer ({exc})") from exc


def learning_rate_at(schedule, step) -> float:
    return float(schedule(step) if callable(schedule) else schedule)
