#!/usr/bin/env python
"""Download the pretrained EgoHands hand detector (npm package handtrackjs@0.1.5, MIT licence).

`npm pack` fetches the package into a cache folder; the tarball is refused (and deleted) unless
its sha256 matches the pinned value; its TF.js model folders are then extracted and printed: the
EgoHands hand model, and the 7-class gesture/face model (ssd320fpnlite, its files checksum-pinned
too). --no-gesture extracts only the hand model.
A second run with the tarball in the cache downloads nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder: the repo's utils/

from utils.common import config
from utils.common.signals import interruptible

PROG = Path(__file__).name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=config.HANDTRACKJS_CACHE,
                        help="folder for the npm tarball and its extracted model (default: %(default)s)")
    parser.add_argument("--sha256", default=config.HANDTRACKJS_SHA256,
                        help="pinned sha256 of the tarball; a download that differs is deleted (default: %(default)s)")
    parser.add_argument("--no-gesture", action="store_true",
                        help="skip the gesture/face model (models/webmodel/ssd320fpnlite/base)")
    return parser.parse_args(argv)


@interruptible(Path(__file__).name)
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.common.errors import UserError, report
    from utils.export.pretrained import fetch_gesture_model, fetch_handtrackjs_model

    try:
        model_dirs = [fetch_handtrackjs_model(args.cache_dir, args.sha256)]
        if not args.no_gesture:
            model_dirs.append(fetch_gesture_model(args.cache_dir, args.sha256))
    except UserError as exc:  # PretrainedFetchError
        return report(PROG, exc)
    except OSError as exc:
        return report(PROG, UserError(f"{exc.filename or args.cache_dir}: {exc.strerror or exc}; "
                                      f"check --cache-dir"))
    for model_dir in model_dirs:
        print(model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
