#!/usr/bin/env python
"""Fine-tune (or train) the hand detector on TFRecords; checkpoints + TensorBoard in model-checkpoint/<run>/.

The model is the pretrained handtrack.js SSD MobileNetV2 rebuilt in Keras (utils/train/model.py);
by default it starts from those weights. The run's settings come from model-checkpoint/<run>.yaml
(keys and defaults: utils/train/run_config.py TrainingConfig), then from the flags below.
Running the same command again resumes from the run's last checkpoint; a finished run only
re-evaluates. Export the result with:
  export_inference_graph.py --checkpoint model-checkpoint/<run> --output_directory DIR
TensorBoard: tensorboard --logdir model-checkpoint/<run>

Several machines: run the same command on each with --strategy multi_worker_mirrored and its own
TF_CONFIG (the cluster and this task); the records and --checkpoint-root must be on storage every
machine sees. The chief writes the run folder (see README, Train).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from utils.common import config
from utils.common.checks import number_arg
from utils.common.errors import EXIT_FAILED, EXIT_INTERRUPTED, report, user_error
from utils.common.signals import interruptible

PROG = Path(__file__).name

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="egohands",
                        help="run name: checkpoints go to CHECKPOINT_ROOT/RUN/, the config is read from "
                             "CHECKPOINT_ROOT/RUN.yaml when present (default: %(default)s)")
    parser.add_argument("--config", type=Path, metavar="YAML",
                        help="training config to use instead of CHECKPOINT_ROOT/RUN.yaml")
    parser.add_argument("--checkpoint-root", type=Path, default=config.CHECKPOINT_DIR, metavar="DIR",
                        help="folder holding the run folders and their configs (default: %(default)s)")
    data = parser.add_argument_group("data (override the config)")
    data.add_argument("--data-dir", metavar="DIR",
                      help="folder with <split>.record and hand_label_map.pbtxt from generate_tfrecord.py "
                           "(config data.dir, default: data)")
    data.add_argument("--train-split", metavar="SPLIT", help="split to train on (config data.train_split: train)")
    data.add_argument("--eval-split", metavar="SPLIT",
                      help="split evaluated with COCO AP after training; 'none' for no evaluation "
                           "(config data.eval_split: test)")
    model = parser.add_argument_group("model and schedule (override the config)")
    model.add_argument("--num-classes", type=int, metavar="N",
                       help="1 = 'hand' (multi-class records are merged into it) or the label map's class "
                            "count, e.g. 4; class heads are re-initialised when it is not 1 (config "
                            "model.num_classes: 1)")
    model.add_argument("--init", choices=("pretrained", "random", "imagenet"),
                       help="starting weights: the pretrained handtrack.js hand detector, random, or an ImageNet "
                            "MobileNetV2 backbone (needs its Keras .h5: --imagenet-weights or ~/.keras/models) "
                            "(config model.init: pretrained); ignored when resuming")
    model.add_argument("--imagenet-weights", metavar="H5",
                       help="local mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    model.add_argument("--steps", type=int, help="train up to this global step (config train.steps)")
    model.add_argument("--batch-size", type=int, help="global batch size (config train.batch_size)")
    model.add_argument("--learning-rate", type=number_arg(float, above=0), metavar="LR",
                       help="initial learning rate of the configured schedule (config optimization)")
    model.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any config value, e.g. --set augment.random_crop=false --set train.eval_interval=200; "
                            "repeatable")
    dist = parser.add_argument_group("distribution")
    dist.add_argument("--strategy", choices=STRATEGIES, default="default",
                      help="tf.distribute strategy: default (one device), mirrored (all GPUs, else all logical "
                           "CPUs), multi_worker_mirrored (cluster from TF_CONFIG), tpu (default: %(default)s)")
    dist.add_argument("--cpu-devices", type=int, metavar="N",
                      help="split the CPU into N logical devices first (e.g. 2 to try --strategy mirrored "
                           "without GPUs)")
    dist.add_argument("--tpu", metavar="ADDRESS", help="TPU name or grpc:// address for --strategy tpu")
    dist.add_argument("--cluster-timeout", type=number_arg(float, above=0), default=config.TRAIN_CLUSTER_TIMEOUT_S,
                      metavar="SECONDS",
                      help="multi_worker_mirrored: how long a worker waits for the others in TF_CONFIG before it "
                           "stops with an error (default: %(default)s)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def config_overrides(args: argparse.Namespace, cfg_lr_type: str | None = None) -> list[str]:
    """The explicit flags as `key=value` config overrides."""
    out = []
    for flag, key in (("data_dir", "data.dir"), ("train_split", "data.train_split"),
                      ("num_classes", "model.num_classes"), ("init", "model.init"),
                      ("imagenet_weights", "model.imagenet_weights"), ("steps", "train.steps"),
                      ("batch_size", "train.batch_size")):
        value = getattr(args, flag)
        if value is not None:
            out.append(f"{key}={json.dumps(str(value)) if isinstance(value, (str, Path)) else value}")
    if args.eval_split is not None:
        out.append("data.eval_split=" + ("null" if args.eval_split.lower() == "none" else json.dumps(args.eval_split)))
    if args.learning_rate is not None and cfg_lr_type:
        field = "learning_rate" if cfg_lr_type == "constant" else "initial_learning_rate"
        out.append(f"optimization.learning_rate.{cfg_lr_type}.{field}={args.learning_rate}")
    return out + list(args.set)


def resolve_config(args: argparse.Namespace) -> tuple[dict, Path | None]:
    """The run's config: its YAML (or --config), then the flags. Runs no TensorFlow op."""
    from utils.train.run_config import ConfigError, load_config

    path = args.config
    if path is None and (args.checkpoint_root / f"{args.run}.yaml").exists():
        path = args.checkpoint_root / f"{args.run}.yaml"
    elif path is not None and not path.exists():
        raise ConfigError(f"{path}: config file not found")
    base = load_config(path, args.set)  # to learn the schedule type for --learning-rate
    lr_type = base["optimization"].get("learning_rate", {}).get("type")
    return load_config(path, config_overrides(args, lr_type)), path


@interruptible(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if "/" in args.run or args.run in ("", ".", ".."):
        return report(PROG, user_error(f"--run {args.run!r}", "a run name is a plain folder name",
                                       "e.g. --run egohands"))
    import tensorflow as tf

    from utils.common.errors import UserError
    from utils.common.label_map import LabelMapError
    from utils.train.inputs import DataError
    from utils.train.model import ModelError
    from utils.train.training import (
        TrainingError,
        make_strategy,
        prepare_training,
        run_training,
        split_cpu,
    )

    tf.get_logger().setLevel("ERROR")  # deprecation notes; orbit's own log goes to the run's train.log
    run_dir = args.checkpoint_root / args.run
    try:
        cfg, cfg_path = resolve_config(args)  # bad config: an error before waiting for a cluster
        if args.print_config:
            import yaml
            print(yaml.safe_dump(cfg, sort_keys=False), end="")
            return 0
        # No TensorFlow op may run before these two: logical CPUs and collective ops are set at startup.
        if args.cpu_devices and args.cpu_devices > 1:
            split_cpu(args.cpu_devices)
        strategy = make_strategy(args.strategy, args.tpu, args.cluster_timeout)
        plan = prepare_training(cfg, run_dir)
    except (UserError, DataError, ModelError, LabelMapError) as exc:
        return report(PROG, exc)
    print(f"run {args.run}: config {cfg_path or 'defaults'}, {len(plan.class_names)} class(es) "
          f"{plan.class_names}, {cfg['train']['steps']} steps of batch {cfg['train']['batch_size']}, "
          f"{strategy.num_replicas_in_sync} replica(s) -> {run_dir}")
    for note in plan.notes:
        print(note)
    try:
        summary = run_training(plan, strategy, progress=not args.no_progress)
    except (UserError, ModelError) as exc:
        return report(PROG, exc)
    except TrainingError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:
        by = f" by {exc}" if str(exc) else ""
        print(f"\n{PROG}: interrupted{by}; run the same command to resume {run_dir} from its last checkpoint",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
