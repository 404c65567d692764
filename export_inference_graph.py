#!/usr/bin/env python
"""Export a hand detector into hand_inference_graph/: frozen graph, SavedModel and TFLite models.

Every file follows one tensor contract: `image_tensor` uint8 [1,H,W,3] RGB in;
`detection_boxes` (normalized ymin,xmin,ymax,xmax), `detection_scores`, `detection_classes`
(label map ids), `num_detections` out. (The TFLite models take the resized, normalized
[1,S,S,3] image instead, S = the model's input size: 300, 320 for the gesture model, or what a trained
model chose (model.input_size); utils/detector_utils.py does that resize.)

Sources:
  --from-tfjs DIR     a pretrained handtrack.js model (what `make model` does after fetch_pretrained.py):
                      the EgoHands hand model (TF.js 0.x: tensorflowjs_model.pb) or the 7-class
                      gesture/face model (TF.js graph model: model.json; class names from the
                      package's src/index.js labelMap; frames resized to 320x320 instead of 300x300)
  --checkpoint DIR    a checkpoint trained by train.py (`make export`), or a shipped weights folder
                      (model-checkpoint/shipped/<name>, from ship_weights.py: what `make model` uses)

int8 TFLite is calibrated on real hand frames: --calibration (videos, images, folders, globs or an
EgoHands zip or a tar of images); by default the shared hand video (else the shipped sample,
samples/) and EgoHands sample when present (and, for --checkpoint, the Oxford Hands archive and the webcam
photos). Without any,
the int8 model is skipped and the detectors use the float32 one.
A second run with the same inputs rebuilds nothing (the manifest records them).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from utils.common import config
from utils.common.signals import interruptible

EXPORTER_CODE = [config.ROOT / "export_inference_graph.py", config.ROOT / "utils" / "export" / "exporter.py",
                 config.ROOT / "utils" / "export" / "tfjs.py", config.ROOT / "utils" / "runtime" / "contract.py"]
EXPECTED_FILES = [config.LABEL_MAP_NAME, config.FROZEN_GRAPH_NAME, config.SAVED_MODEL_NAME,
                  config.TFLITE_FP32_NAME]
PROG = Path(__file__).name


def default_calibration_sources(trained: bool = False) -> list[str]:
    """The shared hand video and EgoHands sample; for a trained model also the Oxford Hands archive and the
    laptop-webcam photos, so that int8 is calibrated on every viewpoint it was trained on. Without the shared
    video (a fresh clone) the shipped sample, the same recording, takes its place: int8 is never skipped for
    want of frames."""
    video = config.SHARED_HAND_VIDEO if config.SHARED_HAND_VIDEO.exists() else config.SAMPLE_HAND_VIDEO
    candidates = [video, config.SHARED_EGOHANDS_ZIP] + ([config.SHARED_OXFORD_ARCHIVE, config.SHARED_WEBCAM_IMAGES]
                                                        if trained else [])
    return [str(p) for p in candidates if p.exists()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-tfjs", type=Path, metavar="DIR",
                        help="folder of a TF.js model: 0.x (tensorflowjs_model.pb + weights_manifest.json) "
                             "or graph model (model.json + shards)")
    source.add_argument("--checkpoint", type=Path, metavar="DIR",
                        help="a training run folder or checkpoint prefix written by train.py, or a "
                             "shipped weights folder (weights.npz + model.json)")
    parser.add_argument("--labels", metavar="NAME,NAME,...",
                        help="class names in label-map id order (default: 'hand' for the hand model, the "
                             "package's src/index.js labelMap for a TF.js graph model)")
    parser.add_argument("--output_directory", "--output-dir", type=Path, default=config.MODEL_DIR,
                        help="where the model files go (default: %(default)s)")
    parser.add_argument("--calibration", action="append", metavar="SRC",
                        help="real hand frames for int8 calibration: video, image, folder, glob or "
                             "EgoHands zip or tar of images; repeatable (default: the ../shared hand video, else "
                             "the shipped samples/ video, and the EgoHands sample, plus the Oxford archive "
                             "and the webcam photos for --checkpoint)")
    parser.add_argument("--calibration-frames", type=int, default=config.CALIBRATION_FRAMES,
                        help="frames used for calibration, spread evenly over the sources (default: %(default)s)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 TFLite model")
    parser.add_argument("--force", action="store_true", help="rebuild even when the manifest says up to date")
    return parser.parse_args(argv)


def package_root_of(folder: Path, levels: int = 5) -> Path | None:
    """The npm package folder (the one with package.json) holding a model folder, if any."""
    for parent in [folder, *folder.parents][:levels + 1]:
        if (parent / "package.json").is_file():
            return parent
    return None


def calibration_reader(sources: list[str], total: int):
    """A re-iterable of RGB frames: `total` split evenly over the sources."""
    from utils.runtime.sources import iter_rgb_frames

    per_source = max(1, total // len(sources))

    def frames():
        return itertools.chain.from_iterable(iter_rgb_frames(s, per_source) for s in sources)
    return frames


def load_source(args: argparse.Namespace):
    """(core GraphDef, anchors, class names, source description) for the chosen source."""
    from utils.export.exporter import code_fingerprint, folder_fingerprint

    if args.from_tfjs is not None:
        from utils.export.tfjs import TFJS_GRAPH_MODEL_FILE, load_tfjs_core, read_js_label_map

        tfjs_dir = args.from_tfjs
        package_root = package_root_of(tfjs_dir)
        package_json = package_root / "package.json" if package_root else None
        package = json.loads(package_json.read_text()) if package_json else {}
        source = {"kind": "tfjs", "package": package.get("name"), "version": package.get("version"),
                  "license": package.get("license"), "tfjs_sha256": folder_fingerprint(tfjs_dir)}
        if (tfjs_dir / TFJS_GRAPH_MODEL_FILE).exists():
            source["model"] = tfjs_dir.relative_to(package_root).as_posix() if package_root else tfjs_dir.name
            index_js = package_root / "src" / "index.js" if package_root else tfjs_dir / "index.js"
            class_names = args.labels.split(",") if args.labels else read_js_label_map(index_js)
        else:
            class_names = args.labels.split(",") if args.labels else ["hand"]
        source["classes"] = class_names

        def load():
            core, anchors = load_tfjs_core(tfjs_dir)
            return core, anchors, class_names
    else:
        from utils.train import model as ssd_model  # the trainable model (train.py)

        source, load = ssd_model.export_source(args.checkpoint)
    source["exporter_sha256"] = code_fingerprint(EXPORTER_CODE)
    return source, load


@interruptible(Path(__file__).name)
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.common.errors import UserError, report
    from utils.export.exporter import export_model, is_up_to_date

    calibration = [] if args.no_int8 else (args.calibration
                                           or default_calibration_sources(trained=args.checkpoint is not None))
    for src in calibration:
        if not any(ch in src for ch in "*?[") and not Path(src).exists():
            return report(PROG, UserError(f"{src}: calibration source not found; pass --calibration with real "
                                          f"hand frames or --no-int8"))
    try:
        source, load = load_source(args)
        source["calibration"] = {"sources": [Path(s).name for s in calibration],
                                 "frames": args.calibration_frames} if calibration else None
        expected = EXPECTED_FILES + ([config.TFLITE_INT8_NAME] if calibration else [])
        if not args.force and is_up_to_date(args.output_directory, source, expected):
            print(f"{args.output_directory}: up to date (manifest matches), nothing to do")
            return 0
        core, anchors, class_names = load()
        reader = calibration_reader(calibration, args.calibration_frames) if calibration else None
        manifest = export_model(core, anchors, class_names, args.output_directory, source, reader)
    except (UserError, OSError, ValueError) as exc:  # TfjsModelError, SourceError, ModelError; TF's own
        return report(PROG, exc)
    for name, meta in manifest["files"].items():
        print(f"  {name:50s} {meta['bytes']:>10,d} bytes")
    print(f"exported to {args.output_directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
