"""Rebuild the pretrained EgoHands SSDLite-MobileNetV2 from handtrack.js's old TF.js format.

The TF.js 0.x format is a GraphDef whose weight Const nodes carry no values, plus
`weights_manifest.json` listing weight groups whose binary shards, concatenated, hold the values
in manifest order. Filling the Consts back in gives an ordinary frozen TF1 graph.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from utils.common.errors import UserError

if TYPE_CHECKING:  # TensorFlow is imported lazily: nothing heavy at import time.
    from tensorflow.core.framework.graph_pb2 import GraphDef

TFJS_GRAPH_FILE = "tensorflowjs_model.pb"
TFJS_MANIFEST_FILE = "weights_manifest.json"

# Tensors of the handtrack.js graph (see DESIGN.md).
PREPROCESSED_NODE = "Preprocessor/sub"     # float [N,300,300,3] = resized * 2/255 - 1
BOX_ENCODINGS_NODE = "concat_1"            # [N,1917,1,4] Faster R-CNN encodings (ty,tx,th,tw)
CLASS_LOGITS_NODE = "concat"               # [N,1917,2] logits (background, hand)
ANCHORS_NODE = "Postprocessor/ExpandDims"  # Const [1,1917,4] corner-form anchors

_DTYPES = {"float32": np.float32, "int32": np.int32}


class TfjsModelError(UserError):
    """A TF.js model folder that cannot be converted."""


def read_tfjs_weights(model_dir: str | Path) -> dict[str, np.ndarray]:
    """name -> array, sliced from the concatenated shards of every manifest group."""
    model_dir = Path(model_dir)
    manifest_path = model_dir / TFJS_MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise TfjsModelError(f"{manifest_path}: cannot read the TF.js weights manifest ({exc})") from exc
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        try:
            blob = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        except OSError as exc:
            raise TfjsModelError(f"{model_dir}: missing weight shard ({exc})") from exc
        offset = 0
        for spec in group["weights"]:
            dtype = _DTYPES.get(spec["dtype"])
            if dtype is None:
                raise TfjsModelError(f"{manifest_path}: unsupported dtype {spec['dtype']} of {spec['name']}")
            count = int(np.prod(spec["shape"], dtype=np.int64))
            nbytes = count * np.dtype(dtype).itemsize
            if offset + nbytes > len(blob):
                raise TfjsModelError(f"{model_dir}: weight shards end before {spec['name']} (truncated?)")
            weights[spec["name"]] = np.frombuffer(blob, dtype, count, offset).reshape(spec["shape"])
            offset += nbytes
        if offset != len(blob):
            raise TfjsModelError(f"{model_dir}: {len(blob) - offset} unexpected bytes after the last weight")
    return weights


def load_tfjs_graph_def(model_dir: str | Path) -> "GraphDef":
    """The TF.js graph with every weight Const filled in: a frozen TF1 GraphDef."""
    import tensorflow as tf

    model_dir = Path(model_dir)
    graph_path = model_dir / TFJS_GRAPH_FILE
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(graph_path.read_bytes())
    except (OSError, Exception) as exc:  # protobuf raises DecodeError, a bare Exception subclass
        raise TfjsModelError(f"{graph_path}: not a readable TF.js GraphDef ({exc})") from exc
    weights = read_tfjs_weights(model_dir)
    for node in graph_def.node:
        if node.op != "Const" or node.attr["value"].tensor.tensor_content or node.name not in weights:
            continue
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights.pop(node.name)))
    if weights:
        raise TfjsModelError(f"{model_dir}: weights with no Const node in the graph: {sorted(weights)[:3]}")
    return graph_def


def core_graph_def_from_tfjs(graph_def: "GraphDef") -> tuple["GraphDef", np.ndarray]:
    """Cut the network out of the TF.js graph: preprocessed image in, raw predictions out.

    Returns a GraphDef with input `preprocessed:0` float [N,300,300,3] and outputs
    `box_encodings:0` [N,1917,4] and `class_logits:0` [N,1917,2], and the corner-form anchors
    [1917,4] (ymin,xmin,ymax,xmax). The TF1 while_loop that resized images is dropped: the
    exporters do the same legacy resize without it, which also lets TFLite convert the graph.
    """
    import tensorflow as tf

    nodes = {n.name: n for n in graph_def.node}
    for name in (PREPROCESSED_NODE, BOX_ENCODINGS_NODE, CLASS_LOGITS_NODE, ANCHORS_NODE):
        if name not in nodes:
            raise TfjsModelError(f"TF.js graph has no node {name!r}: not the handtrack.js SSDLite model")
    anchors = tf.make_ndarray(nodes[ANCHORS_NODE].attr["value"].tensor).reshape(-1, 4)

    graph = tf.Graph()
    with graph.as_default():
        preprocessed = tf.compat.v1.placeholder(tf.float32, [None, 300, 300, 3], name="preprocessed")
        encodings, logits = tf.graph_util.import_graph_def(
            graph_def, input_map={f"{PREPROCESSED_NODE}:0": preprocessed},
            return_elements=[f"{BOX_ENCODINGS_NODE}:0", f"{CLASS_LOGITS_NODE}:0"], name="ssd")
        batch = tf.shape(preprocessed)[0]
        tf.reshape(encodings, tf.stack([batch, anchors.shape[0], 4]), name="box_encodings")
        tf.identity(logits, name="class_logits")
    core = tf.compat.v1.graph_util.extract_sub_graph(graph.as_graph_def(), ["box_encodings", "class_logits"])
    _two_input_addn_to_add(core)
    return core, anchors.astype(np.float32)


def _two_input_addn_to_add(graph_def: "GraphDef") -> None:
    """Rewrite the residual AddN(a, b) nodes as Add: same sums, but TFLite's ADD_N has no int8
    kernel and no XNNPACK support, so every AddN split the model into float islands."""
    for node in graph_def.node:
        if node.op == "AddN" and len(node.input) == 2:
            node.op = "AddV2"
            del node.attr["N"]
