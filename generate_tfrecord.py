"""<split>_labels.csv + images/<split>/ -> data/<split>.record (sharded when large) + a label map.

Records hold tf.train.Example in the TF Object Detection API's keys (image/encoded, image/format,
image/height, image/width, image/filename, image/source_id, image/object/bbox/{xmin,ymin,xmax,ymax}
normalized, image/object/class/text, image/object/class/label) plus image/source, the dataset the
image came from (the CSV's source column; CSVs without one count as egohands); the label map goes to
data/hand_label_map.pbtxt. Every CSV row and every image is checked; an error stops the run and
leaves the failing split's previous record files as they were.
Read them back with utils.data.tfrecord.read_examples / parse_example.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.common import config
from utils.common.errors import UserError
from utils.common.label_map import LabelMapError, class_names, read_label_map, write_label_map
from utils.common.signals import interruptible
from utils.data.egohands import HAND_FIELDS
from utils.data.egohands import class_names as egohands_class_names
from utils.data.labels_csv import read_labels_table
from utils.data.splits import SPLITS
from utils.data.tfrecord import DEFAULT_SHARD_SIZE, RECORD_SUFFIX, TFRecordError, write_split


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-dir", type=Path, default=config.ROOT, metavar="DIR",
                        help="folder holding <split>_labels.csv, as written by egohands_dataset_clean.py "
                             "--output-dir (default: the repository root)")
    parser.add_argument("--images-dir", type=Path, metavar="DIR",
                        help="folder holding one image folder per split (default: INPUT_DIR/images)")
    parser.add_argument("--output-dir", type=Path, default=config.DATA_DIR, metavar="DIR",
                        help="where <split>.record and the label map go (default: %(default)s)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, metavar="SPLIT",
                        help=f"which splits to convert (default: {' '.join(SPLITS)})")
    parser.add_argument("--classes", choices=("auto", "1", "4"), default="auto",
                        help="label map: 1 = 'hand'; 4 = myleft, myright, yourleft, yourright; auto = 1 if "
                             "the CSVs only have 'hand', else 4 (default: %(default)s)")
    parser.add_argument("--label-map", type=Path, metavar="PATH",
                        help="use the classes of this existing label map (pbtxt) instead of --classes")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="N",
                        help="images per record file; more images give <split>.record-0000K-of-0000N shards "
                             "(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2,
                        help="threads reading and checking images (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def choose_classes(mode: str, label_map: Path | None, csv_paths: list[Path]) -> list[str]:
    """Class names in id order, from --label-map, --classes, or what the CSVs contain."""
    if label_map is not None:
        return class_names(read_label_map(label_map))
    if mode != "auto":
        return egohands_class_names(int(mode))
    found: set[str] = set()
    for path in csv_paths:
        found |= set(read_labels_table(path, error=TFRecordError,
                                       missing_hint="run `make data` first, or pass --input-dir / --splits")["class"])
    if found <= {"hand"}:
        return egohands_class_names(1)
    if found <= set(HAND_FIELDS):
        return egohands_class_names(4)
    raise TFRecordError(f"{', '.join(map(str, csv_paths))}: classes {sorted(found)} fit neither 'hand' nor "
                        f"{', '.join(HAND_FIELDS)}; pass --label-map")


@interruptible(Path(__file__).name)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.shard_size < 1:
        print(f"error: --shard-size must be >= 1, got {args.shard_size}", file=sys.stderr)
        return 2
    images_dir = args.images_dir or args.input_dir / "images"
    csv_paths = {split: args.input_dir / f"{split}_labels.csv" for split in args.splits}
    progress = False if args.no_progress else None
    results = {}
    try:
        names = choose_classes(args.classes, args.label_map, list(csv_paths.values()))
        name_to_id = {name: i for i, name in enumerate(names, 1)}
        for split, csv_path in csv_paths.items():
            results[split] = write_split(csv_path, images_dir / split, args.output_dir, split, name_to_id,
                                         shard_size=args.shard_size, workers=args.workers, progress=progress)
        label_map_path = args.output_dir / config.LABEL_MAP_NAME
        write_label_map(label_map_path, names)
    except (UserError, LabelMapError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or args.output_dir}: {exc.strerror or exc}; choose another --output-dir",
              file=sys.stderr)
        return 2

    for split, r in results.items():
        if not r.written:
            kept = (f"kept the earlier {', '.join(map(str, r.files))}" if r.files
                    else f"no {split}{RECORD_SUFFIX} written")
            print(f"warning: {csv_paths[split]} has no rows; {kept}", file=sys.stderr)
            continue
        files = r.files[0] if len(r.files) == 1 else r.files[0].with_name(
            f"{split}.record-*-of-{len(r.files):05d}")
        by_source = f"  ({', '.join(f'{k} {v}' for k, v in r.sources.items())})" if len(r.sources) > 1 else ""
        print(f"{split:<6} {r.images:>6} images {r.boxes:>6} boxes -> {files}{by_source}")
    print(f"label map ({', '.join(names)}) -> {label_map_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
