"""Training the hand detector: losses, distribution strategy, the orbit training loop.

One run = one folder model-checkpoint/<run>/ holding run.json (architecture, classes, the config
used), hand_label_map.pbtxt (class names for the exporter), ckpt-N checkpoints (resume and export),
train/ and eval/ TensorBoard summaries, train.log and eval_metrics.json.

From tf-models-official: the orbit Controller/StandardTrainer/StandardEvaluator loop, optimizers and
learning-rate schedules (official.modeling.optimization), AnchorLabeler / box matcher / Faster R-CNN
box coder, FocalLoss, TfExampleDecoder and the box-aware augmentation ops (utils/train/inputs.py).
The config (keys, defaults, YAML and --set overrides) is utils/train/run_config.py; the cluster
(TF_CONFIG) and who writes what in a multi-worker run, utils/train/cluster.py.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from utils.common import config
from utils.common.errors import UserError
from utils.train.run_config import (  # noqa: F401  (the config's names, re-exported for callers)
    CHOICES,
    DEFAULT_CONFIG,
    ConfigError,
    TrainingConfig,
    build_optimizer,
    learning_rate_at,
    load_config,
    load_config_tree,
)

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")
RUN_INFO_NAME = "run.json"
EVAL_METRICS_NAME = "eval_metrics.json"
TRAIN_LOG_NAME = "train.log"
NARROW_IMAGES = 256  # training images a narrowed fine layer (model.fine_lateral_channels) is fitted on


class TrainingError(UserError):
    """Training that cannot go on (e.g. the loss became NaN)."""


# ----------------------------------------------------------------------------- distribution

def split_cpu(devices: int) -> None:
    """Split the CPU into `devices` logical devices (MirroredStrategy on one machine without GPUs).
    Must run before anything initialises the TensorFlow runtime."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError as exc:
        raise ConfigError(f"--cpu-devices {devices}: TensorFlow is already initialised ({exc})") from exc


def make_strategy(name: str = "default", tpu: str | None = None, cluster_timeout_s: float | None = None):
    """A tf.distribute strategy by name (see STRATEGIES). Create it before any other TensorFlow work:
    multi_worker_mirrored reads TF_CONFIG (utils/train/cluster.py) and waits for the other workers."""
    import os

    import tensorflow as tf

    from utils.train.cluster import TF_CONFIG_VAR, make_multi_worker_strategy, parse_tf_config

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "multi_worker_mirrored":
        return make_multi_worker_strategy(parse_tf_config(os.environ.get(TF_CONFIG_VAR)),
                                          cluster_timeout_s or config.TRAIN_CLUSTER_TIMEOUT_S)
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


# ----------------------------------------------------------------------------- losses

def ssd_losses(outputs: Mapping, targets: Mapping, loss_cfg: Mapping) -> dict:
    """Classification + localisation losses of a batch, each normalised by the number of matched
    anchors over all replicas (so summing the replicas' gradients gives the global loss's)."""
    import tensorflow as tf
    from official.vision.losses.focal_loss import FocalLoss

    from utils.train.inputs import BOX_TARGETS, BOX_WEIGHTS, CLS_TARGETS, CLS_WEIGHTS

    logits = tf.cast(outputs["class_logits"], tf.float32)
    encodings = tf.cast(outputs["box_encodings"], tf.float32)
    positive = targets[BOX_WEIGHTS]
    cls_weights = targets[CLS_WEIGHTS]
    onehot = tf.one_hot(targets[CLS_TARGETS], logits.shape[-1], dtype=tf.float32)  # column 0 = background
    num_positive = tf.reduce_sum(positive)
    context = tf.distribute.get_replica_context()
    if context is not None:
        num_positive = context.all_reduce(tf.distribute.ReduceOp.SUM, num_positive)
    normalizer = tf.maximum(num_positive, 1.0)

    if loss_cfg["classification"] == "focal":
        focal = FocalLoss(loss_cfg["focal_alpha"], loss_cfg["focal_gamma"])
        per_anchor = tf.reduce_sum(focal.call(onehot, logits), -1) * cls_weights
    else:  # sigmoid cross-entropy on the positives and the hardest negatives (3 per positive)
        entropy = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(onehot, logits), -1) * cls_weights
        negative = (1.0 - positive) * tf.cast(cls_weights > 0, tf.float32)
        wanted = tf.maximum(loss_cfg["negatives_per_positive"] * tf.reduce_sum(positive, 1),
                            float(loss_cfg["min_negatives"]))
        wanted = tf.minimum(wanted, tf.reduce_sum(negative, 1))
        rank = tf.argsort(tf.argsort(-entropy * negative, axis=1, stable=True), axis=1)
        hard = tf.cast(tf.cast(rank, tf.float32) < wanted[:, None], tf.float32) * negative
        per_anchor = entropy * (positive + hard)
    classification = loss_cfg["classification_weight"] * tf.reduce_sum(per_anchor) / normalizer

    delta = loss_cfg["huber_delta"]
    error = tf.abs(encodings - targets[BOX_TARGETS])
    huber = tf.where(error < delta, 0.5 * tf.square(error), delta * (error - 0.5 * delta))
    localization = (loss_cfg["localization_weight"] * tf.reduce_sum(tf.reduce_sum(huber, -1) * positive)
                    / normalizer)
    return {"total": classification + localization, "classification": classification,
            "localization": localization}


def distillation_losses(outputs: Mapping, teacher: Mapping, mask, loss_cfg: Mapping) -> dict:
    """The student's divergence from the teacher on the images where `mask` is 1.

    Classification: the Bernoulli KL divergence of every anchor's sigmoid scores (0 when they agree),
    summed over anchors and averaged over the masked images of all replicas. Boxes: smooth L1 to the
    teacher's encodings on anchors whose teacher score reaches `distillation_min_score`.
    """
    import tensorflow as tf

    student_logits = tf.cast(outputs["class_logits"], tf.float32)
    teacher_logits = tf.stop_gradient(tf.cast(teacher["class_logits"], tf.float32))
    probs = tf.sigmoid(teacher_logits)
    kl = (tf.nn.sigmoid_cross_entropy_with_logits(probs, student_logits)
          - tf.nn.sigmoid_cross_entropy_with_logits(probs, teacher_logits))
    mask = tf.cast(mask, tf.float32)
    confident = tf.cast(tf.reduce_max(probs[..., 1:], -1) >= loss_cfg["distillation_min_score"], tf.float32)
    confident *= mask[:, None]
    if "distill_anchors" in teacher:  # anchors the teacher has no counterpart for
        kl *= teacher["distill_anchors"][None, :, None]
        confident *= teacher["distill_anchors"][None, :]
    images, anchors = tf.reduce_sum(mask), tf.reduce_sum(confident)
    context = tf.distribute.get_replica_context()
    if context is not None:
        images = context.all_reduce(tf.distribute.ReduceOp.SUM, images)
        anchors = context.all_reduce(tf.distribute.ReduceOp.SUM, anchors)
    classification = tf.reduce_sum(tf.reduce_sum(kl, [1, 2]) * mask) / tf.maximum(images, 1.0)
    delta = loss_cfg["huber_delta"]
    error = tf.abs(tf.cast(outputs["box_encodings"], tf.float32)
                   - tf.stop_gradient(tf.cast(teacher["box_encodings"], tf.float32)))
    huber = tf.reduce_sum(tf.where(error < delta, 0.5 * tf.square(error), delta * (error - 0.5 * delta)), -1)
    boxes = tf.reduce_sum(huber * confident) / tf.maximum(anchors, 1.0)
    return {"distillation": loss_cfg["distillation_weight"] * classification
            + loss_cfg["distillation_box_weight"] * loss_cfg["distillation_weight"] * boxes}


def build_teacher(num_classes: int = 1):
    """The pretrained handtrack.js network, frozen: the distillation teacher (at its own 300x300)."""
    from utils.train.model import build_ssd_model, load_tfjs_weights

    teacher = build_ssd_model(num_classes, name="teacher")
    load_tfjs_weights(teacher)
    teacher.trainable = False
    return teacher


def taught_only(teacher: Callable, images, mask) -> dict:
    """The teacher's outputs on the images where `mask` is 1, zeros on the others (which the distillation
    loss masks out): the teacher runs on the distilled share of the batch only."""
    import tensorflow as tf

    index = tf.where(mask > 0)
    # never an empty batch (oneDNN's fused convs mishandle one): then the first image, masked out anyway
    index = tf.cond(tf.size(index) > 0, lambda: index, lambda: tf.zeros([1, 1], tf.int64))
    out = teacher(tf.gather_nd(images, index))
    batch = tf.shape(images, out_type=tf.int64)[:1]
    return {key: value if key == "distill_anchors" else
            tf.scatter_nd(index, value, tf.concat([batch, tf.shape(value, out_type=tf.int64)[1:]], 0))
            for key, value in out.items()}


def nearest_anchors(from_anchors: np.ndarray, to_anchors: np.ndarray) -> np.ndarray:
    """For each of `to_anchors`, the index of the one of `from_anchors` it overlaps most (IoU)."""
    from utils.common.boxes import iou_matrix

    return np.argmax(iou_matrix(to_anchors, from_anchors), axis=1).astype(np.int32)


def teacher_on_student_anchors(teacher, student_size: int, fine_scales: Sequence[float] = ()) -> Callable:
    """images [N,S,S,3] -> the teacher's outputs on the student's anchors.

    A student of another input size than the teacher's has other anchors: the teacher sees the images
    resized to its own size, and each student anchor takes the score of the teacher anchor it overlaps
    most and the teacher's decoded box for it, re-encoded against the student anchor. The fine layer's
    anchors (smaller than any of the teacher's) get no teacher: "distill_anchors" is 0 there, so they
    learn from the labels alone."""
    import tensorflow as tf

    from utils.export.exporter import decode_boxes, encode_boxes
    from utils.train.model import anchors_for

    teacher_size = teacher.input_shape[1]
    if teacher_size == student_size and not fine_scales:
        return lambda images: teacher(images, training=False)
    teacher_anchors, student_anchors = anchors_for(teacher_size), anchors_for(student_size, fine_scales)
    coarse = len(anchors_for(student_size))
    if teacher_size == student_size:  # the same anchors, then the fine ones
        index = np.concatenate([np.arange(coarse), np.zeros(len(student_anchors) - coarse)]).astype(np.int32)
    else:
        index = nearest_anchors(teacher_anchors, student_anchors)
    index = tf.constant(index)
    weights = tf.constant(np.arange(len(student_anchors)) < coarse, tf.float32)

    def teach(images):
        if teacher_size != student_size:
            images = tf.image.resize(images, [teacher_size, teacher_size])
        out = teacher(images, training=False)
        boxes = tf.gather(decode_boxes(out["box_encodings"], teacher_anchors), index, axis=1)
        return {"class_logits": tf.gather(out["class_logits"], index, axis=1),
                "box_encodings": encode_boxes(boxes, student_anchors), "distill_anchors": weights}
    return teach


# ----------------------------------------------------------------------------- detection (eval)

def postprocess(outputs: Mapping, anchors: np.ndarray):
    """Decoded boxes, sigmoid scores and NMS exactly as the exported graph does them."""
    from utils.export import exporter as export_lib

    detections = export_lib.postprocess(outputs["box_encodings"], outputs["class_logits"], anchors)
    return {key: detections[key] for key in ("boxes", "scores", "classes", "count")}  # raw ones not needed


def _orbit():
    import orbit
    return orbit


def apply_summed_gradients(optimizer, grads_and_vars, summed: bool) -> None:
    """apply_gradients, told not to sum the replicas' gradients again when they already are."""
    import inspect

    if not summed:
        optimizer.apply_gradients(grads_and_vars)
    elif "experimental_aggregate_gradients" in inspect.signature(optimizer.apply_gradients).parameters:
        optimizer.apply_gradients(grads_and_vars, experimental_aggregate_gradients=False)  # tf_keras legacy
    else:
        optimizer.apply_gradients(grads_and_vars, skip_gradients_aggregation=True)


def make_trainer(model, optimizer, schedule, dataset, strategy, loss_cfg: Mapping, train_cfg: Mapping,
                 teacher: Callable | None = None, keeper: Callable | None = None):
    """An orbit.StandardTrainer running `steps_per_loop` steps per compiled tf.while_loop. `teacher`:
    images -> the distillation targets on the model's anchors (teacher_on_student_anchors); `keeper`:
    the same from the starting weights, on the loss.keep_sources images."""
    import tensorflow as tf
    import tf_keras

    from utils.train.inputs import DISTILL_MASK, KEEP_MASK

    orbit = _orbit()

    class SsdTrainer(orbit.StandardTrainer):
        def __init__(self):
            super().__init__(dataset, orbit.StandardTrainerOptions(use_tf_while_loop=True))
            with strategy.scope():
                names = (("total", "classification", "localization") + (("distillation",) if teacher else ())
                         + (("keeping",) if keeper else ()))
                self.losses = {k: tf_keras.metrics.Mean(k) for k in names}
            self.kernels = [v for v in model.trainable_variables if "kernel" in v.name]

        def train_loop_begin(self):
            for metric in self.losses.values():
                metric.reset_state()

        def train_step(self, iterator):
            def step(inputs):
                images, targets = inputs
                replicas = tf.distribute.get_strategy().num_replicas_in_sync
                with tf.GradientTape() as tape:
                    outputs = model(images, training=True)
                    losses = ssd_losses(outputs, targets, loss_cfg)
                    if teacher is not None:
                        losses.update(distillation_losses(outputs, taught_only(teacher, images, targets[DISTILL_MASK]),
                                                          targets[DISTILL_MASK], loss_cfg))
                        losses["total"] += losses["distillation"]
                    if keeper is not None:
                        losses["keeping"] = distillation_losses(
                            outputs, taught_only(keeper, images, targets[KEEP_MASK]), targets[KEEP_MASK],
                            dict(loss_cfg, distillation_weight=loss_cfg["keep_weight"]))["distillation"]
                        losses["total"] += losses["keeping"]
                    objective = losses["total"]
                    if train_cfg["weight_decay"]:
                        objective += (train_cfg["weight_decay"] / replicas
                                      * tf.add_n([tf.nn.l2_loss(k) for k in self.kernels]))
                variables = model.trainable_variables
                grads = tape.gradient(objective, variables)
                if replicas > 1:  # the global gradient, so that clipping acts on it as on one device
                    grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
                if train_cfg["clip_gradient_norm"]:
                    grads, _ = tf.clip_by_global_norm(grads, train_cfg["clip_gradient_norm"])
                apply_summed_gradients(optimizer, zip(grads, variables, strict=True), summed=replicas > 1)
                for key, metric in self.losses.items():
                    metric.update_state(losses[key] * replicas)  # each replica holds its share
            strategy.run(step, args=(next(iterator),))

        def train_loop_end(self):
            out = {f"loss/{k}": m.result() for k, m in self.losses.items()}
            out["learning_rate"] = learning_rate_at(schedule, optimizer.iterations)
            return out

    return SsdTrainer()


def make_evaluator(model, dataset, ground_truth: Sequence, anchors: np.ndarray, class_names: Mapping[int, str]):
    """An orbit.StandardEvaluator: COCO AP@0.5, AP@[.5:.95], AR@100 via utils/evaluation/coco.py."""
    import tensorflow as tf

    from utils.evaluation.coco import coco_evaluate, detections_to_annotations
    from utils.runtime.detector import Detections

    orbit = _orbit()

    class SsdEvaluator(orbit.StandardEvaluator):
        def __init__(self):
            super().__init__(dataset, orbit.StandardEvaluatorOptions(use_tf_function=True))
            self.last_metrics: dict = {}

        def eval_begin(self):
            return []

        def eval_step(self, iterator):
            return postprocess(model(next(iterator), training=False), anchors)

        def eval_reduce(self, state, outputs):
            batch = {k: v.numpy() for k, v in outputs.items()}
            for i in range(len(batch["count"])):
                n = int(batch["count"][i])
                state.append(Detections(batch["boxes"][i, :n], batch["scores"][i, :n],
                                        batch["classes"][i, :n].astype(np.int32)))
            return state

        def eval_end(self, state):
            if len(state) != len(ground_truth):
                raise TrainingError(f"evaluated {len(state)} images but the eval split has {len(ground_truth)}")
            detections = [detections_to_annotations(d, gt.width, gt.height) for d, gt in zip(state, ground_truth,
                                                                                              strict=True)]
            self.last_metrics = coco_evaluate(ground_truth, detections, dict(class_names))
            return {k: tf.constant(self.last_metrics[k]) for k in ("AP50", "AP", "AR100")}

    return SsdEvaluator()


def evaluate_model(model, files: Sequence[str | Path], class_names: Sequence[str], collapse_classes: bool = False,
                   batch_size: int = 8) -> dict:
    """COCO metrics of a Keras model on TFRecords, through the same evaluator as training."""
    from utils.train.inputs import SsdInput, read_ground_truth
    from utils.train.model import model_anchors

    size = model.input_shape[1]
    anchors = model_anchors(model)
    data = SsdInput(anchors, len(class_names), class_names, {}, collapse_classes=collapse_classes, input_size=size)
    evaluator = make_evaluator(model, data.eval_dataset(files, batch_size), read_ground_truth(files, collapse_classes),
                               anchors, dict(enumerate(class_names, 1)))
    evaluator.evaluate(-1)
    return evaluator.last_metrics


# ----------------------------------------------------------------------------- a training run

@dataclass
class TrainingPlan:
    """Everything checked before training starts (see prepare_training)."""

    cfg: dict
    run_dir: Path
    class_names: list[str]
    collapse_classes: bool
    train_files: list[Path]
    eval_files: list[Path]
    resume_from: str | None
    start_step: int
    notes: list[str] = field(default_factory=list)
    init_from: str | None = None  # a checkpoint prefix to start from (model.init_checkpoint)
    # That checkpoint's network when it is the full-map fine layer this run narrows (model.fine_lateral_channels).
    narrow_from: dict | None = None
    # loss.keep_weight: the checkpoint of model.init_checkpoint and its network, the teacher on loss.keep_sources
    # (also when resuming)
    keep_from: str | None = None
    keep_network: dict | None = None
    # loss.distillation_checkpoint: the teacher on loss.distillation_sources instead of the pretrained model
    teach_from: str | None = None
    teach_network: dict | None = None


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else config.ROOT / path


def prepare_training(cfg: dict, run_dir: str | Path) -> TrainingPlan:
    """Check data, label map, run folder and init source; raise one clear error for bad input."""
    import tensorflow as tf

    from utils.common.label_map import LabelMapError, class_names, read_label_map
    from utils.train.inputs import DataError, count_sources, split_files
    from utils.train.model import (
        ModelError,
        check_run_info,
        config_network,
        read_run_info,
        resolve_checkpoint,
        run_network,
    )

    run_dir = Path(run_dir)
    data_dir = _resolve(cfg["data"]["dir"])
    label_map = data_dir / config.LABEL_MAP_NAME
    if not label_map.exists():
        raise DataError(f"{label_map}: label map not found; run `make data` (generate_tfrecord.py writes it) "
                        f"or pass --data-dir")
    try:
        names = class_names(read_label_map(label_map))
    except LabelMapError as exc:
        raise DataError(f"{exc}; regenerate it with generate_tfrecord.py") from exc
    num_classes = cfg["model"]["num_classes"]
    collapse = num_classes == 1 and len(names) > 1
    if collapse:
        names = ["hand"]
    elif num_classes != len(names):
        raise DataError(f"{label_map}: {len(names)} classes ({', '.join(names)}) but model.num_classes is "
                        f"{num_classes}; pass --num-classes {len(names)} (or 1), or regenerate the records")
    train_files = split_files(data_dir, cfg["data"]["train_split"])
    weighted = dict(zip(cfg["data"]["sources"], cfg["data"]["source_weights"], strict=True))
    keeping = cfg["loss"]["keep_weight"] > 0
    if weighted or cfg["loss"]["distillation_weight"] > 0 or keeping:
        found = count_sources(train_files)
        wanted = (sorted(weighted) + list(cfg["loss"]["distillation_sources"] if cfg["loss"]["distillation_weight"] > 0
                                          else ()) + list(cfg["loss"]["keep_sources"] if keeping else ()))
        missing = sorted({name for name in wanted if not found.get(name)})
        if missing:
            raise DataError(f"{train_files[0]}: no {cfg['data']['train_split']!r} examples from source(s) "
                            f"{', '.join(missing)} (the records hold {found or 'none'}); make the data with "
                            f"`make data DATASETS=...` or change data.sources / loss.distillation_sources / "
                            f"loss.keep_sources")
    eval_files = split_files(data_dir, cfg["data"]["eval_split"]) if cfg["data"]["eval_split"] else []

    resume_from, start_step, notes, init_from, narrow_from = None, 0, [], None, None
    latest = tf.train.latest_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    if latest is not None:
        info = read_run_info(run_dir)
        check_run_info(info, run_dir, num_classes, config_network(cfg["model"]))
        if info.get("class_names") != names:
            raise ModelError(f"{run_dir}: checkpoints were trained on classes {info.get('class_names')}, the data "
                             f"has {names}; use another --run")
        resume_from = latest
        start_step = int(latest.rsplit("-", 1)[-1])
        notes.append(f"resuming from {latest} (step {start_step})")
    elif cfg["model"]["init_checkpoint"]:
        source_dir, init_from = resolve_checkpoint(_resolve(cfg["model"]["init_checkpoint"]))
        source_info, network = read_run_info(source_dir), config_network(cfg["model"])
        source_network = run_network(source_info)
        if network["fine_lateral"] and not source_network["fine_lateral"] and source_network["fine_scales"]:
            # a full-map fine layer, narrowed by narrow_fine_layer; measured at this run's input size, the size
            # of its training images
            narrow_from = dict(source_network, input_size=network["input_size"])
            network = dict(network, fine_lateral=0)
        # every layer is a conv, so the weights fit any input size: a second stage may change it
        check_run_info(source_info, source_dir, num_classes,
                       {key: wants for key, wants in network.items() if key != "input_size"})
        if source_network["input_size"] != network["input_size"]:
            notes.append(f"input size {source_network['input_size']} -> {network['input_size']}")
        notes.append(f"starting from the weights of {init_from}"
                     + (f" (its fine layer narrowed to {cfg['model']['fine_lateral_channels']} lateral channels)"
                        if narrow_from else ""))
    elif cfg["model"]["init"] == "pretrained" and not (config.HANDTRACKJS_MODEL_DIR / "weights_manifest.json").exists():
        raise ModelError(f"{config.HANDTRACKJS_MODEL_DIR}: the pretrained handtrack.js model is not there; run "
                         f"`make model`, or train with --init random")
    elif cfg["model"]["init"] == "imagenet" and cfg["model"]["imagenet_weights"]:
        if not Path(cfg["model"]["imagenet_weights"]).is_file():
            raise ModelError(f"{cfg['model']['imagenet_weights']}: ImageNet weights file not found")
    keep_from = keep_network = None
    if keeping:  # the starting weights teach on loss.keep_sources: the same anchors, so the outputs compare
        keep_from, keep_network = _teacher_run(cfg, cfg["model"]["init_checkpoint"], "loss.keep_weight needs "
                                               "model.init_checkpoint", num_classes)
        notes.append(f"keeping the outputs of {keep_from} on {', '.join(cfg['loss']['keep_sources'])} images")
    teach_from = teach_network = None
    if cfg["loss"]["distillation_weight"] > 0 and cfg["loss"]["distillation_checkpoint"]:
        teach_from, teach_network = _teacher_run(cfg, cfg["loss"]["distillation_checkpoint"],
                                                 "loss.distillation_checkpoint needs a run", num_classes)
        notes.append(f"teacher: {teach_from} on {', '.join(cfg['loss']['distillation_sources'])} images")
    return TrainingPlan(cfg, run_dir, names, collapse, train_files, eval_files, resume_from, start_step, notes,
                        init_from, narrow_from, keep_from, keep_network, teach_from, teach_network)


def _teacher_run(cfg: dict, path: str, needs: str, num_classes: int) -> tuple[str, dict]:
    """(checkpoint prefix, network) of a run that teaches this one: its outputs are compared anchor by anchor,
    so it must have this run's input size, anchors and class count."""
    from utils.train.model import check_run_info, config_network, read_run_info, resolve_checkpoint, run_network

    run_dir, prefix = resolve_checkpoint(_resolve(path))
    info = read_run_info(run_dir)
    check_run_info(info, run_dir, num_classes, {})
    teacher, network = run_network(info), config_network(cfg["model"])
    if any(teacher[key] != network[key] for key in ("input_size", "fine_scales")):
        raise ConfigError(f"{run_dir}: {needs} of this run's input size and anchors ({network['input_size']}, fine "
                          f"scales {list(network['fine_scales'])}), it has {teacher['input_size']}, "
                          f"{list(teacher['fine_scales'])}")
    return prefix, teacher


def _write_json(path: Path, data: Any) -> None:
    from utils.common.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def run_training(plan: TrainingPlan, strategy, progress: bool = True,
                 log: Callable[[str], None] = print) -> dict:
    """Train (or resume) to cfg.train.steps with checkpoints, summaries and evaluation. In a multi-worker
    run only the chief writes the run folder; the other workers write to a temporary folder."""
    from utils.train.cluster import is_chief, write_dir

    chief = is_chief(strategy)
    with write_dir(plan.run_dir, strategy, prefix=f"{plan.run_dir.name}-worker-") as out_dir:
        return _train(plan, strategy, out_dir, progress and chief, log)


def _train(plan: TrainingPlan, strategy, out_dir: Path, progress: bool, log: Callable[[str], None]) -> dict:
    import tensorflow as tf
    from tqdm import tqdm

    from utils.common.label_map import write_label_map
    from utils.train.inputs import SsdInput, read_ground_truth
    from utils.train.model import (
        ARCHITECTURE,
        ModelError,
        anchors_for,
        build_ssd_model,
        calibrate_batch_norm,
        config_network,
        freeze_through,
        initialize,
        narrow_fine_layer,
        restore_model,
    )

    cfg, run_dir = plan.cfg, plan.run_dir
    train_cfg = cfg["train"]
    replicas = strategy.num_replicas_in_sync
    if train_cfg["batch_size"] % replicas:
        raise ConfigError(f"train.batch_size {train_cfg['batch_size']} must be a multiple of the "
                          f"{replicas} replicas")
    tf.random.set_seed(train_cfg["seed"])
    num_classes = len(plan.class_names)
    network = config_network(cfg["model"])
    input_size, fine_scales = network["input_size"], network["fine_scales"]
    anchors = anchors_for(input_size, fine_scales)

    distill = cfg["loss"]["distillation_weight"] > 0
    with strategy.scope():
        model = build_ssd_model(num_classes, **network)
        optimizer, schedule = build_optimizer(cfg)
        global_step = optimizer.iterations
        teacher = None
        if plan.teach_from is not None:  # the same anchors: its outputs are the targets as they are
            taught_by = restore_model(plan.teach_from, num_classes, name="teacher", **plan.teach_network)
            taught_by.trainable = False
            teacher = lambda images: taught_by(images, training=False)  # noqa: E731
        elif distill:
            teacher = teacher_on_student_anchors(build_teacher(num_classes), input_size, fine_scales)
        keeper = None
        if plan.keep_from is not None:
            keeper = restore_model(plan.keep_from, num_classes, name="keeper", **plan.keep_network)
            keeper.trainable = False
    if plan.narrow_from is not None:
        log(f"init: the weights of {plan.init_from}, its fine layer to be narrowed")  # once the data is there
    elif plan.init_from is not None:
        try:
            tf.train.Checkpoint(model=model).restore(plan.init_from).expect_partial().assert_existing_objects_matched()
        except (ValueError, AssertionError, tf.errors.OpError) as exc:
            raise ModelError(f"{plan.init_from}: checkpoint does not fit this run's network "
                             f"({str(exc).splitlines()[0]}); check model.init_checkpoint") from exc
        log(f"init: the weights of {plan.init_from}")
    elif plan.resume_from is None:
        log(f"init: {initialize(model, cfg['model']['init'], num_classes, cfg['model']['imagenet_weights'])}")
    frozen = freeze_through(model, train_cfg["freeze_through"])
    if frozen:
        log(f"frozen: {len(frozen)} layers, {frozen[0]} .. {frozen[-1]}")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    chief = out_dir == run_dir
    manager = tf.train.CheckpointManager(checkpoint, str(out_dir), max_to_keep=train_cfg["max_to_keep"],
                                         step_counter=global_step,
                                         checkpoint_interval=train_cfg["checkpoint_interval"])
    if plan.resume_from is not None:
        try:
            with strategy.scope():
                checkpoint.restore(plan.resume_from).assert_existing_objects_matched()
        except (ValueError, AssertionError, tf.errors.OpError) as exc:
            raise ModelError(f"{plan.resume_from}: checkpoint does not fit {ARCHITECTURE} with {num_classes} "
                             f"classes ({str(exc).splitlines()[0]}); use another --run") from exc

    out_dir.mkdir(parents=True, exist_ok=True)
    write_label_map(out_dir / config.LABEL_MAP_NAME, plan.class_names)
    _write_json(out_dir / RUN_INFO_NAME, {"architecture": ARCHITECTURE, "input_size": input_size,
                                          "fine_anchor_scales": list(fine_scales),
                                          "fine_lateral_channels": network["fine_lateral"],
                                          "batch_norm": network["batch_norm"],
                                          "num_classes": num_classes,
                                          "class_names": plan.class_names, "collapse_classes": plan.collapse_classes,
                                          "train_files": [str(f) for f in plan.train_files],
                                          "eval_files": [str(f) for f in plan.eval_files], "config": cfg})

    data = SsdInput(anchors, num_classes, plan.class_names, cfg["augment"], cfg["matcher"]["matched_threshold"],
                    cfg["matcher"]["unmatched_threshold"], plan.collapse_classes, input_size)
    source_weights = dict(zip(cfg["data"]["sources"], cfg["data"]["source_weights"], strict=True))

    def training_images(count: int) -> Iterator:
        """About `count` training images (preprocessed batches), for measuring the network on before step 0."""
        batch = train_cfg["batch_size"]
        return (images for images, _ in data.train_dataset(
            plan.train_files, batch, cfg["data"]["shuffle_buffer"], seed=train_cfg["seed"],
            source_weights=source_weights).take(max(1, count // batch)))

    if plan.resume_from is None and plan.init_from is None and cfg["model"]["batch_norm"]:
        images = calibrate_batch_norm(model, training_images(cfg["model"]["batch_norm_calibration_images"]))
        log(f"batch norm: statistics of {images} training images")
    if plan.narrow_from is not None:
        kept = narrow_fine_layer(restore_model(plan.init_from, num_classes, **plan.narrow_from), model,
                                 training_images(NARROW_IMAGES))
        log(f"fine layer narrowed to {model.fine_lateral} lateral channels: {kept:.1%} of what the stride-16 map "
            f"adds to the merge kept, measured on {NARROW_IMAGES} training images")
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: data.train_dataset(plan.train_files, ctx.get_per_replica_batch_size(train_cfg["batch_size"]),
                                       cfg["data"]["shuffle_buffer"], seed=train_cfg["seed"], input_context=ctx,
                                       cache=cfg["data"]["cache"], source_weights=source_weights,
                                       distill_sources=cfg["loss"]["distillation_sources"] if distill else (),
                                       keep_sources=cfg["loss"]["keep_sources"] if keeper is not None else ()))
    keep = None if keeper is None else (lambda images: keeper(images, training=False))
    trainer = make_trainer(model, optimizer, schedule, dataset, strategy, cfg["loss"], train_cfg, teacher, keep)
    evaluator = None
    if plan.eval_files:
        truth = read_ground_truth(plan.eval_files, plan.collapse_classes)
        evaluator = make_evaluator(model, data.eval_dataset(plan.eval_files, train_cfg["eval_batch_size"]), truth,
                                   anchors, dict(enumerate(plan.class_names, 1)))

    steps = train_cfg["steps"]
    bar = tqdm(total=steps, initial=int(global_step.numpy()), unit="step", desc=f"train {run_dir.name}",
               disable=not progress, dynamic_ncols=True)
    last: dict = {}

    def on_train(output: Mapping) -> None:
        last.update({k: float(v) for k, v in output.items()})
        if not math.isfinite(last["loss/total"]):
            raise TrainingError(f"the loss became {last['loss/total']} at step {int(global_step.numpy())}; "
                                f"lower the learning rate (optimization.learning_rate)")
        bar.update(int(global_step.numpy()) - bar.n)
        bar.set_postfix(loss=f"{last['loss/total']:.3f}", lr=f"{last['learning_rate']:.2g}")

    start = time.monotonic()
    start_step = int(global_step.numpy())
    with open(out_dir / TRAIN_LOG_NAME, "a", buffering=1) as orbit_log, contextlib.redirect_stdout(orbit_log), bar:
        controller = _orbit().Controller(
            strategy=strategy, trainer=trainer, evaluator=evaluator, global_step=global_step,
            steps_per_loop=train_cfg["steps_per_loop"], checkpoint_manager=manager,
            summary_dir=str(out_dir / "train"), eval_summary_dir=str(out_dir / "eval"),
            train_actions=[on_train])
        if train_cfg["eval_interval"] and evaluator is not None:
            controller.train_and_evaluate(train_steps=steps, eval_steps=-1,
                                          eval_interval=train_cfg["eval_interval"])
        else:
            controller.train(steps)
        seconds = time.monotonic() - start
        metrics = None
        if evaluator is not None:
            if not evaluator.last_metrics:  # train_and_evaluate already evaluated at the last step
                controller.evaluate(-1)
            metrics = evaluator.last_metrics
    summary = {"run": run_dir.name, "step": int(global_step.numpy()), "steps_this_session":
               int(global_step.numpy()) - start_step, "train_seconds": round(seconds, 1),
               "checkpoint": manager.latest_checkpoint if chief else None, "final_losses": last}
    if metrics is not None:
        summary["eval"] = {k: metrics[k] for k in ("AP50", "AP", "AR100", "images", "ground_truth_boxes")}
        _write_json(out_dir / EVAL_METRICS_NAME, {"step": summary["step"], **metrics})
    return summary
