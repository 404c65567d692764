#!/usr/bin/env python
"""Turn a train.py checkpoint into a shipped weights folder: weights alone, small enough to commit.

    python scripts/ship_weights.py --checkpoint model-checkpoint/allview --output-dir model-checkpoint/shipped/allview

Writes weights.npz (each conv layer's kernel and bias, float16 unless --dtype float32) and model.json
(architecture, input size, class names, the run and config the weights came from, their sha256),
replacing both together. A README.md already in the folder is kept: write there how the weights were
made (data, steps, config, figures, the datasets' terms). Then
    export_inference_graph.py --checkpoint model-checkpoint/shipped/everyview --output_directory DIR
(or `make model MODEL=everyview`) builds the frozen graph, SavedModel and TFLite models from it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder: the repo's utils/

from utils.common.signals import interruptible
from utils.train.shipped import DTYPES

PROG = Path(__file__).name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="a training run folder (its latest checkpoint) or a checkpoint prefix (run/ckpt-N)")
    parser.add_argument("--output-dir", type=Path, required=True,
                        help="the shipped folder to write, e.g. model-checkpoint/shipped/<name>")
    parser.add_argument("--blend-with", type=Path, metavar="CHECKPOINT",
                        help="a second run (folder or prefix) of the same network to average in, layer by "
                             "layer: typically the stage --checkpoint started from, to get back some of what it "
                             "knew (weight-space averaging). model.json records both and their shares")
    parser.add_argument("--blend-share", type=float, default=0.5, metavar="W",
                        help="the weight of --blend-with in the average, in [0, 1] (default: %(default)s)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16",
                        help="how the weights are stored (default: %(default)s: half the size; the export "
                             "computes in float32 either way)")
    return parser.parse_args(argv)


@interruptible(PROG)
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.common.errors import UserError, disk_error, report
    from utils.train.shipped import WEIGHTS_NAME, ship_checkpoint

    if not 0 <= args.blend_share <= 1:
        return report(PROG, UserError(f"--blend-share {args.blend_share}: the share of --blend-with in the "
                                      f"average must be in [0, 1], e.g. 0.3"))
    try:
        info = ship_checkpoint(args.checkpoint, args.output_dir, args.dtype, args.blend_with, args.blend_share)
    except UserError as exc:  # ModelError
        return report(PROG, exc)
    except OSError as exc:
        return report(PROG, disk_error(exc))
    weights = args.output_dir / WEIGHTS_NAME
    print(f"{weights}: {info['parameters']:,} {info['dtype']} parameters, {weights.stat().st_size / 2**20:.2f} MiB, "
          f"input {info['input_size']}x{info['input_size']}, from {info['trained']['run']}/"
          f"{info['trained']['checkpoint']}"
          + (f" ({info['trained']['share']:g}) + {info['blended_with']['run']}/{info['blended_with']['checkpoint']}"
             f" ({info['blended_with']['share']:g})" if "blended_with" in info else "")
          + f"; sha256 {info['weights_sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
