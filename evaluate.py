#!/usr/bin/env python
"""COCO metrics of a hand model: AP@0.5, AP@[.5:.95], AR@100 and a precision-recall curve.

Any model in the hand_inference_graph/ format works (frozen graph, SavedModel, TFLite fp32/int8,
from `make model` or `make export`), loaded by utils.runtime.detector exactly as the detectors load
it, class names included. Labelled images come from a split made by `make data`
(<split>_labels.csv + images/<split>/, or data/<split>.record), or from --labels/--images/--records.
Boxes are matched class by class when the model knows every labelled class name, else
class-agnostically (e.g. a 1-class 'hand' model against 4-class labels).
Prints one row per source (the CSV's source column / the records' image/source: egohands, oxford,
voc, coco or your name) and the total. Writes results/<name>.json (metrics, curve, per-source metrics,
timing) and results/<name>_pr.png.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from utils.common import config
from utils.common.signals import interruptible


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=config.MODEL_DIR,
                        help="model file (.pb, .tflite, SavedModel folder) or a model folder, whose fastest "
                             "model is used (default: %(default)s)")
    parser.add_argument("--split", nargs="+", default=["eval"], metavar="SPLIT",
                        help="split(s) made by `make data`: <split>_labels.csv + images/<split>/, else "
                             "data/<split>.record; several are pooled, each source keeps its row (e.g. "
                             "`--split test eval`: EgoHands' test video beside Oxford's eval sources) "
                             "(default: eval)")
    parser.add_argument("--labels", type=Path, metavar="CSV",
                        help="labels CSV (filename,width,height,class,xmin,ymin,xmax,ymax in pixels) instead "
                             "of the split's")
    parser.add_argument("--images", type=Path, metavar="DIR|ZIP",
                        help="images of --labels: a folder, or an EgoHands zip (default: images/<split>)")
    parser.add_argument("--records", type=Path, nargs="+", metavar="TFRECORD",
                        help="TFRecord file(s) from generate_tfrecord.py instead of a CSV")
    parser.add_argument("--only", metavar="TEXT",
                        help="evaluate only images whose file name contains TEXT (e.g. a video id)")
    parser.add_argument("--class-agnostic", action="store_true",
                        help="count every box as one 'hand' class even when the model knows the label classes")
    parser.add_argument("--output-dir", type=Path, default=config.RESULTS_DIR,
                        help="where the JSON and PNG go (default: %(default)s)")
    parser.add_argument("--name", help="output file stem (default: eval_<model folder>_<model file>_<split>)")
    parser.add_argument("--num-threads", type=int, help="threads for the model (default: TensorFlow's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def load_samples(args: argparse.Namespace):
    """(samples, description of where they came from)."""
    from utils.data.tfrecord import record_files
    from utils.evaluation.samples import EvalDataError, csv_samples, record_samples

    if args.records:
        for path in args.records:
            if not path.is_file():
                raise EvalDataError(f"{path}: TFRecord file not found; run `make data`")
        return record_samples(args.records, args.only), ", ".join(map(str, args.records))
    if args.labels:
        images = args.images or config.IMAGES_DIR / args.split[0]
        return csv_samples(args.labels, images, args.only), f"{args.labels} + {images}"
    samples, described = [], []
    splits = list(dict.fromkeys(args.split))
    for split in splits:
        labels = config.ROOT / f"{split}_labels.csv"
        if labels.exists():
            images = args.images or config.IMAGES_DIR / split
            found = csv_samples(labels, images, args.only)
            described.append(f"{labels.name} + {images}")
        else:
            files = record_files(config.DATA_DIR, split)
            if not files:
                raise EvalDataError(f"{labels}: no {split!r} split (nor {config.DATA_DIR}/{split}.record); run "
                                    f"`make data`, or pass --labels/--images or --records")
            found = record_samples(files, args.only)
            described += [str(f) for f in files]
        # Pooled splits keep a row per source and split: a source with a test and an eval split (the
        # webcam sessions) is two held-out sets, not one.
        samples += [replace(s, source=source_split(s.source, split)) for s in found] if len(splits) > 1 else found
    return samples, ", ".join(described)


def source_split(source: str, split: str) -> str:
    """The per-source row name of a pooled evaluation: 'webcam eval'."""
    return f"{source} {split}"


def format_table(metrics: dict) -> str:
    """One row per source and the total: images, boxes, AP@0.5, AP@[.5:.95], AR@100."""
    lines = [f"{'source':<16} {'images':>7} {'boxes':>7} {'AP@0.5':>8} {'AP@[.5:.95]':>12} {'AR@100':>8}"]
    rows = [*metrics.get("per_source", {}).items(), ("total", metrics)]
    for name, m in rows:
        lines.append(f"{name:<16} {m['images']:>7} {m['ground_truth_boxes']:>7} {m['AP50']:>8.4f} {m['AP']:>12.4f} "
                     f"{m['AR100']:>8.4f}")
    return "\n".join(lines)


@interruptible(Path(__file__).name)
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from utils.common.errors import UserError, report
    from utils.common.fileio import atomic_write_text, check_distinct_paths, check_writable_dir
    from utils.evaluation.samples import EvalDataError, choose_class_mode, evaluate_detector, plot_pr_curve
    from utils.runtime.detector import load_inference_graph

    try:
        check_writable_dir(args.output_dir, "--output-dir")  # fail before the evaluation, not after it
        samples, source = load_samples(args)
        if not samples:
            hint = (f" matching --only {args.only!r}" if args.only else "" if args.labels or args.records
                    else f"; the {' + '.join(args.split)} split is empty, pick one with --split")
            raise EvalDataError(f"{source}: no labelled images{hint}")
        detector = load_inference_graph(args.model, args.num_threads)
        agnostic, why = choose_class_mode(samples, detector.class_names)
        agnostic = agnostic or args.class_agnostic
        if args.class_agnostic:
            why = "class-agnostic: --class-agnostic"
        what = args.only or "_".join(args.split)
        name = args.name or f"eval_{detector.path.parent.name}_{detector.path.stem}_{what}"
        json_path, png_path = args.output_dir / f"{name}.json", args.output_dir / f"{name}_pr.png"
        # e.g. --output-dir hand_inference_graph --name manifest would overwrite the model's own manifest
        check_distinct_paths({"--output-dir/--name": [json_path, png_path]},
                             {"--model": [detector.path, *detector.path.parent.iterdir()],
                              "--labels": args.labels, "--records": args.records})
        print(f"{detector.path} ({detector.backend}) on {len(samples)} images from {source}; {why}")
        start = time.monotonic()
        metrics = evaluate_detector(detector, samples, agnostic, progress=not args.no_progress)
    except UserError as exc:  # EvalDataError, ModelLoadError, ...
        return report(parser.prog, exc)
    result = {"model": str(detector.path), "backend": detector.backend, "classes": detector.class_names,
              "source": source, "class_agnostic": agnostic, "seconds": round(time.monotonic() - start, 1),
              **metrics}
    atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
    plot_pr_curve(metrics, png_path, f"{detector.path.parent.name}/{detector.path.name} on {what}")
    print(format_table(metrics))
    print(f"AP@0.5 {metrics['AP50']:.4f}  AP@[.5:.95] {metrics['AP']:.4f}  AR@100 {metrics['AR100']:.4f}  "
          f"({metrics['images']} images, {metrics['ground_truth_boxes']} boxes, {metrics['ms_per_image']} ms/image)")
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
