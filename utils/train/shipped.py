"""Shipped weights: a trained model's weights alone, small enough to commit (model-checkpoint/shipped/<name>/).

A training checkpoint holds the optimizer's state beside the weights (3x their size) and needs its run
folder. A shipped folder holds what an export needs and nothing else:
  weights.npz   each conv layer's kernel and bias by Keras layer name, float16 by default (half the
                size; the export casts back to float32)
  model.json    architecture, input size, class names, where the weights came from, their sha256
  README.md     written by hand: data, steps, config, figures, the datasets' terms
export_inference_graph.py --checkpoint accepts such a folder like a run folder; `make model` builds the
default hand_inference_graph/ from one.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from utils.common.fileio import atomic_outputs, sha256_of
from utils.train.model import (
    ARCHITECTURE,
    ModelError,
    build_ssd_model,
    check_run_info,
    conv_weights,
    model_anchors,
    read_run_info,
    resolve_checkpoint,
    restore_model,
    run_network,
)

if TYPE_CHECKING:
    from tensorflow.core.framework.graph_pb2 import GraphDef

WEIGHTS_NAME = "weights.npz"
INFO_NAME = "model.json"
DTYPES = {"float16": np.float16, "float32": np.float32}


def is_shipped(folder: str | Path) -> bool:
    return (Path(folder) / WEIGHTS_NAME).is_file()


def layer_weights(model) -> dict[str, np.ndarray]:
    """Every conv layer's weights as '<layer>/<index>' -> array (index 0 kernel, 1 bias), batch norm folded in:
    the plain network's, whatever the run trained."""
    return {f"{spec.layer}/{i}": value for spec in model.conv_specs
            for i, value in enumerate(conv_weights(model, spec))}


def blend_weights(weights: dict[str, np.ndarray], other: dict[str, np.ndarray], other_share: float
                  ) -> dict[str, np.ndarray]:
    """(1 - other_share) * weights + other_share * other, layer by layer: the weight-space average of two
    runs of one lineage (a stage and the one it started from), a point between what each knows."""
    if not 0 <= other_share <= 1:
        raise ModelError(f"blend share {other_share} must be in [0, 1]")
    return {name: ((1 - other_share) * value.astype(np.float64) + other_share * other[name].astype(np.float64))
            .astype(value.dtype) for name, value in weights.items()}


def _checked_run(checkpoint: str | Path) -> tuple[dict, dict, Path, str]:
    """(run.json, network, run folder, checkpoint prefix) of a run folder or prefix, checked."""
    run_dir, prefix = resolve_checkpoint(checkpoint)
    run = read_run_info(run_dir)
    check_run_info(run, run_dir)
    network = run_network(run)
    return run, network, run_dir, prefix


def ship_checkpoint(checkpoint: str | Path, out_dir: str | Path, dtype: str = "float16",
                    blend_with: str | Path | None = None, blend_share: float = 0.0) -> dict[str, Any]:
    """Write weights.npz + model.json of a train.py checkpoint (run folder: its latest) into out_dir,
    replacing both together; a README.md already there is kept. Returns model.json's content.
    `blend_with`: a second checkpoint of the same network, averaged in with weight `blend_share`."""
    if dtype not in DTYPES:
        raise ModelError(f"unknown weight dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    run, network, run_dir, prefix = _checked_run(checkpoint)
    size, fine = network["input_size"], network["fine_scales"]
    weights = layer_weights(restore_model(prefix, run["num_classes"], **network))
    blended = None
    if blend_with is not None:
        other_run, other_network, other_dir, other_prefix = _checked_run(blend_with)
        if other_network != network or other_run["class_names"] != run["class_names"]:
            raise ModelError(f"{other_dir}: cannot blend a {other_network['input_size']}x{other_network['input_size']}"
                             f" network of classes {other_run['class_names']} with {run_dir.name}'s "
                             f"{size}x{size} one of {run['class_names']}: blend runs of the same network and "
                             f"classes (model.init_checkpoint lineage)")
        other = layer_weights(restore_model(other_prefix, other_run["num_classes"], **other_network))
        weights = blend_weights(weights, other, blend_share)
        blended = {"run": other_dir.name, "checkpoint": Path(other_prefix).name, "share": blend_share,
                   "config": other_run.get("config")}
    arrays = {name: value.astype(DTYPES[dtype]) for name, value in weights.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"architecture": ARCHITECTURE, "input_size": size, "fine_anchor_scales": list(fine),
            "fine_lateral_channels": network["fine_lateral"],
            "num_classes": run["num_classes"],
            "class_names": run["class_names"], "dtype": dtype,
            "parameters": int(sum(v.size for v in arrays.values())),
            "trained": {"run": run_dir.name, "checkpoint": Path(prefix).name, "config": run.get("config")}}
    if blended is not None:
        info["trained"]["share"] = 1 - blend_share
        info["blended_with"] = blended
    with atomic_outputs() as outputs:
        weights_tmp = outputs.path(out_dir / WEIGHTS_NAME, ".npz")
        np.savez_compressed(weights_tmp, **arrays)
        info["weights_sha256"] = sha256_of(weights_tmp)
        outputs.path(out_dir / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    return info


def read_info(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / INFO_NAME
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: not found; a shipped weights folder needs it (ship_weights.py writes it)") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable ({exc}); restore it from git or re-run ship_weights.py") from exc
    if info.get("architecture") != ARCHITECTURE:
        raise ModelError(f"{path}: weights of architecture {info.get('architecture')!r}, not {ARCHITECTURE!r}")
    return info


def load_shipped(folder: str | Path):
    """The Keras model with a shipped folder's weights (float32), after checking their sha256."""
    folder = Path(folder)
    info = read_info(folder)
    weights = folder / WEIGHTS_NAME
    actual = sha256_of(weights)
    if actual != info.get("weights_sha256"):
        raise ModelError(f"{weights}: sha256 {actual} is not the {info.get('weights_sha256')} that "
                         f"{INFO_NAME} records; the file is damaged or was replaced: restore it from git")
    network = run_network(info)
    model = build_ssd_model(int(info["num_classes"]), input_size=network["input_size"],
                            fine_scales=network["fine_scales"],
                            fine_lateral=network["fine_lateral"])  # weights with batch norm folded in
    try:
        with np.load(weights) as arrays:
            for spec in model.conv_specs:
                layer = model.get_layer(spec.layer)
                count = len(layer.get_weights())
                layer.set_weights([arrays[f"{spec.layer}/{i}"].astype(np.float32) for i in range(count)])
    except (KeyError, ValueError, OSError) as exc:
        raise ModelError(f"{weights}: does not fit {ARCHITECTURE} with {info['num_classes']} classes at "
                         f"{info['input_size']} ({exc})") from exc
    return model


def export_source(folder: str | Path) -> tuple[dict, Callable[[], tuple["GraphDef", np.ndarray, list[str]]]]:
    """Like model.export_source, for a shipped folder."""
    from utils.train.model import freeze_core

    folder = Path(folder)
    info = read_info(folder)
    network = run_network(info)
    source = {"kind": "shipped", "name": folder.name, "architecture": ARCHITECTURE,
              "input_size": info["input_size"], "fine_anchor_scales": list(network["fine_scales"]),
              "fine_lateral_channels": network["fine_lateral"],
              "classes": info["class_names"],
              "weights_sha256": info.get("weights_sha256"), "dtype": info.get("dtype"),
              "model_code_sha256": sha256_of(Path(__file__).with_name("model.py"))}

    def load():
        model = load_shipped(folder)
        return freeze_core(model), model_anchors(model), list(info["class_names"])
    return source, load
