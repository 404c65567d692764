"""Training input: TFRecords -> augmented SxS images (S = model.input_size) + SSD targets (tf.data, TFM ops).

Records are decoded by tf-models-official's TfExampleDecoder (the Object Detection API keys that
generate_tfrecord.py writes). Augmentation uses its box-aware ops: horizontal flip (boxes, and
left/right class names swapped), the SSD-style random crop, colour jitter. Images are then resized
exactly as the exported models resize them (TF1 legacy bilinear, x*2/255-1), and every anchor is
labelled by AnchorLabeler: IoU argmax matching with force-match, Faster R-CNN coder (10,10,5,5).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from utils.common.errors import UserError
from utils.data.tfrecord import IMAGE_SOURCE as SOURCE_KEY  # each image's dataset; old records lack it
from utils.export.exporter import BOX_CODER_SCALES
from utils.train.model import INPUT_SIZE

# Target keys of one example (the model's outputs are compared with these in the loss).
CLS_TARGETS = "cls_targets"   # int32 [A]: 1..C matched class, 0 background (unmatched)
BOX_TARGETS = "box_targets"   # float32 [A,4]: encoded (ty,tx,th,tw)
CLS_WEIGHTS = "cls_weights"   # float32 [A]: 0 for ignored anchors
BOX_WEIGHTS = "box_weights"   # float32 [A]: 1 for matched anchors
DISTILL_MASK = "distill_mask"  # float32 []: 1 where the teacher's outputs are a target (distillation)
KEEP_MASK = "keep_mask"  # float32 []: 1 where the starting weights' outputs are a target (loss.keep_sources)


class DataError(UserError):
    """Missing or empty TFRecords, or a label map that does not fit."""


def flip_class_map(class_names: Sequence[str]) -> list[int]:
    """Label id -> label id after a horizontal flip: 'myleft' <-> 'myright' etc.; index 0 = background."""
    ids = {name: i for i, name in enumerate(class_names, 1)}
    mapping = [0]
    for i, name in enumerate(class_names, 1):
        swapped = name.replace("left", "\0").replace("right", "left").replace("\0", "right")
        mapping.append(ids.get(swapped, i))
    return mapping


def count_records(files: Sequence[str | Path], limit: int | None = None) -> int:
    """Examples in the record files (stops at `limit`)."""
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset([str(f) for f in files])
    if limit is not None:
        dataset = dataset.take(limit)
    try:
        return int(dataset.reduce(np.int64(0), lambda n, _: n + 1).numpy())
    except tf.errors.OpError as exc:
        raise DataError(f"{files[0]}: not a readable TFRecord file ({exc.message.splitlines()[0]}); "
                        f"regenerate it with generate_tfrecord.py") from exc


def split_files(data_dir: str | Path, split: str) -> list[Path]:
    """The split's record files; DataError (what to run) when there are none or they hold nothing."""
    from utils.data.tfrecord import record_files

    files = record_files(data_dir, split)
    if not files:
        raise DataError(f"{Path(data_dir) / (split + '.record')}: not found; run `make data` "
                        f"(egohands_dataset_clean.py + generate_tfrecord.py) or pass --data-dir")
    if count_records(files, limit=1) == 0:
        raise DataError(f"{files[0]}: the {split!r} split holds no examples; choose videos for it when "
                        f"running egohands_dataset_clean.py, or pick another split")
    return files


def record_source(serialized):
    """The dataset an example came from (SOURCE_KEY), '' for records written before sources existed."""
    import tensorflow as tf

    spec = {SOURCE_KEY: tf.io.FixedLenFeature([], tf.string, default_value="")}
    return tf.io.parse_single_example(serialized, spec)[SOURCE_KEY]


def count_sources(files: Sequence[str | Path]) -> dict[str, int]:
    """Examples per source in the record files (parses only the source field)."""
    import tensorflow as tf

    sources = tf.data.TFRecordDataset([str(f) for f in files]).map(record_source, num_parallel_calls=tf.data.AUTOTUNE)
    counts: dict[str, int] = {}
    for batch in sources.batch(4096):
        for name in batch.numpy():
            counts[name.decode("utf-8")] = counts.get(name.decode("utf-8"), 0) + 1
    return counts


def exact_jpeg_decoder():
    """TfExampleDecoder whose JPEG decoding is bit-identical to OpenCV's (what the detectors see).

    tf.io.decode_image's default fast integer IDCT differs from cv2.imdecode by ~1 grey level per
    pixel (up to 19), which moved the pretrained model's CHESS AP@0.5 from 0.989 to 0.999.
    """
    import tensorflow as tf
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

    class ExactJpegDecoder(TfExampleDecoder):
        def _decode_image(self, parsed_tensors):
            encoded = parsed_tensors["image/encoded"]
            image = tf.cond(tf.io.is_jpeg(encoded),
                            lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
                            lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
            image.set_shape([None, None, 3])
            return image

    return ExactJpegDecoder(include_mask=False, regenerate_source_id=False)


class SsdInput:
    """Builds the training and evaluation datasets for one anchor set and class mapping."""

    def __init__(self, anchors: np.ndarray, num_classes: int, class_names: Sequence[str],
                 augment: Mapping[str, Any], matched_threshold: float = 0.5, unmatched_threshold: float = 0.5,
                 collapse_classes: bool = False, input_size: int = INPUT_SIZE):
        self.anchors = np.asarray(anchors, np.float32)
        self.num_classes = num_classes
        self.flip_map = np.asarray(flip_class_map(class_names), np.int64)
        self.augment = dict(augment)
        self.matched_threshold, self.unmatched_threshold = matched_threshold, unmatched_threshold
        self.collapse_classes = collapse_classes  # 1-class training on multi-class records
        self.input_size = input_size

    # -- per example ------------------------------------------------------------------------------

    def decode(self, serialized):
        import tensorflow as tf

        decoded = exact_jpeg_decoder().decode(serialized)
        classes = decoded["groundtruth_classes"]
        if self.collapse_classes:
            classes = tf.ones_like(classes)
        return decoded["image"], decoded["groundtruth_boxes"], classes

    def random_augment(self, image, boxes, classes, seed: int | None = None):
        """Horizontal flip, SSD random crop, colour jitter (all optional, see the config's `augment`)."""
        import tensorflow as tf
        from official.vision.ops import box_ops, preprocess_ops

        aug = self.augment
        if aug.get("horizontal_flip", 0) > 0:
            flip = tf.random.uniform([], seed=seed) < aug["horizontal_flip"]
            image = tf.cond(flip, lambda: preprocess_ops.horizontal_flip_image(image), lambda: image)
            boxes = tf.cond(flip, lambda: box_ops.horizontal_flip_boxes(boxes), lambda: boxes)
            classes = tf.cond(flip, lambda: tf.gather(self.flip_map, classes), lambda: classes)
        if aug.get("random_crop", False):
            low, high = aug.get("crop_aspect_ratio", (0.5, 2.0))
            image, boxes, classes = preprocess_ops.random_crop(
                image, boxes, classes, min_scale=aug.get("crop_min_scale", 0.3),
                aspect_ratio_range=(low, high), seed=seed)
        jitter = [aug.get(k, 0.0) for k in ("brightness", "contrast", "saturation")]
        if any(jitter):
            image = preprocess_ops.color_jitter(image, *jitter, seed=seed)
        return image, boxes, classes

    def resize(self, image):
        """What every exported model does: TF1 legacy bilinear resize to the input size, then x*2/255-1."""
        from utils.export.exporter import legacy_resize_and_normalize

        return legacy_resize_and_normalize(image[None], self.input_size)[0]

    def assign_targets(self, boxes, classes) -> dict:
        """Anchor targets for one image's boxes ([N,4] normalized yxyx) and label ids [N]."""
        import tensorflow as tf
        from official.vision.ops.anchor import AnchorLabeler

        labeler = AnchorLabeler(self.matched_threshold, self.unmatched_threshold,
                                box_coder_weights=list(BOX_CODER_SCALES))
        count = len(self.anchors)
        cls, box, _, cls_weights, box_weights = labeler.label_anchors(
            {"all": tf.constant(self.anchors.reshape(count, 1, 4))}, tf.cast(boxes, tf.float32),
            tf.cast(classes, tf.int32)[:, None])
        cls = tf.reshape(cls["all"], [count])
        return {CLS_TARGETS: tf.maximum(cls, 0),  # -1 (unmatched) -> 0 background
                BOX_TARGETS: tf.reshape(box["all"], [count, 4]),
                CLS_WEIGHTS: tf.reshape(cls_weights, [count]), BOX_WEIGHTS: tf.reshape(box_weights, [count])}

    # -- datasets ---------------------------------------------------------------------------------

    def train_dataset(self, files: Sequence[str | Path], batch_size: int, shuffle_buffer: int = 4096,
                      seed: int | None = None, input_context=None, cache: bool = False,
                      source_weights: Mapping[str, float] | None = None, distill_sources: Sequence[str] = (),
                      keep_sources: Sequence[str] = ()):
        """Endless, shuffled, augmented batches of (images [B,S,S,3], targets).

        `source_weights` ({source: weight}) draws each example from one source with that probability,
        whatever the sources' sizes (a small egocentric set is not drowned by a large third-person one).
        `distill_sources` adds DISTILL_MASK to the targets: 1 for examples of those sources; `keep_sources`
        adds KEEP_MASK the same way.
        """
        import tensorflow as tf

        # Each worker (input pipeline) reads its own share: whole files when there are enough of them,
        # else every n-th record (1 file, 2 workers: records 0,2,4.. and 1,3,5..).
        pipelines = input_context.num_input_pipelines if input_context is not None else 1
        dataset = tf.data.Dataset.from_tensor_slices([str(f) for f in files])
        by_file = pipelines > 1 and len(files) >= pipelines
        if by_file:
            dataset = dataset.shard(pipelines, input_context.input_pipeline_id)
        dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=max(1, min(len(files), 4)),
                                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if pipelines > 1 and not by_file:
            dataset = dataset.shard(pipelines, input_context.input_pipeline_id)
        if cache:  # raw bytes only: decoded frames would not fit in memory for the full dataset
            dataset = dataset.cache()
        if source_weights:
            names = sorted(source_weights)
            streams = [dataset.filter(lambda s, name=name: tf.equal(record_source(s), name))
                       .shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat() for name in names]
            total = float(sum(source_weights.values()))
            dataset = tf.data.Dataset.sample_from_datasets(
                streams, weights=[source_weights[n] / total for n in names], seed=seed)
        else:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
        masks = {key: tf.constant(list(sources), tf.string)
                 for key, sources in ((DISTILL_MASK, distill_sources), (KEEP_MASK, keep_sources)) if sources}

        def prepare(serialized):
            image, boxes, classes = self.decode(serialized)
            image, boxes, classes = self.random_augment(image, boxes, classes)
            targets = self.assign_targets(boxes, classes)
            for key, sources in masks.items():
                targets[key] = tf.cast(tf.reduce_any(tf.equal(record_source(serialized), sources)), tf.float32)
            return self.resize(image), targets

        dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def eval_dataset(self, files: Sequence[str | Path], batch_size: int):
        """Un-augmented images in record order, batched (the last batch may be smaller)."""
        import tensorflow as tf

        dataset = tf.data.TFRecordDataset([str(f) for f in files])
        dataset = dataset.map(lambda s: self.resize(self.decode(s)[0]), num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def read_ground_truth(files: Sequence[str | Path], collapse_classes: bool = False) -> list:
    """ImageAnnotations (pixel boxes, label ids) of every record, in record order."""
    from utils.common.boxes import normalized_to_pixels
    from utils.data.tfrecord import CLASS_LABEL, IMAGE_HEIGHT, IMAGE_WIDTH, example_boxes, read_examples
    from utils.evaluation.coco import ImageAnnotations

    truth = []
    for parsed in read_examples([str(f) for f in files]):
        width, height = parsed[IMAGE_WIDTH], parsed[IMAGE_HEIGHT]
        boxes = normalized_to_pixels(example_boxes(parsed), width, height)
        labels = np.asarray(parsed[CLASS_LABEL], np.int64)
        truth.append(ImageAnnotations(width, height, boxes, np.ones_like(labels) if collapse_classes else labels))
    return truth
