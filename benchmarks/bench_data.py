"""Benchmark the data pipeline: clean (zip -> images + CSV) then tfrecord (CSV + images -> records),
and every other importer: Oxford Hands (archive stream), Pascal VOC folder and COCO json.

Runs both stages on an EgoHands zip (default: the shared 2-video sample) into a temporary folder and
prints images/s per stage and overall. Library imports (TensorFlow ~3 s, pandas, SciPy, OpenCV: a
one-off cost per process) are timed apart from the stages and included in the end-to-end figure.
Then, when an Oxford archive is there (default: the shared copy), it times oxford_dataset_clean's
conversion, and labels_import's VOC and COCO readers on the converted Oxford images (their boxes
written out as one VOC XML per image and as one COCO json: real images, real boxes).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder: the repo's utils/

from utils.common import config
from utils.common.errors import UserError
from utils.common.signals import interruptible
from utils.data.egohands import (
    SPLITS,
    class_names,
    convert_zip,
    csv_path,
    images_path,
    index_videos,
    open_zip,
    split_videos,
)
from utils.data.tfrecord import DEFAULT_SHARD_SIZE, write_split


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, default=config.SHARED_EGOHANDS_ZIP, metavar="PATH",
                        help="EgoHands-format zip to convert (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="threads per stage (default: %(default)s)")
    parser.add_argument("--classes", type=int, choices=(1, 4), default=1, help="1 or 4 classes (default: 1)")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="N",
                        help="images per record file (default: %(default)s)")
    parser.add_argument("--oxford-archive", type=Path, default=config.SHARED_OXFORD_ARCHIVE, metavar="PATH",
                        help="Oxford Hands archive for the oxford/voc/coco importers; skipped when absent "
                             "(default: %(default)s)")
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


def write_voc_and_coco(labels_csv: Path, images_dir: Path, voc_dir: Path, coco_json: Path) -> int:
    """One VOC XML per image and one COCO json for a labels CSV's boxes; returns the image count."""
    import json
    from xml.sax.saxutils import escape

    from utils.data.labels_csv import read_labels_table

    df = read_labels_table(labels_csv)
    voc_dir.mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "hand"}]}
    for image_id, (filename, rows) in enumerate(df.groupby("filename", sort=False), 1):
        width, height = int(rows["width"].iloc[0]), int(rows["height"].iloc[0])
        objects = "".join(
            f"<object><name>hand</name><bndbox><xmin>{r.xmin}</xmin><ymin>{r.ymin}</ymin><xmax>{r.xmax}</xmax>"
            f"<ymax>{r.ymax}</ymax></bndbox></object>" for r in rows.itertuples())
        (voc_dir / f"{Path(filename).stem}.xml").write_text(
            f"<annotation><filename>{escape(filename)}</filename><size><width>{width}</width><height>{height}"
            f"</height><depth>3</depth></size>{objects}</annotation>")
        coco["images"].append({"id": image_id, "file_name": filename, "width": width, "height": height})
        coco["annotations"] += [{"id": len(coco["annotations"]) + k, "image_id": image_id, "category_id": 1,
                                 "bbox": [r.xmin, r.ymin, r.xmax - r.xmin, r.ymax - r.ymin], "iscrowd": 0}
                                for k, r in enumerate(rows.itertuples(), 1)]
    coco_json.write_text(json.dumps(coco))
    return len(coco["images"])


def run_importers(archive: Path, out: Path) -> list[tuple[str, int, float]]:
    """(importer, images, seconds) for Oxford, VOC and COCO."""
    from utils.data.annotated import import_labels, read_labels, split_images
    from utils.data.oxford import convert_archive

    t0 = time.perf_counter()
    result = convert_archive(archive, out / "oxford", progress=False)
    timings = [("oxford", sum(result.images.values()), time.perf_counter() - t0)]
    count = write_voc_and_coco(csv_path(out / "oxford", "train"), images_path(out / "oxford", "train"),
                               out / "voc_xml", out / "coco.json")
    for kind, path in (("voc", out / "voc_xml"), ("coco", out / "coco.json")):
        t0 = time.perf_counter()
        images, _ = read_labels(kind, path, images_path(out / "oxford", "train"))
        import_labels(out / kind, split_images(images), kind)
        timings.append((kind, count, time.perf_counter() - t0))
    return timings


@interruptible(Path(__file__).name)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.zip.exists():
        print(f"error: {args.zip}: no such file; pass --zip (the shared sample lives in ../shared)",
              file=sys.stderr)
        return 2
    importers: list[tuple[str, int, float]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
            out = args.keep or Path(tmp)
            stats = run(args.zip, out, args.workers, args.classes, args.shard_size)
            if args.oxford_archive.exists():
                importers = run_importers(args.oxford_archive, out / "importers")
    except UserError as exc:  # EgoHandsError, TFRecordError, OxfordError, LabelsImportError
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
    if not importers:
        print(f"importers: skipped, no Oxford archive at {args.oxford_archive} (pass --oxford-archive)")
    for name, count, seconds in importers:
        what = {"oxford": f"{args.oxford_archive.name} -> images + CSV",
                "voc": "VOC XML folder -> images + CSV", "coco": "COCO json -> images + CSV"}[name]
        print(f"import {name:<6} {count:>5} images  {seconds:6.2f} s  {count / seconds:7.1f} images/s  ({what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
