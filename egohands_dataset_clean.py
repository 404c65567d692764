"""EgoHands zip -> images/{train,test,eval}/<VIDEO>_frame_NNNN.jpg + {train,test,eval}_labels.csv.

Downloads the official zip (resumable, size-checked) unless --zip names a local copy, converts every
video's hand polygons to boxes, and splits BY VIDEO (no video's frames in two splits).
Re-running gives the same files; a failed run leaves the previous outputs untouched.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.common import config
from utils.common.errors import UserError, disk_error, pass_hint
from utils.common.signals import interruptible
from utils.data.egohands import (
    DEFAULT_FRACTIONS,
    EGOHANDS_MIRROR_URL,
    EGOHANDS_SHA256,
    EGOHANDS_SIZE,
    EGOHANDS_URL,
    EGOHANDS_ZIP_NAME,
    SPLITS,
    convert_zip,
    csv_path,
    ensure_writable_dir,
    images_path,
    index_videos,
    open_zip,
    split_videos,
    write_visualizations,
)
from utils.data.splits import fractions_arg

DEFAULT_VISUALIZE_DIR = config.RESULTS_DIR / "egohands_visualize"


def _video_list(text: str) -> list[str]:
    return [v for v in (part.strip() for part in text.split(",")) if v]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"If the official URL no longer serves the zip, use the Internet Archive copy:\n"
               f"  --url {EGOHANDS_MIRROR_URL}")
    source = parser.add_argument_group("input")
    source.add_argument("--zip", type=Path, metavar="PATH",
                        help="use this local egohands_data.zip (or a zip in the same layout) instead of "
                             "downloading")
    source.add_argument("--url", default=EGOHANDS_URL,
                        help="where to download the zip from (default: %(default)s)")
    source.add_argument("--download-to", type=Path, default=config.CACHE_DIR / EGOHANDS_ZIP_NAME,
                        metavar="PATH",
                        help="where the download is kept; a PATH.part from an interrupted run is resumed "
                             "(default: %(default)s)")
    source.add_argument("--expected-size", type=int, default=EGOHANDS_SIZE, metavar="BYTES",
                        help="size the downloaded zip must have; 0 skips the check (default: %(default)s, "
                             "the official zip)")
    source.add_argument("--sha256", default=EGOHANDS_SHA256, metavar="HEX",
                        help="sha256 the downloaded zip must have (default: none pinned, since no official "
                             "checksum is published; the size is still checked)")
    out = parser.add_argument_group("output")
    out.add_argument("--output-dir", type=Path, default=config.ROOT, metavar="DIR",
                     help="folder for images/<split>/ and <split>_labels.csv (default: the repository root, "
                          "as the original project)")
    out.add_argument("--classes", type=int, choices=(1, 4), default=1,
                     help="1: every hand is class 'hand'; 4: classes myleft, myright, yourleft, yourright "
                          "(the polygon fields) (default: %(default)s)")
    split = parser.add_argument_group(
        "split (by video)",
        "Default: the videos are shuffled with --seed and cut by --fractions, with train getting at least "
        "one video, then test and eval one each while train keeps one (2 videos -> 1 train, 1 test, "
        "0 eval). Explicit lists override: test/eval get exactly their lists, train its list or else all "
        "videos not named elsewhere.")
    split.add_argument("--seed", type=int, default=0,
                       help="shuffle seed for the default split (default: %(default)s)")
    split.add_argument("--fractions", type=fractions_arg, default=DEFAULT_FRACTIONS, metavar="TRAIN,TEST,EVAL",
                       help="fractions of videos per split (default: 0.8,0.1,0.1)")
    for name in SPLITS:
        split.add_argument(f"--{name}-videos", type=_video_list, metavar="V1,V2",
                           help=f"comma-separated video ids (e.g. CARDS_OFFICE_S_B) for {name}")
    misc = parser.add_argument_group("other")
    misc.add_argument("--workers", type=int, default=2,
                      help="threads converting videos in parallel (default: %(default)s)")
    misc.add_argument("--visualize", type=int, default=0, metavar="N",
                      help="write N PNGs with the boxes drawn, frames spread over all splits (default: 0)")
    misc.add_argument("--visualize-dir", type=Path, default=DEFAULT_VISUALIZE_DIR, metavar="DIR",
                      help="folder for the --visualize PNGs, replaced on each run (default: %(default)s)")
    misc.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


@interruptible(Path(__file__).name)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = False if args.no_progress else None
    try:
        zip_path = args.zip
        if zip_path is None:
            from utils.data.download import download

            print(f"downloading {args.url} -> {args.download_to}", file=sys.stderr)
            zip_path = download(args.url, args.download_to, expected_size=args.expected_size or None,
                                sha256=args.sha256 or None, progress=progress,
                                local_flag=pass_hint("--zip", "EGOHANDS_ZIP"))
        with open_zip(zip_path, pass_hint("--zip", "EGOHANDS_ZIP")) as zf:
            videos = index_videos(zf.namelist(), str(zip_path))
        if args.visualize > 0:  # fail before the long part, not after it
            ensure_writable_dir(args.visualize_dir, "--visualize-dir")
        explicit = {s: getattr(args, f"{s}_videos") for s in SPLITS}
        splits = split_videos(list(videos), args.fractions, args.seed,
                              explicit if any(v is not None for v in explicit.values()) else None)
        results = convert_zip(zip_path, args.output_dir, splits, num_classes=args.classes,
                              workers=args.workers, progress=progress)
        pngs = write_visualizations(args.output_dir, results, args.visualize, args.visualize_dir)
    except UserError as exc:  # EgoHandsError, a failed download
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a disk filling up mid-run
        print(f"error: {disk_error(exc)}", file=sys.stderr)
        return 2

    print(f"{'split':<6} {'videos':>6} {'images':>6} {'boxes':>6}  output")
    for name in SPLITS:
        r = results[name]
        print(f"{name:<6} {len(r.videos):>6} {r.images:>6} {r.boxes:>6}  "
              f"{images_path(args.output_dir, name)}/, {csv_path(args.output_dir, name)}")
    for name in SPLITS:
        if results[name].videos:
            print(f"{name} videos: {', '.join(results[name].videos)}")
    if pngs:
        print(f"wrote {len(pngs)} annotated PNGs to {args.visualize_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
