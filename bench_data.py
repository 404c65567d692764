"""Benchmark the data pipeline: clean (zip -> images + CSV) then tfrecord (CSV + images -> records).

Runs both stages on an EgoHands zip (default: the shared 2-video sample) into a temporary folder and
prints images/s per stage and overall. Library imports (TensorFlow ~3 s, pandas, SciPy, OpenCV: a
one-off cost per process) are timed apart from the stages and included in the end-to-end figure.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from utils.common import config
from utils.data.egohands import (
    SPLITS,
    EgoHandsError,
    class_names,
    convert_zip,
    csv_path,
    images_path,
    index_videos,
    open_zip,
    split_videos,
)
from utils.data.tfrecord import DEFAULT_SHARD_SIZE, TFRecordError, write_split


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, default=config.SHARED_EGOHANDS_ZIP, metavar="PATH",
                        help="EgoHands-format zip to convert (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="threads per stage (default: %(default)s)")
    parser.add_argument("--classes", type=int, choices=(1, 4), default=1, help="1 or 4 classes (default: 1)")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="N",
                        help="images per record file (default: %(default)s)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="write into DIR and keep the outputs (default: a temporary folder, removed)")
    return parser


def run(zip_path: Path, out: Path, workers: int, num_classes: int, shard_size: int) -> dict[str, float]:
    """Time both stages; returns counts and seconds."""
    start = time.perf_counter()
    import cv2  # noqa: F401
    import pandas  # noqa: F401
    import scipy.io  # noqa: F401
    import tensorflow  # noqa: F401
    t0 = time.perf_counter()
    with open_zip(zip_path) as zf:
        videos = index_videos(zf.namelist(), str(zip_path))
    results = convert_zip(zip_path, out, split_videos(list(videos)), num_classes=num_classes,
                          workers=workers, progress=False)
    t1 = time.perf_counter()
    name_to_id = {name: i for i, name in enumerate(class_names(num_classes), 1)}
    records = 0
    for split in SPLITS:
        records += write_split(csv_path(out, split), images_path(out, split), out / "data", split, name_to_id,
                               shard_size=shard_size, workers=workers, progress=False).images
    t2 = time.perf_counter()
    return {"clean_images": sum(r.images for r in results.values()), "clean_s": t1 - t0,
            "import_s": t0 - start, "records": records, "tfrecord_s": t2 - t1}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.zip.exists():
        print(f"error: {args.zip}: no such file; pass --zip (the shared sample lives in ../shared)",
              file=sys.stderr)
        return 2
    try:
        if args.keep:
            stats = run(args.zip, args.keep, args.workers, args.classes, args.shard_size)
        else:
            with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
                stats = run(args.zip, Path(tmp), args.workers, args.classes, args.shard_size)
    except (EgoHandsError, TFRecordError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n, c, r, t = stats["clean_images"], stats["clean_s"], stats["records"], stats["tfrecord_s"]
    print(f"zip: {args.zip} ({args.workers} workers)")
    print(f"clean     {n:>5} images  {c:6.2f} s  {n / c:7.1f} images/s")
    print(f"tfrecord  {r:>5} images  {t:6.2f} s  {r / t:7.1f} images/s  (labelled frames only)")
    print(f"overall   {n:>5} images  {c + t:6.2f} s  {n / (c + t):7.1f} images/s")
    total = c + t + stats["import_s"]
    print(f"end to end incl. library imports ({stats['import_s']:.2f} s): {total:.2f} s, "
          f"{n / total:.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
