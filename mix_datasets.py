"""Several data sets -> one images/{train,test,eval}/ + {train,test,eval}_labels.csv (`make data DATASETS=...`).

Sources: `egohands` (the EgoHands zip, split by video), `oxford` (the Oxford Hands archive, its own
splits), `voc:DIR` (a folder of Pascal VOC XML files) and `coco:JSON` (a COCO detection json), each
optionally `NAME=` in front (e.g. `kitchen=voc:labels/kitchen`); `egohands:ZIP` / `oxford:ARCHIVE`
name local archives too. With more than one source every image file name starts with `<name>_`, and
every CSV row's `source` column names its source (generate_tfrecord.py puts it in image/source), so
training can weight sources and `make eval` reports AP per source.
Archives without a local copy are downloaded (resumable), as egohands_dataset_clean.py and
oxford_dataset_clean.py do. A failing source leaves every earlier output untouched.

  python mix_datasets.py egohands oxford --egohands-zip egohands_data.zip --oxford-archive hand_dataset.tar.gz
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.common import config
from utils.common.errors import UserError, disk_error, pass_hint, report
from utils.common.signals import interruptible
from utils.data.annotated import read_groups
from utils.data.sources import MixOptions, build_mixed, parse_sources
from utils.data.splits import SPLITS, csv_path, fraction_arg, images_path

PROG = "mix_datasets.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="egohands, oxford, voc:DIR, coco:JSON (optionally NAME= in front); a single "
                             "DATASETS string with spaces is split")
    parser.add_argument("--egohands-zip", type=Path, metavar="PATH",
                        help="local egohands_data.zip (default: download it into .cache/)")
    parser.add_argument("--oxford-archive", type=Path, metavar="PATH",
                        help="local Oxford Hands hand_dataset.tar.gz (default: download it into .cache/)")
    parser.add_argument("--carve-eval", type=fraction_arg, default=0.0, metavar="F",
                        help="Oxford: move about this fraction of the training images to eval, whole image "
                             "sources at a time (default: 0; the official archive has a validation split)")
    parser.add_argument("--category", action="append", metavar="NAME",
                        help="voc/coco: keep the boxes of this category; repeat for more (default: all)")
    parser.add_argument("--keep-classes", action="store_true",
                        help="voc/coco: keep category names as classes (default: every box is 'hand')")
    parser.add_argument("--group-by", action="append", type=Path, metavar="CSV",
                        help="voc/coco: split whole groups, not files: a CSV of image name,group (e.g. "
                             "sessions.csv: filename,session), applied to the source whose images it names; "
                             "repeat for more sources (labels_import.py --group-by)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the EgoHands video split, the VOC/COCO file split and --carve-eval "
                             "(default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, default=config.ROOT, metavar="DIR",
                        help="folder for images/<split>/ and <split>_labels.csv (default: the repository root)")
    parser.add_argument("--workers", type=int, default=2, help="threads for the EgoHands videos (default: 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def fetch_archive(kind: str, progress: bool | None) -> Path:
    """Download the official archive of `kind` into .cache/ (resumable) and return its path."""
    from utils.data.download import download

    if kind == "egohands":
        from utils.data.egohands import EGOHANDS_SIZE, EGOHANDS_URL, EGOHANDS_ZIP_NAME

        url, dest, size = EGOHANDS_URL, config.CACHE_DIR / EGOHANDS_ZIP_NAME, EGOHANDS_SIZE
        flag = pass_hint("--egohands-zip", "EGOHANDS_ZIP")
    else:
        from utils.data.oxford import OXFORD_ARCHIVE_NAME, OXFORD_SIZE, OXFORD_URL

        url, dest, size = OXFORD_URL, config.CACHE_DIR / OXFORD_ARCHIVE_NAME, OXFORD_SIZE
        flag = pass_hint("--oxford-archive", "OXFORD_ARCHIVE")
    print(f"downloading {url} -> {dest}", file=sys.stderr)
    return download(url, dest, expected_size=size, progress=progress, local_flag=flag)


@interruptible(Path(__file__).name)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = False if args.no_progress else None
    try:
        group_files = [(str(path), read_groups(path)) for path in args.group_by or []]
        options = MixOptions(args.egohands_zip, args.oxford_archive, args.carve_eval, args.seed, args.category,
                             args.keep_classes, args.workers, progress, lambda kind: fetch_archive(kind, progress),
                             group_files)
        specs = parse_sources([part for text in args.sources for part in text.split()])
        results = build_mixed(args.output_dir, specs, options)
    except UserError as exc:
        return report(PROG, exc)
    except OSError as exc:  # e.g. a disk filling up mid-run
        return report(PROG, disk_error(exc))

    print(f"{'source':<12} " + " ".join(f"{s + ' img':>10} {s + ' box':>10}" for s in SPLITS))
    for r in results:
        print(f"{r.name:<12} " + " ".join(f"{r.images[s]:>10} {r.boxes[s]:>10}" for s in SPLITS))
        for note in r.notes:
            print(f"  {r.name}: {note}")
    total = {s: (sum(r.images[s] for r in results), sum(r.boxes[s] for r in results)) for s in SPLITS}
    print(f"{'total':<12} " + " ".join(f"{total[s][0]:>10} {total[s][1]:>10}" for s in SPLITS))
    print("wrote " + ", ".join(f"{images_path(args.output_dir, s)}/ + {csv_path(args.output_dir, s).name}"
                               for s in SPLITS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
