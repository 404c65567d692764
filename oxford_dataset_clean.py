"""Oxford Hands hand_dataset.tar.gz -> images/{train,test,eval}/<name>.jpg + {train,test,eval}_labels.csv.

Downloads the official archive (resumable) unless --archive names a local copy, and reads it as one
stream (nothing extracted twice). Each annotations/<name>.mat holds the struct array `boxes` with
corner points a b c d in (y, x) order; a box is their min/max, clipped to the image, rounded to
0.1 px (boxes left without width or height are dropped and counted). The archive's splits are kept:
training -> train, validation -> eval, test -> test; a split the archive lacks stays empty and is
reported. --carve-eval F moves whole image sources (Buffy_, VOC2010_, ...) of the training images to
eval. Re-running gives the same files; a failed run leaves the previous outputs untouched.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.common import config
from utils.common.errors import UserError, disk_error, pass_hint, report
from utils.common.signals import interruptible
from utils.data.oxford import (
    ARCHIVE_SPLITS,
    OXFORD_ARCHIVE_NAME,
    OXFORD_SHA256,
    OXFORD_SIZE,
    OXFORD_URL,
    convert_archive,
)
from utils.data.splits import SPLITS, csv_path, fraction_arg, images_path

PROG = "oxford_dataset_clean.py"


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("input")
    source.add_argument("--archive", type=Path, metavar="PATH",
                        help="use this local hand_dataset.tar.gz (or a .tar in the same layout) instead of "
                             "downloading")
    source.add_argument("--url", default=OXFORD_URL, help="where to download the archive from (default: %(default)s)")
    source.add_argument("--download-to", type=Path, default=config.CACHE_DIR / OXFORD_ARCHIVE_NAME, metavar="PATH",
                        help="where the download is kept; a PATH.part from an interrupted run is resumed "
                             "(default: %(default)s)")
    source.add_argument("--expected-size", type=int, default=OXFORD_SIZE or 0, metavar="BYTES",
                        help="size the downloaded archive must have; 0 checks only the server's Content-Length "
                             "(default: %(default)s: no official size is pinned)")
    source.add_argument("--sha256", default=OXFORD_SHA256, metavar="HEX",
                        help="sha256 the downloaded archive must have (default: none pinned; the computed one "
                             "is printed)")
    out = parser.add_argument_group("output")
    out.add_argument("--output-dir", type=Path, default=config.ROOT, metavar="DIR",
                     help="folder for images/<split>/ and <split>_labels.csv (default: the repository root)")
    split = parser.add_argument_group("split", "The archive's own splits are kept: "
                                      + ", ".join(f"{k} -> {v}" for k, v in ARCHIVE_SPLITS.items()) + ".")
    split.add_argument("--carve-eval", type=fraction_arg, default=0.0, metavar="F",
                       help="also move about this fraction of the training images to eval, whole image sources "
                            "at a time (the file-name prefix: Buffy_, Movie_boy_, VOC2010_, ...), chosen with "
                            "--seed (default: 0 = none)")
    split.add_argument("--seed", type=int, default=0, help="shuffle seed for --carve-eval (default: %(default)s)")
    misc = parser.add_argument_group("other")
    misc.add_argument("--limit", type=_positive, metavar="N",
                      help="only the first N images of each archive split (quick checks; default: all)")
    misc.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


@interruptible(Path(__file__).name)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = False if args.no_progress else None
    try:
        archive = args.archive
        if archive is None:
            from utils.data.download import download

            print(f"downloading {args.url} -> {args.download_to}", file=sys.stderr)
            archive = download(args.url, args.download_to, expected_size=args.expected_size or None,
                               sha256=args.sha256 or None, progress=progress,
                               local_flag=pass_hint("--archive", "OXFORD_ARCHIVE"))
        result = convert_archive(archive, args.output_dir, args.carve_eval, args.seed, args.limit, progress)
    except UserError as exc:
        return report(PROG, exc)
    except OSError as exc:  # e.g. a disk filling up mid-run
        return report(PROG, disk_error(exc))

    print(f"{'split':<6} {'images':>6} {'boxes':>6}  output")
    for name in SPLITS:
        print(f"{name:<6} {result.images[name]:>6} {result.boxes[name]:>6}  "
              f"{images_path(args.output_dir, name)}/, {csv_path(args.output_dir, name)}")
    lacking = [k for k in ARCHIVE_SPLITS if k not in result.archive_splits]
    if lacking:
        print(f"the archive has no {', '.join(lacking)} split: "
              f"{', '.join(ARCHIVE_SPLITS[k] for k in lacking)} left empty"
              + (" (apart from --carve-eval)" if "validation" in lacking and result.carved else ""))
    if result.carved:
        print(f"eval carved from training: {', '.join(result.carved)}")
    print(f"boxes clipped to the image: {result.clipped}; dropped (no width or height): {result.dropped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
