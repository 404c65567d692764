"""The browser build of a model folder: hand_inference_graph/ -> web/model/ for web/handtrack.js.

The browser runs the .tflite files the Python detector runs, in LiteRT.js (XNNPack in WebAssembly), with one
change: LiteRT.js sizes its output buffers from the model's static shapes, and the outputs of
TFLite_Detection_PostProcess have none (the op sets them when it runs), so a run writes out of bounds
("memory access out of bounds"). The export cuts that last op off the flatbuffer: the same weights and
quantized kernels give the raw box encodings and scores, and handtrack.js does the op's box decoding and
non-max suppression in JS with the op's own settings and anchors, written to `model.json` with the label
names and the defaults handtrack.js starts from. Also the small HTTP server `make serve-web` and the
Chromium tests use: web/ as the site, the exported model folder under /model/.
"""
from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from utils.common import config
from utils.common.errors import user_error
from utils.common.fileio import atomic_path, sha256_of
from utils.common.label_map import LabelMapError, read_label_map

WEB_DIR = config.ROOT / "web"
WEB_MODEL_DIR = WEB_DIR / "model"
WEB_MODEL_META = "model.json"
# Fastest first, as the Python runtime picks (utils.runtime.detector.MODEL_PREFERENCE).
WEB_MODEL_FILES = (config.TFLITE_INT8_NAME, config.TFLITE_FP32_NAME)
TFLITE_INPUT = "preprocessed"  # utils.runtime.contract.TFLITE_INPUT_NAME, the signature's input
DEFAULT_PORT = 8000
# Files the browser must not cache: a re-export under the same name must reach the page on reload.
_NO_CACHE_SUFFIXES = (".json", ".tflite", ".js", ".html")


POSTPROCESS_OP = b"TFLite_Detection_PostProcess"
RAW_OUTPUTS = ("box_encodings", "class_scores")  # the cut model's outputs, by signature name


def strip_postprocess(tflite: bytes) -> tuple[bytes, dict]:
    """A .tflite without its final TFLite_Detection_PostProcess op, and what that op did.

    Returns the new model (outputs `box_encodings` [1,A,4] and `class_scores` [1,A,C+1], column 0 the
    background) and {options: the op's settings (scales, thresholds, max detections), anchors: [A,4]
    centre-size (ycenter, xcenter, h, w) as the op reads them}."""
    import numpy as np
    from flatbuffers import flexbuffers
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    if len(model.subgraphs) != 1:
        raise ValueError(f"expected one subgraph, found {len(model.subgraphs)}")
    graph = model.subgraphs[0]
    found = [i for i, op in enumerate(graph.operators) if model.operatorCodes[op.opcodeIndex].customCode
             == POSTPROCESS_OP]
    if len(found) != 1 or found[0] != len(graph.operators) - 1:
        raise ValueError(f"expected {POSTPROCESS_OP.decode()} as the last op, found it at {found}")
    op = graph.operators.pop(found[0])
    encodings, scores, anchors = (int(t) for t in op.inputs)
    anchor_tensor = graph.tensors[anchors]
    if anchor_tensor.type != 0:  # TensorType.FLOAT32
        raise ValueError("the postprocess op's anchors are not float32")
    anchor_values = np.frombuffer(bytes(model.buffers[anchor_tensor.buffer].data), "<f4").reshape(-1, 4)
    graph.outputs = np.array([encodings, scores], np.int32)
    for signature in model.signatureDefs:
        signature.outputs = signature.outputs[:2]
        for item, name, index in zip(signature.outputs, RAW_OUTPUTS, (encodings, scores), strict=True):
            item.name, item.tensorIndex = name.encode(), index
    options = flexbuffers.Loads(bytes(op.customOptions))
    stripped = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return stripped, {"options": {k: (float(v) if isinstance(v, float) else int(v)) for k, v in options.items()},
                      "anchors": np.round(anchor_values.astype(np.float64), 8).tolist()}


def web_model_meta(model_dir: Path, files: list[str]) -> dict:
    """model.json's content for the model files of `model_dir` that go to the browser."""
    manifest_path = model_dir / config.MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise user_error(manifest_path, f"no readable manifest ({exc.__class__.__name__})",
                         "run `make model` (or `make export`) to build the model folder") from exc
    try:
        labels = read_label_map(model_dir / config.LABEL_MAP_NAME)
    except (OSError, LabelMapError) as exc:
        raise user_error(model_dir / config.LABEL_MAP_NAME, f"unreadable label map ({exc})",
                         "run `make model` to rebuild the model folder") from exc
    return {
        "source": manifest.get("source", {}),
        "preprocessing": manifest.get("preprocessing", {}),
        "input": TFLITE_INPUT,
        "default": files[0],
        # Which model of the folder each file was cut from (the folder's manifest lists the same sha256).
        "files": {name: {"source_sha256": sha256_of(model_dir / name)} for name in files},
        "labels": {str(k): v for k, v in sorted(labels.items())},
        "scoreThreshold": config.DEFAULT_SCORE_THRESHOLD,
        "maxNumBoxes": config.DEFAULT_NUM_HANDS,
    }


def export_web_model(model_dir: str | Path, output_dir: str | Path = WEB_MODEL_DIR) -> dict:
    """Copy the TFLite models of `model_dir` with their model.json into `output_dir` (replaced whole).

    Whatever `make model` / `make export` built is what the browser gets: a retrained model follows."""
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    files = [name for name in WEB_MODEL_FILES if (model_dir / name).is_file()]
    if not files:
        raise user_error(model_dir, f"no TFLite model ({' or '.join(WEB_MODEL_FILES)})",
                         "run `make model` (or `make export`) first, or pass --model-dir")
    meta = web_model_meta(model_dir, files)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output_dir) as work:  # the old export stays whole until the new one is complete
        work.mkdir()
        for name in files:
            try:
                stripped, postprocess = strip_postprocess((model_dir / name).read_bytes())
            except ValueError as exc:
                raise user_error(model_dir / name, f"not a detector this export knows ({exc})",
                                 "export it with `make model` / `make export`") from exc
            (work / name).write_bytes(stripped)
            meta["files"][name]["postprocess"] = postprocess["options"]
            # One anchor set per model folder: both files come from one core (exporter.write_tflite_models).
            meta.setdefault("anchors", postprocess["anchors"])
        (work / WEB_MODEL_META).write_text(json.dumps(meta) + "\n")
    return meta


class _Handler(http.server.SimpleHTTPRequestHandler):
    """web/ as the site, /model/ from the exported model folder; quiet unless asked; no caching."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
                      ".tflite": "application/octet-stream"}

    def __init__(self, *args, model_dir: Path, verbose: bool, **kwargs):
        self.model_dir, self.verbose = model_dir, verbose
        super().__init__(*args, **kwargs)

    def translate_path(self, path: str) -> str:
        route = path.split("?", 1)[0].split("#", 1)[0]
        if route.startswith("/model/"):
            name = route[len("/model/"):]
            if "/" not in name and name not in ("", ".", ".."):
                return str(self.model_dir / name)
        return super().translate_path(path)

    def end_headers(self) -> None:
        if self.path.split("?", 1)[0].endswith(_NO_CACHE_SUFFIXES):
            self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        if self.verbose:
            super().log_message(format, *args)


def make_server(host: str = "127.0.0.1", port: int = DEFAULT_PORT, web_dir: Path = WEB_DIR,
                model_dir: Path = WEB_MODEL_DIR, verbose: bool = False) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the page (port 0: any free port); `server.server_address` says where."""
    handler = functools.partial(_Handler, directory=str(web_dir), model_dir=Path(model_dir), verbose=verbose)
    return http.server.ThreadingHTTPServer((host, port), handler)


def check_site(web_dir: Path = WEB_DIR, model_dir: Path = WEB_MODEL_DIR) -> None:
    """Refuse (UserError) a site that `make web` has not built: no npm packages or no exported model."""
    if not (web_dir / "node_modules" / "@litertjs" / "core").is_dir():
        raise user_error(web_dir / "node_modules", "the npm packages are not installed", "run `make web`")
    if not (Path(model_dir) / WEB_MODEL_META).is_file():
        raise user_error(Path(model_dir) / WEB_MODEL_META, "no exported model", "run `make web`")


@contextmanager
def serving(model_dir: Path = WEB_MODEL_DIR, web_dir: Path = WEB_DIR) -> Iterator[str]:
    """Serve the site on a free localhost port in a thread; yields its base URL."""
    server = make_server(port=0, web_dir=web_dir, model_dir=model_dir)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}/"
    finally:
        server.shutdown()
        server.server_close()
