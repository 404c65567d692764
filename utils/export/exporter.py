"""Turn an SSD "core" graph into the files of hand_inference_graph/, all with one tensor contract.

A core is a frozen GraphDef with input `preprocessed:0` float [N,S,S,3] (pixels*2/255-1 after a
legacy bilinear resize to S x S: 300 for the hand model, 320 for the gesture model) and outputs
`box_encodings:0` [N,A,4] (Faster R-CNN encodings, scales 10,10,5,5) and
`class_logits:0` [N,A,C+1] (column 0 the background), plus its A corner-form anchors. Both the
converted handtrack.js model and a trained checkpoint are exported through here, so detectors
load either the same way.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from utils.common import config
from utils.common.fileio import atomic_path, atomic_write_bytes, atomic_write_text, sha256_of, sha256_of_files
from utils.runtime.contract import TFLITE_INPUT_NAME, TFLITE_OUTPUTS, preprocess_for_tflite

if TYPE_CHECKING:
    from tensorflow.core.framework.graph_pb2 import GraphDef

BOX_CODER_SCALES = (10.0, 10.0, 5.0, 5.0)  # y, x, h, w: the Faster R-CNN coder of the pipeline
# The original pipeline.config had 1e-8: every anchor then enters NMS, which costs a model with the fine layer's
# 6249 anchors 2.1 ms of its 13.3 ms int8 invoke. At 0.01 the pretrained model's AP@0.5 moves by 0.0001
# (EgoHands CHESS) / 0.0014 (Oxford eval), the every-viewpoint model's not at all (make eval, both splits).
NMS_SCORE_THRESHOLD = 0.01
CORE_INPUT = "preprocessed:0"
CORE_OUTPUTS = ("box_encodings:0", "class_logits:0")


def _tf():
    import tensorflow as tf
    return tf


def core_input_size(core: "GraphDef") -> int:
    """S of a core's `preprocessed` placeholder [N,S,S,3]: the size frames are resized to."""
    name = CORE_INPUT.split(":")[0]
    for node in core.node:
        if node.name == name and node.op == "Placeholder":
            dims = [d.size for d in node.attr["shape"].shape.dim]
            if len(dims) == 4 and dims[1] == dims[2] and dims[1] > 0 and dims[3] == 3:
                return int(dims[1])
            raise ValueError(f"core input {name!r} has shape {dims}; expected [N,S,S,3]")
    raise ValueError(f"core graph has no placeholder {name!r}")


def _anchor_centers(anchors: np.ndarray) -> tuple[np.ndarray, ...]:
    """Corner-form anchors [A,4] -> centre y, centre x, height, width."""
    ymin, xmin, ymax, xmax = (anchors[:, i] for i in range(4))
    ha, wa = ymax - ymin, xmax - xmin
    return ymin + ha / 2, xmin + wa / 2, ha, wa


def decode_boxes(encodings, anchors: np.ndarray):
    """Faster R-CNN decoding of [N,A,4] (ty,tx,th,tw) against corner-form anchors -> corner boxes."""
    tf = _tf()
    yca, xca, ha, wa = _anchor_centers(anchors)
    ty, tx, th, tw = tf.unstack(encodings, axis=-1)
    sy, sx, sh, sw = BOX_CODER_SCALES
    h, w = tf.exp(th / sh) * ha, tf.exp(tw / sw) * wa
    yc, xc = ty / sy * ha + yca, tx / sx * wa + xca
    return tf.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)


def encode_boxes(boxes, anchors: np.ndarray):
    """The inverse of decode_boxes: corner boxes [N,A,4] -> (ty,tx,th,tw) against the anchors."""
    tf = _tf()
    yca, xca, ha, wa = _anchor_centers(anchors)
    y0, x0, y1, x1 = tf.unstack(boxes, axis=-1)
    h, w = tf.maximum(y1 - y0, 1e-8), tf.maximum(x1 - x0, 1e-8)
    sy, sx, sh, sw = BOX_CODER_SCALES
    return tf.stack([((y0 + y1) / 2 - yca) / ha * sy, ((x0 + x1) / 2 - xca) / wa * sx,
                     tf.math.log(h / ha) * sh, tf.math.log(w / wa) * sw], axis=-1)


def postprocess(encodings, logits, anchors: np.ndarray, max_detections: int = config.MAX_DETECTIONS,
                iou_threshold: float = config.NMS_IOU_THRESHOLD) -> dict:
    """Raw predictions -> decoded boxes, sigmoid scores and per-class NMS (the exported graph's and
    the training evaluation's one definition). Classes are label map ids (1-based)."""
    tf = _tf()
    boxes = decode_boxes(encodings, anchors)
    scores = tf.sigmoid(logits)[:, :, 1:]
    nmsed = tf.image.combined_non_max_suppression(
        boxes[:, :, tf.newaxis, :], scores, max_output_size_per_class=max_detections,
        max_total_size=max_detections, iou_threshold=iou_threshold,
        score_threshold=NMS_SCORE_THRESHOLD, clip_boxes=True)  # to the image, as the OD API did
    return {"raw_boxes": boxes, "raw_scores": scores, "boxes": nmsed.nmsed_boxes, "scores": nmsed.nmsed_scores,
            "classes": nmsed.nmsed_classes + 1.0, "count": nmsed.valid_detections}


def legacy_resize_and_normalize(image_uint8, size: int = config.MODEL_INPUT_SIZE):
    """What the original graph did: TF1 bilinear resize (no half-pixel centers), then x*2/255-1."""
    tf = _tf()
    resized = tf.compat.v1.image.resize_bilinear(tf.cast(image_uint8, tf.float32), [size, size],
                                                 align_corners=False, half_pixel_centers=False)
    return (2.0 / 255.0) * resized - 1.0


def build_detection_graph_def(core: "GraphDef", anchors: np.ndarray,
                              max_detections: int = config.MAX_DETECTIONS,
                              iou_threshold: float = config.NMS_IOU_THRESHOLD) -> "GraphDef":
    """image_tensor uint8 [N,H,W,3] -> the contract, with NMS, as one frozen GraphDef.

    Also exposes `raw_detection_boxes` [N,A,4] and `raw_detection_scores` [N,A,C] (before NMS).
    """
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.uint8, [None, None, None, 3], name=config.INPUT_TENSOR)
        preprocessed = legacy_resize_and_normalize(image, core_input_size(core))
        encodings, logits = tf.graph_util.import_graph_def(
            core, input_map={CORE_INPUT: preprocessed}, return_elements=list(CORE_OUTPUTS), name="ssd")
        detections = postprocess(encodings, logits, anchors, max_detections, iou_threshold)
        tf.identity(detections["raw_boxes"], name="raw_detection_boxes")
        tf.identity(detections["raw_scores"], name="raw_detection_scores")
        tf.identity(detections["boxes"], name="detection_boxes")
        tf.identity(detections["scores"], name="detection_scores")
        tf.identity(detections["classes"], name="detection_classes")
        tf.cast(detections["count"], tf.float32, name="num_detections")
    outputs = list(config.OUTPUT_TENSORS) + ["raw_detection_boxes", "raw_detection_scores"]
    return tf.compat.v1.graph_util.extract_sub_graph(graph.as_graph_def(), outputs)


def wrap_graph_def(graph_def: "GraphDef", inputs: Sequence[str], outputs: Sequence[str]):
    """A TF2 concrete function running a frozen GraphDef (how TF2 runs TF1 graphs)."""
    tf = _tf()
    wrapped = tf.compat.v1.wrap_function(
        lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    graph = wrapped.graph
    return wrapped.prune([graph.as_graph_element(n) for n in inputs],
                         [graph.as_graph_element(n) for n in outputs])


def write_saved_model(detection_graph: "GraphDef", path: str | Path) -> None:
    """SavedModel with a `serving_default` signature: image_tensor -> the contract's four outputs."""
    tf = _tf()
    names = list(config.OUTPUT_TENSORS)
    fn = wrap_graph_def(detection_graph, [f"{config.INPUT_TENSOR}:0"], [f"{n}:0" for n in names])

    class DetectionModule(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                                    name=config.INPUT_TENSOR)])
        def serve(self, image_tensor):
            return dict(zip(names, fn(image_tensor), strict=False))

    module = DetectionModule()
    module.graph_fn = fn  # tracked, so the pruned graph is saved with the module
    with atomic_path(path) as tmp:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})


def _postprocess_signature(num_classes: int, max_detections: int, iou_threshold: float) -> str:
    sy, sx, sh, sw = BOX_CODER_SCALES
    attrs = [("max_detections", "i", max_detections), ("max_classes_per_detection", "i", 1),
             # Per-class ("regular") NMS, as the frozen graph does, only where there are classes to keep apart:
             # the fast variant keeps one class per box, which cost a 4-class model 0.15 AP@0.5.
             ("detections_per_class", "i", max_detections),
             ("use_regular_nms", "b", "true" if num_classes > 1 else "false"),
             ("nms_score_threshold", "f", NMS_SCORE_THRESHOLD), ("nms_iou_threshold", "f", iou_threshold),
             ("y_scale", "f", sy), ("x_scale", "f", sx), ("h_scale", "f", sh), ("w_scale", "f", sw),
             ("num_classes", "i", num_classes)]
    return " ".join(['name: "TFLite_Detection_PostProcess"']
                    + [f'attr {{ key: "{k}" value {{ {t}: {v} }} }}' for k, t, v in attrs])


def _center_size(anchors: np.ndarray) -> np.ndarray:
    ymin, xmin, ymax, xmax = anchors.T
    return np.stack([(ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin], 1).astype(np.float32)


def write_tflite_models(core: "GraphDef", anchors: np.ndarray, num_classes: int,
                        fp32_path: str | Path, int8_path: str | Path | None,
                        calibration_images: Callable[[], Iterable[np.ndarray]] | None = None,
                        max_detections: int = config.MAX_DETECTIONS,
                        iou_threshold: float = config.NMS_IOU_THRESHOLD) -> None:
    """TFLite float32 and full-integer int8 models: preprocessed [1,S,S,3] in, the contract out.

    NMS is TFLite's built-in TFLite_Detection_PostProcess op, reached through an
    `experimental_implements` function that only converts from a SavedModel.
    `calibration_images` yields RGB uint8 frames of any size (real hand frames).
    """
    tf = _tf()
    size = core_input_size(core)
    core_fn = wrap_graph_def(core, [CORE_INPUT], list(CORE_OUTPUTS))
    anchors_cs = _center_size(anchors)

    @tf.function(experimental_implements=_postprocess_signature(num_classes, max_detections, iou_threshold))
    def tflite_postprocess(box_encodings, class_predictions, anchor_boxes):
        # Stand-in body: the converter replaces this whole function by the TFLite op.
        zero = tf.constant(0.0, tf.float32)
        return zero, zero, zero, zero

    class TfliteModule(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name=TFLITE_INPUT_NAME)])
        def serve(self, preprocessed):
            encodings, logits = core_fn(preprocessed)
            outputs = tflite_postprocess(encodings, tf.sigmoid(logits), tf.constant(anchors_cs))
            return dict(zip(TFLITE_OUTPUTS, outputs, strict=False))

    module = TfliteModule()
    module.core_fn = core_fn
    work = Path(fp32_path).parent / ".tflite_saved_model.tmp"
    shutil.rmtree(work, ignore_errors=True)
    try:
        tf.saved_model.save(module, str(work), signatures={"serving_default": module.serve})

        def convert(quantize: bool) -> bytes:
            converter = tf.lite.TFLiteConverter.from_saved_model(str(work))
            converter.allow_custom_ops = True
            if quantize:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = lambda: (
                    [preprocess_for_tflite(rgb, size)] for rgb in calibration_images())
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                                       tf.lite.OpsSet.TFLITE_BUILTINS]
            return converter.convert()

        atomic_write_bytes(fp32_path, convert(quantize=False))
        if int8_path is not None:
            if calibration_images is None:
                raise ValueError("int8 TFLite needs calibration images")
            atomic_write_bytes(int8_path, convert(quantize=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def preprocessing_record(input_size: int) -> dict:
    """How frames reach the network: recorded in manifest.json for readers of the model folder
    (the runtime itself reads the size from the TFLite input shape; the graphs resize themselves)."""
    return {"input_size": input_size,
            "resize": "bilinear, TF1 legacy (align_corners=False, half_pixel_centers=False)",
            "normalization": "pixels*2/255-1",
            "tflite_input": f"{TFLITE_INPUT_NAME} float32 [1,{input_size},{input_size},3]"}


def write_manifest(model_dir: Path, source: dict, preprocessing: dict | None = None) -> dict:
    """manifest.json: where the model came from and the sha256 of every file beside it."""
    files = {}
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        if rel != config.MANIFEST_NAME and not rel.startswith("."):
            files[rel] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
    manifest = {"source": source, "contract": {"input": config.INPUT_TENSOR,
                                               "outputs": list(config.OUTPUT_TENSORS)}, "files": files}
    if preprocessing is not None:
        manifest["preprocessing"] = preprocessing
    atomic_write_text(model_dir / config.MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return manifest


def code_fingerprint(paths: Sequence[Path]) -> str:
    """sha256 over source files: a change to the exporter invalidates what it built."""
    return sha256_of_files(paths)


def folder_fingerprint(folder: Path) -> str:
    return sha256_of_files(sorted(p for p in Path(folder).rglob("*") if p.is_file()), root=Path(folder))


def is_up_to_date(model_dir: Path, source: dict, expected_files: Sequence[str]) -> bool:
    """True when model_dir's manifest records this exact source and every file still matches it."""
    try:
        manifest = json.loads((Path(model_dir) / config.MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    files = manifest.get("files", {})
    if manifest.get("source") != source or any(
            not any(f == name or f.startswith(name + "/") for f in files) for name in expected_files):
        return False
    return all((Path(model_dir) / rel).is_file() and sha256_of(Path(model_dir) / rel) == meta["sha256"]
               for rel, meta in files.items())


def export_model(core: "GraphDef", anchors: np.ndarray, class_names: Sequence[str], output_dir: Path,
                 source: dict, calibration_images: Callable[[], Iterable[np.ndarray]] | None,
                 log: Callable[[str], None] = print) -> dict:
    """Write every file of a model folder (hand_inference_graph/, gesture_inference_graph/) into
    output_dir (replacing it) with its manifest. The files and tensor contract are the same for every
    model; only the label map and the input size (read from the core) differ."""
    from utils.common.label_map import write_label_map

    # Built in a temporary folder and swapped in whole: a failed export (say, a corrupt calibration
    # frame) leaves the previous model intact, never a mix of old and new files.
    with atomic_path(output_dir) as work:
        work.mkdir()
        write_label_map(work / config.LABEL_MAP_NAME, class_names)
        log(f"building {config.FROZEN_GRAPH_NAME} (with non-max suppression)")
        detection_graph = build_detection_graph_def(core, anchors)
        atomic_write_bytes(work / config.FROZEN_GRAPH_NAME, detection_graph.SerializeToString())
        log(f"building {config.SAVED_MODEL_NAME}/")
        write_saved_model(detection_graph, work / config.SAVED_MODEL_NAME)
        int8_path = work / config.TFLITE_INT8_NAME if calibration_images is not None else None
        if int8_path is None:
            log(f"skipping {config.TFLITE_INT8_NAME}: no calibration frames (pass --calibration)")
        log(f"building {config.TFLITE_FP32_NAME}" + ("" if int8_path is None
                                                      else f" and {config.TFLITE_INT8_NAME} (calibrating)"))
        write_tflite_models(core, anchors, len(class_names), work / config.TFLITE_FP32_NAME, int8_path,
                            calibration_images)
        manifest = write_manifest(work, source, preprocessing_record(core_input_size(core)))
    return manifest
