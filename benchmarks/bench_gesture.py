#!/usr/bin/env python
"""Figures for the gesture/face model beside the hand model (issue 14), printed:

1. The gesture model as a hand detector: AP@0.5 on the EgoHands sample, any of its hand classes
   (open, closed, pinch, point) counted as 'hand', beside the hand model's AP on the same frames.
2. Faces taken for hands, on Oxford Hands images (people with faces and labelled hands in view,
   streamed from ../shared/oxford-hands/hand_dataset.tar.gz): the hand model's boxes (score >=
   --score-threshold) that match no labelled hand (IoU < 0.5) and overlap a face the gesture model
   found, without and with suppress_faces; the labelled hands still found; AP@0.5 without and with.

    python benchmarks/bench_gesture.py --oxford-images 600
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder: the repo's utils/

from utils.common import config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hand-model", type=Path, default=config.MODEL_DIR,
                        help="hand model file or folder (default: fastest in %(default)s)")
    parser.add_argument("--gesture-model", type=Path, default=config.GESTURE_MODEL_DIR,
                        help="gesture model file or folder (default: fastest in %(default)s)")
    parser.add_argument("--egohands-zip", type=Path, default=config.SHARED_EGOHANDS_ZIP,
                        help="EgoHands zip with the labelled frames (default: %(default)s)")
    parser.add_argument("--egohands-labels", type=Path, default=config.SHARED_EGOHANDS_LABELS,
                        help="its labels CSV (default: %(default)s)")
    parser.add_argument("--oxford-tar", type=Path, default=config.SHARED_DIR / "oxford-hands" / "hand_dataset.tar.gz",
                        help="Oxford Hands archive (default: %(default)s)")
    parser.add_argument("--oxford-labels", type=Path, default=config.SHARED_DIR / "oxford-hands" / "labels.csv",
                        help="its labels CSV, pixel boxes per image basename (default: %(default)s)")
    parser.add_argument("--oxford-images", type=int, default=600,
                        help="Oxford images to use, spread over the archive (default: %(default)s; 0 = all)")
    parser.add_argument("--score-threshold", type=float, default=config.DEFAULT_SCORE_THRESHOLD,
                        help="hand boxes counted in the false-positive figures score at least this "
                             "(the detectors' default, %(default)s)")
    parser.add_argument("--skip-egohands", action="store_true", help="skip part 1")
    parser.add_argument("--skip-oxford", action="store_true", help="skip part 2")
    return parser.parse_args(argv)


def egohands_figures(args: argparse.Namespace, detector) -> None:
    from utils.evaluation.multi_model import HandClassesOnly
    from utils.evaluation.samples import csv_samples, evaluate_detector

    samples = csv_samples(args.egohands_labels, args.egohands_zip)
    gesture = evaluate_detector(HandClassesOnly(detector.gesture), samples, class_agnostic=True, progress=False)
    hand = evaluate_detector(detector.hand, samples, class_agnostic=True, progress=False)
    print(f"EgoHands sample ({len(samples)} frames, {gesture['ground_truth_boxes']} hands), AP@0.5:")
    print(f"  gesture model {detector.gesture.path}, hand classes as 'hand': {gesture['AP50']:.3f} "
          f"(AP@[.5:.95] {gesture['AP']:.3f}, {gesture['ms_per_image']} ms/frame)")
    print(f"  hand model    {detector.hand.path}: {hand['AP50']:.3f} "
          f"(AP@[.5:.95] {hand['AP']:.3f}, {hand['ms_per_image']} ms/frame)")


def oxford_figures(args: argparse.Namespace, detector) -> None:
    import numpy as np
    import pandas as pd

    from utils.evaluation.coco import coco_evaluate
    from utils.evaluation.multi_model import iter_tar_images, study_face_suppression

    labels = pd.read_csv(args.oxford_labels)
    boxes = {name: rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy(np.float64)
             for name, rows in labels.groupby("filename")}
    every = max(1, len(boxes) // args.oxford_images) if args.oxford_images else 1
    limit = args.oxford_images or None
    samples = ((rgb, boxes[name]) for name, rgb in iter_tar_images(args.oxford_tar, set(boxes), limit, every))
    study = study_face_suppression(detector, samples, args.score_threshold)
    ap = {key: coco_evaluate(study.truth, found, {1: "hand"}, class_agnostic=True)["AP50"]
          for key, found in study.found.items()}
    print(f"Oxford Hands ({study.images} images, every {every}th of the archive; {study.labelled_hands} labelled "
          f"hands; {study.faces} faces found, score >= {detector.options.gesture_score_threshold}); hand boxes "
          f"scoring >= {args.score_threshold}:")
    print(f"  {'':18s} {'boxes':>6s} {'on-face FPs':>12s} {'hands found':>12s} {'AP@0.5':>7s}")
    for key, title in (("without", "without"), ("with", "suppress_faces")):
        print(f"  {title:18s} {study.boxes_kept[key]:6d} {study.false_on_face[key]:12d} "
              f"{study.true_hands[key]:12d} {ap[key]:7.3f}")
    removed = study.false_on_face["without"] - study.false_on_face["with"]
    print(f"  suppress_faces removes {removed} of {study.false_on_face['without']} on-face false positives, "
          f"loses {study.true_hands['without'] - study.true_hands['with']} labelled hands; "
          f"AP@0.5 change {ap['with'] - ap['without']:+.4f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.runtime.detector import ModelLoadError
    from utils.runtime.multi_model import load_multi_model

    needed = ([] if args.skip_egohands else [args.egohands_zip, args.egohands_labels]) + (
        [] if args.skip_oxford else [args.oxford_tar, args.oxford_labels])
    for path in needed:
        if not path.exists():
            print(f"error: {path}: not found; put the shared data beside the checkout or pass its path",
                  file=sys.stderr)
            return 2
    try:
        detector = load_multi_model(args.hand_model, args.gesture_model)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.skip_egohands:
        egohands_figures(args, detector)
    if not args.skip_oxford:
        oxford_figures(args, detector)
    return 0


if __name__ == "__main__":
    sys.exit(main())
