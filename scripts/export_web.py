#!/usr/bin/env python
"""Export a model folder for the browser (`make web`): hand_inference_graph/ -> web/model/.

Copies the folder's TFLite models (int8 first, the page's default, then float32) without their final
TFLite_Detection_PostProcess op, which LiteRT.js cannot run, and writes web/model/model.json: the files,
the op's settings and anchors (web/handtrack.js decodes the boxes and runs the NMS itself), the label names
and the detector's defaults. Whatever `make model` or `make export` built is what the page gets.
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
    from utils.export.web import WEB_MODEL_DIR

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=config.MODEL_DIR,
                        help="model folder built by `make model` / `make export` (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=WEB_MODEL_DIR,
                        help="folder the page loads its model from, replaced whole (default: %(default)s)")
    return parser.parse_args(argv)


@interruptible(PROG)
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.common.errors import UserError, disk_error, report
    from utils.export.web import export_web_model

    try:
        meta = export_web_model(args.model_dir, args.output)
    except UserError as exc:
        return report(PROG, exc)
    except OSError as exc:
        return report(PROG, disk_error(exc))
    for name in meta["files"]:
        print(f"{args.output / name} ({(args.output / name).stat().st_size / 1e6:.1f} MB)")
    print(f"{args.output / 'model.json'}: default {meta['default']}, {len(meta['anchors'])} anchors, "
          f"labels {meta['labels']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
