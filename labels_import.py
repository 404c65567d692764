"""Your own labels -> images/{train,test,eval}/ + {train,test,eval}_labels.csv, ready for generate_tfrecord.py.

Reads a folder of Pascal VOC XML files (what LabelImg, CVAT and Roboflow export) or a COCO detection
json, keeps the boxes of the chosen categories (--category, repeatable; default all), and splits the
images by file (seeded, --fractions), by capture session or video (--group-by, --group-pattern: frames
of one session never straddle two splits) or by your lists (--train-list/--test-list/--eval-list). Every
XML/json entry, box and image is checked first: the first problem is reported in one line and nothing
is written. Images are copied byte for byte; images without a kept box are left out.

  python labels_import.py --voc my_labels/ --category hand
  python labels_import.py --voc ../shared/webcam-hands --group-by ../shared/webcam-hands/sessions.csv --source webcam
  python labels_import.py --coco instances_train.json --images train2017/ --category left --category right
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from utils.common import config
from utils.common.errors import UserError, disk_error, report
from utils.common.signals import interruptible
from utils.data.annotated import (
    HAND_CLASS,
    LabelsImportError,
    groups_by_pattern,
    image_groups,
    import_labels,
    keep_categories,
    read_groups,
    read_labels,
    read_list,
    split_images,
)
from utils.data.splits import DEFAULT_FRACTIONS, SPLITS, csv_path, fractions_arg, images_path

PROG = "labels_import.py"
SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


def source_name(text: str) -> str:
    """A source name: letters, digits and '-' (it prefixes file names and labels the CSV rows)."""
    if not SOURCE_NAME_RE.match(text):
        raise argparse.ArgumentTypeError(f"a source name is letters, digits and '-', got {text!r}")
    return text


def group_pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {text!r} ({exc})") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    labels = parser.add_argument_group("input (one of)")
    fmt = labels.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--voc", type=Path, metavar="DIR",
                     help="folder of Pascal VOC .xml files (searched recursively); images beside them, in a sibling "
                          "JPEGImages/ or images/ folder, or in --images")
    fmt.add_argument("--coco", type=Path, metavar="JSON", help="COCO detection json; images in --images or beside it")
    labels.add_argument("--images", type=Path, metavar="DIR", help="folder holding the images (see above)")
    labels.add_argument("--category", action="append", metavar="NAME",
                        help="keep the boxes of this category; repeat for more (default: all categories)")
    labels.add_argument("--keep-classes", action="store_true",
                        help=f"keep the category names as classes (default: every kept box is class {HAND_CLASS!r}, "
                             "what the hand model and generate_tfrecord.py expect)")
    out = parser.add_argument_group("output")
    out.add_argument("--output-dir", type=Path, default=config.ROOT, metavar="DIR",
                     help="folder for images/<split>/ and <split>_labels.csv (default: the repository root)")
    out.add_argument("--source", type=source_name, metavar="NAME",
                     help="the CSV's source column, for per-source training and evaluation (default: voc or coco)")
    split = parser.add_argument_group(
        "split (by image file, or by group)",
        "Default: the images are shuffled with --seed and cut by --fractions. Lists override: a text file with "
        "one image name (file name or stem) per line; test/eval get exactly their lists, train its list or "
        "else every image not listed elsewhere.")
    split.add_argument("--seed", type=int, default=0, help="shuffle seed for the default split (default: %(default)s)")
    split.add_argument("--fractions", type=fractions_arg, default=DEFAULT_FRACTIONS, metavar="TRAIN,TEST,EVAL",
                       help="fractions of images per split (default: 0.8,0.1,0.1)")
    grouped = split.add_mutually_exclusive_group()
    grouped.add_argument("--group-by", type=Path, metavar="CSV",
                         help="split whole groups (capture sessions, videos) instead of files: a CSV of image name,"
                              "group (e.g. sessions.csv: filename,session); each split gets about --fractions of the "
                              "images, never part of a group (near-duplicate frames of one session stay together)")
    grouped.add_argument("--group-pattern", type=group_pattern, metavar="REGEX",
                         help="as --group-by, the group read from each file name: the regex's first group, else its "
                              r"whole match (e.g. '^(.+)_frame\d+' for video frames named <video>_frame0001.jpg)")
    for name in SPLITS:
        split.add_argument(f"--{name}-list", type=Path, metavar="FILE", help=f"images for {name}, one per line")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@interruptible(Path(__file__).name)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kind, path = ("voc", args.voc) if args.voc else ("coco", args.coco)
    source = args.source or kind
    try:
        images, known = read_labels(kind, path, args.images)
        images, without = keep_categories(images, args.category, known, str(path),
                                          None if args.keep_classes else HAND_CLASS)
        lists = {s: None if getattr(args, f"{s}_list") is None else read_list(getattr(args, f"{s}_list"))
                 for s in SPLITS}
        groups = None
        if args.group_by is not None:
            groups = image_groups(images, read_groups(args.group_by), str(args.group_by))
            if groups is None:
                raise LabelsImportError(f"{args.group_by}: names none of the {len(images)} images; pass the group "
                                        "file of these labels (image name,group)")
        elif args.group_pattern is not None:
            groups = groups_by_pattern(images, args.group_pattern)
        splits = split_images(images, args.fractions, args.seed, lists, groups)
        result = import_labels(args.output_dir, splits, source, progress=False if args.no_progress else None)
    except UserError as exc:
        return report(PROG, exc)
    except OSError as exc:  # e.g. a disk filling up mid-run
        return report(PROG, disk_error(exc))

    print(f"{'split':<6} {'images':>6} {'boxes':>6}  output (source {source})")
    for name in SPLITS:
        print(f"{name:<6} {result.images[name]:>6} {result.boxes[name]:>6}  "
              f"{images_path(args.output_dir, name)}/, {csv_path(args.output_dir, name)}")
    if without:
        print(f"{without} image(s) without a box of the kept categories left out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
