"""Rebuild handtrack.js's pretrained models as frozen TF graphs, cut into the exporter's "core".

- The EgoHands SSDLite-MobileNetV2 (old TF.js 0.x format): a GraphDef whose weight Const nodes carry
  no values, plus `weights_manifest.json` listing weight groups whose binary shards, concatenated,
  hold the values in manifest order. Filling the Consts back in gives an ordinary frozen TF1 graph.
- The 7-class gesture model (TF.js graph-model format, a TF2 OD API SSD FPNLite): `model.json` holds
  the nodes as JSON and the same kind of weight manifest (weights possibly float16/uint8-quantized);
  the converter's fused ops are split back into standard TF ops.
"""
from __future__ import annotations

import json
import re
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
LEGACY_INPUT_SIZE = 300

# TF.js graph-model format (the TF2 OD API SSD FPNLite gesture model in the same package).
TFJS_GRAPH_MODEL_FILE = "model.json"
_OD_MAP = "StatefulPartitionedCall/map"
_OD_PREPROCESSOR = f"{_OD_MAP}/while/body/_410/map/while/Preprocessor"
OD_PREPROCESSED_NODE = f"{_OD_MAP}/TensorArrayV2Stack/TensorListStack"  # float [N,S,S,3], after the loop
OD_RESIZE_NODE = f"{_OD_PREPROCESSOR}/ResizeImage/resize/ResizeBilinear"
OD_RESIZE_SIZE_CONST = f"{_OD_PREPROCESSOR}/ResizeImage/stack"           # [S, S]
OD_SCALE_CONST = f"{_OD_PREPROCESSOR}/mul/x"                             # 2/255
OD_OFFSET_CONST = f"{_OD_PREPROCESSOR}/sub/y"                            # 1
OD_BOX_ENCODINGS_NODE = "StatefulPartitionedCall/concat"                 # [N,A,4] (ty,tx,th,tw)
OD_CLASS_LOGITS_NODE = "StatefulPartitionedCall/concat_1"                # [N,A,C+1], column 0 background
OD_ANCHOR_PREFIX = "StatefulPartitionedCall/Postprocessor/Decode/get_center_coordinates_and_sizes"
OD_ANCHOR_TERMS = ("add", "add_1", "sub_1", "sub")                       # ycenter, xcenter, height, width

_DTYPES = {"float32": np.float32, "int32": np.int32, "float16": np.float16, "uint8": np.uint8,
           "uint16": np.uint16}


class TfjsModelError(UserError):
    """A TF.js model folder that cannot be converted."""


def _dequantize(raw: bytes, offset: int, count: int, spec: dict, where: Path) -> tuple[np.ndarray, int]:
    """One weight from the blob at offset -> (float/int array, bytes used). TF.js graph models may
    store float weights as float16 or as uint8/uint16 with `value = q * scale + min`."""
    quant = spec.get("quantization")
    dtype = _DTYPES.get(quant["dtype"] if quant else spec["dtype"])
    if dtype is None:
        raise TfjsModelError(f"{where}: unsupported dtype {(quant or spec)['dtype']} of {spec['name']}")
    nbytes = count * np.dtype(dtype).itemsize
    if offset + nbytes > len(raw):
        raise TfjsModelError(f"{where}: weight shards end before {spec['name']} (truncated?)")
    values = np.frombuffer(raw, dtype, count, offset)
    if quant is None:
        return values, nbytes
    if quant["dtype"] == "float16":
        return values.astype(np.float32), nbytes
    return (values.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])), nbytes


def read_weight_groups(model_dir: str | Path, groups: list[dict], where: Path) -> dict[str, np.ndarray]:
    """name -> array, sliced (and dequantized) from the concatenated shards of every weight group."""
    model_dir = Path(model_dir)
    weights: dict[str, np.ndarray] = {}
    for group in groups:
        try:
            blob = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        except OSError as exc:
            raise TfjsModelError(f"{model_dir}: missing weight shard ({exc})") from exc
        offset = 0
        for spec in group["weights"]:
            count = int(np.prod(spec["shape"], dtype=np.int64))
            values, nbytes = _dequantize(blob, offset, count, spec, where)
            weights[spec["name"]] = values.reshape(spec["shape"])
            offset += nbytes
        if offset != len(blob):
            raise TfjsModelError(f"{model_dir}: {len(blob) - offset} unexpected bytes after the last weight")
    return weights


def read_tfjs_weights(model_dir: str | Path) -> dict[str, np.ndarray]:
    """name -> array for a TF.js 0.x model (weights_manifest.json beside tensorflowjs_model.pb)."""
    model_dir = Path(model_dir)
    manifest_path = model_dir / TFJS_MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise TfjsModelError(f"{manifest_path}: cannot read the TF.js weights manifest ({exc})") from exc
    return read_weight_groups(model_dir, manifest, manifest_path)


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


def _cut_core(graph_def: "GraphDef", input_tensor: str, size: int, encodings_tensor: str, logits_tensor: str,
              num_anchors: int) -> "GraphDef":
    """A GraphDef with input `preprocessed:0` float [N,size,size,3] (fed where `input_tensor` was) and
    outputs `box_encodings:0` [N,A,4] and `class_logits:0` [N,A,C+1]: the exporter's core."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        preprocessed = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3], name="preprocessed")
        encodings, logits = tf.graph_util.import_graph_def(
            graph_def, input_map={input_tensor: preprocessed},
            return_elements=[encodings_tensor, logits_tensor], name="ssd")
        batch = tf.shape(preprocessed)[0]
        tf.reshape(encodings, tf.stack([batch, num_anchors, 4]), name="box_encodings")
        tf.identity(logits, name="class_logits")
    core = tf.compat.v1.graph_util.extract_sub_graph(graph.as_graph_def(), ["box_encodings", "class_logits"])
    _two_input_addn_to_add(core)
    return core


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
    core = _cut_core(graph_def, f"{PREPROCESSED_NODE}:0", LEGACY_INPUT_SIZE, f"{BOX_ENCODINGS_NODE}:0",
                     f"{CLASS_LOGITS_NODE}:0", anchors.shape[0])
    return core, anchors.astype(np.float32)


# --- TF.js graph-model format (model.json): the TF2 Object Detection API SSD FPNLite gesture model ---

def read_graph_model_json(model_dir: str | Path) -> dict:
    path = Path(model_dir) / TFJS_GRAPH_MODEL_FILE
    try:
        model = json.loads(path.read_text())
        model["modelTopology"]["node"], model["weightsManifest"]  # noqa: B018 - the keys it must have
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TfjsModelError(f"{path}: not a readable TF.js graph model ({exc.__class__.__name__}: {exc})") from exc
    return model


def load_tfjs_graph_model(model_dir: str | Path) -> "GraphDef":
    """A TF.js graph model (model.json + shards) as a frozen TF GraphDef of standard TF ops.

    The weights are filled into their Const nodes (dequantized when stored as float16/uint8) and
    the converter's fused ops (_FusedConv2D, FusedDepthwiseConv2dNative) split back into
    convolution + BiasAdd + activation, which TensorFlow and the TFLite converter both know.
    """
    import tensorflow as tf
    from google.protobuf import json_format

    model_dir = Path(model_dir)
    model = read_graph_model_json(model_dir)
    topology = model["modelTopology"]
    graph_def = tf.compat.v1.GraphDef()
    try:
        json_format.ParseDict({"node": topology["node"], "versions": topology.get("versions", {})}, graph_def)
    except json_format.ParseError as exc:
        raise TfjsModelError(f"{model_dir / TFJS_GRAPH_MODEL_FILE}: graph nodes do not parse ({exc})") from exc
    if topology.get("library", {}).get("function"):
        raise TfjsModelError(f"{model_dir}: graph models with a function library are not supported")
    weights = read_weight_groups(model_dir, model["weightsManifest"], model_dir / TFJS_GRAPH_MODEL_FILE)
    for node in graph_def.node:
        if node.op == "Const" and node.name in weights:
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights.pop(node.name)))
    if weights:
        raise TfjsModelError(f"{model_dir}: weights with no Const node in the graph: {sorted(weights)[:3]}")
    split_fused_ops(graph_def)
    return graph_def


_UNFUSED_OP = {"_FusedConv2D": "Conv2D", "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative"}
_CONV_ATTRS = {"Conv2D": ("T", "strides", "padding", "data_format", "dilations", "explicit_paddings",
                          "use_cudnn_on_gpu"),
               "DepthwiseConv2dNative": ("T", "strides", "padding", "data_format", "dilations", "explicit_paddings")}
_ACTIVATIONS = ("Relu", "Relu6", "Elu", "Selu", "Sigmoid", "Tanh")


def split_fused_ops(graph_def: "GraphDef") -> None:
    """Rewrite every fused convolution `name` = act(conv(x, w) + b) as `name/conv`, `name/bias_add`
    and `name` (the activation, or the BiasAdd when there is none), so consumers stay wired."""
    new_nodes = []
    for node in graph_def.node:
        if node.op not in _UNFUSED_OP:
            new_nodes.append(node)
            continue
        fused = [op.decode() for op in node.attr["fused_ops"].list.s]
        data, control = [i for i in node.input if not i.startswith("^")], [i for i in node.input if i.startswith("^")]
        if not fused or fused[0] != "BiasAdd" or len(fused) > 2 or (len(fused) == 2 and fused[1] not in _ACTIVATIONS) \
                or len(data) != 3:
            raise TfjsModelError(f"fused op {node.name!r} ({node.op}: {fused}) is not conv + BiasAdd [+ activation]")
        conv_op = _UNFUSED_OP[node.op]
        conv = type(node)(name=f"{node.name}/conv", op=conv_op, input=data[:2] + control, device=node.device)
        for key in _CONV_ATTRS[conv_op]:
            if key in node.attr:
                conv.attr[key].CopyFrom(node.attr[key])
        last = node.name if len(fused) == 1 else f"{node.name}/bias_add"
        bias = type(node)(name=last, op="BiasAdd", input=[conv.name, data[2]], device=node.device)
        bias.attr["T"].CopyFrom(node.attr["T"])
        bias.attr["data_format"].CopyFrom(node.attr["data_format"])
        new_nodes += [conv, bias]
        if len(fused) == 2:
            act = type(node)(name=node.name, op=fused[1], input=[bias.name], device=node.device)
            act.attr["T"].CopyFrom(node.attr["T"])
            new_nodes.append(act)
    del graph_def.node[:]
    graph_def.node.extend(new_nodes)


def _const_value(nodes: dict, name: str) -> np.ndarray:
    import tensorflow as tf

    if name not in nodes or nodes[name].op != "Const":
        raise TfjsModelError(f"TF.js graph has no constant {name!r}: not a TF2 Object Detection API SSD")
    return tf.make_ndarray(nodes[name].attr["value"].tensor)


def core_graph_def_from_od_api(graph_def: "GraphDef") -> tuple["GraphDef", np.ndarray]:
    """Cut a TF2 Object Detection API SSD (as exported, then converted to a TF.js graph model) at
    its preprocessed image and raw head outputs; returns (core, corner-form anchors [A,4]).

    The graph's own preprocessing (a while_loop: x*2/255-1, then a legacy bilinear resize to a fixed
    square) and its post-processing are dropped: the exporter rebuilds both the same way. Both are
    checked here so a model preprocessed any other way is refused rather than silently mis-fed.
    """
    nodes = {n.name: n for n in graph_def.node}
    for name in (OD_PREPROCESSED_NODE, OD_BOX_ENCODINGS_NODE, OD_CLASS_LOGITS_NODE, OD_RESIZE_NODE):
        if name not in nodes:
            raise TfjsModelError(f"TF.js graph has no node {name!r}: not a TF2 Object Detection API SSD")
    resize = nodes[OD_RESIZE_NODE]
    scale, offset = float(_const_value(nodes, OD_SCALE_CONST)), float(_const_value(nodes, OD_OFFSET_CONST))
    if (resize.op != "ResizeBilinear" or resize.attr["align_corners"].b or resize.attr["half_pixel_centers"].b
            or not np.isclose(scale, 2.0 / 255.0) or not np.isclose(offset, 1.0)):
        raise TfjsModelError("TF.js graph preprocesses other than x*2/255-1 + legacy bilinear resize: "
                             "the exporter cannot reproduce it")
    height, width = (int(v) for v in _const_value(nodes, OD_RESIZE_SIZE_CONST))
    if height != width:
        raise TfjsModelError(f"TF.js graph resizes to {height}x{width}; only square inputs are supported")
    # The box decoder's anchor terms were constant-folded: centres and sizes of every anchor.
    yc, xc, h, w = (_const_value(nodes, f"{OD_ANCHOR_PREFIX}/{n}").astype(np.float32) for n in OD_ANCHOR_TERMS)
    anchors = np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=1)
    core = _cut_core(graph_def, f"{OD_PREPROCESSED_NODE}:0", height, f"{OD_BOX_ENCODINGS_NODE}:0",
                     f"{OD_CLASS_LOGITS_NODE}:0", anchors.shape[0])
    return core, anchors


def load_tfjs_core(model_dir: str | Path) -> tuple["GraphDef", np.ndarray]:
    """(core, anchors) from either TF.js format, told apart by the files in `model_dir`."""
    model_dir = Path(model_dir)
    if (model_dir / TFJS_GRAPH_MODEL_FILE).exists():
        return core_graph_def_from_od_api(load_tfjs_graph_model(model_dir))
    return core_graph_def_from_tfjs(load_tfjs_graph_def(model_dir))


_LABEL_MAP_JS_RE = re.compile(r"const\s+labelMap\s*=\s*\{([^}]*)\}", re.S)
_LABEL_ENTRY_RE = re.compile(r"(\d+)\s*:\s*[\"']([^\"']+)[\"']")


def read_js_label_map(index_js: str | Path) -> list[str]:
    """Class names in id order from handtrack.js's `src/index.js` (`const labelMap = {1: "open", ...}`)."""
    index_js = Path(index_js)
    try:
        match = _LABEL_MAP_JS_RE.search(index_js.read_text())
    except OSError as exc:
        raise TfjsModelError(f"{index_js}: cannot read it ({exc}); run fetch_pretrained.py") from exc
    entries = {int(i): name for i, name in _LABEL_ENTRY_RE.findall(match.group(1))} if match else {}
    if not entries or sorted(entries) != list(range(1, len(entries) + 1)):
        raise TfjsModelError(f"{index_js}: no labelMap with ids 1..N found")
    return [entries[i] for i in range(1, len(entries) + 1)]


def _two_input_addn_to_add(graph_def: "GraphDef") -> None:
    """Rewrite the residual AddN(a, b) nodes as Add: same sums, but TFLite's ADD_N has no int8
    kernel and no XNNPACK support, so every AddN split the model into float islands."""
    for node in graph_def.node:
        if node.op == "AddN" and len(node.input) == 2:
            node.op = "AddV2"
            del node.attr["N"]
