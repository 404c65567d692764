"""train.py on the real ../shared EgoHands sample, split by video (train CARDS_OFFICE_S_B, test
CHESS_COURTYARD_B_T): fine-tuning keeps AP, random init learns, 4 classes end to end through the
exporter and the detectors, MirroredStrategy on 2 logical CPUs, resume after an interruption, and
one clear error for every bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import egohands_dataset_clean
import generate_tfrecord
import train
from utils.common import config

TRAIN_VIDEO, TEST_VIDEO = "CARDS_OFFICE_S_B", "CHESS_COURTYARD_B_T"
FAST = ["--no-progress", "--set", "train.steps_per_loop=2", "--set", "train.checkpoint_interval=2",
        "--set", "data.shuffle_buffer=16"]


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory, egohands_sample_zip) -> dict[int, Path]:
    """Records of the by-video split, for 1 ('hand') and 4 classes: {classes: data dir}."""
    out = {}
    for classes in (1, 4):
        root = tmp_path_factory.mktemp(f"egohands{classes}")
        assert egohands_dataset_clean.main(
            ["--zip", str(egohands_sample_zip), "--output-dir", str(root), "--classes", str(classes),
             "--train-videos", TRAIN_VIDEO, "--test-videos", TEST_VIDEO, "--workers", "1", "--no-progress"]) == 0
        assert generate_tfrecord.main(["--input-dir", str(root), "--output-dir", str(root / "data"),
                                       "--workers", "1", "--no-progress"]) == 0
        out[classes] = root / "data"
    return out


@pytest.fixture(scope="session")
def pretrained_dir():
    if not (config.HANDTRACKJS_MODEL_DIR / "weights_manifest.json").exists():
        pytest.skip(f"{config.HANDTRACKJS_MODEL_DIR} not found: run `make model`")
    return config.HANDTRACKJS_MODEL_DIR


def run_train(args: list[str], capsys) -> tuple[int, dict | None, str]:
    """train.main in-process -> (exit code, JSON summary, stderr)."""
    code = train.main(args)
    captured = capsys.readouterr()
    out = captured.out
    summary = json.loads(out[out.index("\n{") + 1:]) if code == 0 and "\n{" in out else None
    return code, summary, captured.err


def scalars(run_dir: Path, sub: str) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard scalars written by orbit: tag -> [(step, value)]."""
    import tensorflow as tf

    values: dict[str, list[tuple[int, float]]] = {}
    for events in sorted((run_dir / sub).glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(events)).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(record)
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                values.setdefault(value.tag, []).append((event.step, number))
    return values


# ----------------------------------------------------------------------------- training works

@pytest.fixture(scope="module")
def pretrained_ap(sample_data, pretrained_dir) -> float:
    """AP@0.5 of the pretrained model on CHESS, through the training evaluator."""
    from utils.train.inputs import split_files
    from utils.train.model import build_ssd_model, load_tfjs_weights
    from utils.train.training import evaluate_model

    model = build_ssd_model(1)
    load_tfjs_weights(model, pretrained_dir)
    return evaluate_model(model, split_files(sample_data[1], "test"), ["hand"])["AP50"]


def test_finetune_by_video_keeps_ap(sample_data, pretrained_ap, tmp_path, capsys):
    """The CI version of the 10-minute proof: a short, small-LR fine-tune on CARDS keeps CHESS AP@0.5."""
    code, summary, err = run_train(["--run", "ft", "--checkpoint-root", str(tmp_path), "--data-dir",
                                    str(sample_data[1]), "--steps", "12", "--learning-rate", "0.0005", *FAST], capsys)
    assert code == 0, err
    assert pretrained_ap > 0.95
    assert summary["eval"]["AP50"] >= pretrained_ap - 0.02, (summary, pretrained_ap)
    assert summary["eval"]["images"] == 100 and summary["eval"]["ground_truth_boxes"] == 241
    run_dir = tmp_path / "ft"
    assert json.loads((run_dir / "run.json").read_text())["class_names"] == ["hand"]
    assert (run_dir / "ckpt-12.index").exists()
    train_scalars, eval_scalars = scalars(run_dir, "train"), scalars(run_dir, "eval")
    assert {"loss/total", "loss/classification", "loss/localization", "learning_rate"} <= set(train_scalars)
    assert eval_scalars["AP50"][-1] == (12, pytest.approx(summary["eval"]["AP50"], abs=1e-6))


def test_random_init_loss_falls(sample_data, tmp_path, capsys):
    """From random weights (Adam: no batch norm to tame SGD's first steps, see model-checkpoint/scratch.yaml)."""
    code, summary, err = run_train(["--run", "scratch", "--checkpoint-root", str(tmp_path), "--data-dir",
                                    str(sample_data[1]), "--init", "random", "--eval-split", "none", "--steps", "30",
                                    "--learning-rate", "0.001", *FAST, "--set", "optimization.optimizer.type=adam",
                                    "--set", "train.steps_per_loop=3"], capsys)
    assert code == 0, err
    losses = [v for _, v in scalars(tmp_path / "scratch", "train")["loss/total"]]  # means of 3 steps
    assert len(losses) == 10 and np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_four_classes_train_export_detect(sample_data, pretrained_dir, tmp_path, capsys):
    """4-class fine-tune -> export_inference_graph.py --checkpoint -> detectors name the 4 classes."""
    import export_inference_graph
    from utils import detector_utils

    names = {1: "myleft", 2: "myright", 3: "yourleft", 4: "yourright"}
    code, summary, err = run_train(["--run", "four", "--checkpoint-root", str(tmp_path), "--data-dir",
                                    str(sample_data[4]), "--num-classes", "4", "--steps", "6", *FAST], capsys)
    assert code == 0, err
    assert set(json.loads((tmp_path / "four" / "run.json").read_text())["class_names"]) == set(names.values())
    assert 0 <= summary["eval"]["AP50"] <= 1

    out = tmp_path / "exported"
    frames = sample_data[4].parent / "images" / "train"
    argv = ["--checkpoint", str(tmp_path / "four"), "--output_directory", str(out),
            "--calibration", str(frames), "--calibration-frames", "4"]
    assert export_inference_graph.main(argv) == 0
    manifest = json.loads((out / config.MANIFEST_NAME).read_text())
    assert manifest["source"]["kind"] == "checkpoint" and manifest["source"]["checkpoint"] == "ckpt-6"
    assert {config.FROZEN_GRAPH_NAME, config.TFLITE_FP32_NAME, config.TFLITE_INT8_NAME} <= set(manifest["files"])
    capsys.readouterr()
    assert export_inference_graph.main(argv) == 0
    assert "up to date" in capsys.readouterr().out

    rgb = next(iter(sorted(frames.glob("*.jpg"))))
    import cv2
    image = cv2.cvtColor(cv2.imread(str(rgb)), cv2.COLOR_BGR2RGB)
    for name in (config.FROZEN_GRAPH_NAME, config.SAVED_MODEL_NAME, config.TFLITE_FP32_NAME, config.TFLITE_INT8_NAME):
        detector = detector_utils.load_inference_graph(out / name)
        assert detector.class_names == names
        found = detector.detect(image)
        assert len(found.scores) > 0 and set(found.classes.tolist()) <= set(names)
    drawn = image.copy()
    detector_utils.draw_box_on_image(2, 0.0, found.scores, found.boxes, image.shape[1], image.shape[0], drawn,
                                     found.classes, detector.class_names)
    assert (drawn != image).any()

    detect = config.ROOT / "detect_single_threaded.py"
    if detect.exists():  # the detector CLI, unchanged, shows the class names
        lines = tmp_path / "detections.jsonl"
        result = subprocess.run([sys.executable, str(detect), "--source", str(frames), "--model",
                                 str(out / config.TFLITE_FP32_NAME), "--display", "0", "--max-frames", "3",
                                 "--scorethreshold", "0.0", "--json", str(lines)],
                                cwd=config.ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        records = [json.loads(line) for line in lines.read_text().splitlines()]
        assert len(records) == 3
        assert {n for r in records for n in r["class_names"]} <= set(names.values())
        assert any(r["class_names"] for r in records)


def _env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def test_mirrored_strategy_on_two_logical_cpus(sample_data, pretrained_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "--run", "mirrored", "--checkpoint-root", str(tmp_path), "--data-dir",
         str(sample_data[1]), "--strategy", "mirrored", "--cpu-devices", "2", "--steps", "4", "--batch-size", "4",
         "--eval-split", "none", *FAST], cwd=config.ROOT, capture_output=True, text=True, timeout=240, env=_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 replica(s)" in result.stdout
    summary = json.loads(result.stdout[result.stdout.index("\n{") + 1:])
    assert summary["step"] == 4 and np.isfinite(summary["final_losses"]["loss/total"])


def test_interrupted_training_resumes_from_its_last_checkpoint(sample_data, pretrained_dir, tmp_path, capsys):
    run_dir = tmp_path / "interrupted"
    process = subprocess.Popen(
        [sys.executable, "train.py", "--run", "interrupted", "--checkpoint-root", str(tmp_path), "--data-dir",
         str(sample_data[1]), "--steps", "1000", "--batch-size", "2", "--eval-split", "none", *FAST],
        cwd=config.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 180
        while not list(run_dir.glob("ckpt-*.index")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
        assert list(run_dir.glob("ckpt-*.index")), "no checkpoint written"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err[-2000:]
    assert "run the same command to resume" in err
    import tensorflow as tf
    saved = int(tf.train.latest_checkpoint(str(run_dir)).rsplit("-", 1)[1])

    code, summary, err = run_train(["--run", "interrupted", "--checkpoint-root", str(tmp_path), "--data-dir",
                                    str(sample_data[1]), "--steps", str(saved + 2), "--batch-size", "2",
                                    "--eval-split", "none", *FAST], capsys)
    assert code == 0, err
    assert summary["step"] == saved + 2 and summary["steps_this_session"] == 2


def test_a_second_stage_starts_from_another_runs_weights(sample_data, pretrained_dir, tmp_path, capsys):
    """model.init_checkpoint: a new run (step 0, its own optimizer) from another run's weights; a run of
    another network or a missing one is a one-line error."""
    from utils.train.model import restore_model

    common = ["--checkpoint-root", str(tmp_path), "--data-dir", str(sample_data[1]), "--batch-size", "2",
              "--eval-split", "none", *FAST]
    code, _, err = run_train(["--run", "stage1", "--steps", "2", *common], capsys)
    assert code == 0, err
    code, summary, err = run_train(["--run", "stage2", "--steps", "2", "--learning-rate", "0.000000000001", "--set",
                                    f"model.init_checkpoint={tmp_path / 'stage1'}", *common], capsys)
    assert code == 0, err
    assert summary["step"] == 2 and summary["steps_this_session"] == 2
    first, second = (restore_model(str(tmp_path / run / "ckpt-2"), 1) for run in ("stage1", "stage2"))
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        assert np.allclose(a, b, atol=1e-6)
    # the convs fit any input size: a larger input starts from the same weights
    code, summary, err = run_train(["--run", "stage2_320", "--steps", "1", "--learning-rate", "0.000000000001",
                                    "--set", f"model.init_checkpoint={tmp_path / 'stage1'}",
                                    "--set", "model.input_size=320", *common], capsys)
    assert code == 0, err
    larger = restore_model(str(tmp_path / "stage2_320" / "ckpt-1"), 1, input_size=320)
    assert larger.input_shape[1] == 320
    for a, b in zip(first.get_weights(), larger.get_weights(), strict=True):
        assert np.allclose(a, b, atol=1e-6)
    code, _, err = run_train(["--run", "stage3", "--set", f"model.init_checkpoint={tmp_path / 'stage1'}",
                              "--set", "model.fine_anchor_scales=[0.05]", *common], capsys)
    _one_line_error(code, err, "trained with fine anchor scales [], this run asks for [0.05]")
    # a full-map fine layer starts a narrower (lateral) run: exact at 96 channels, the merge's rank
    code, _, err = run_train(["--run", "fine", "--steps", "2", "--set", "model.fine_anchor_scales=[0.05]", *common],
                             capsys)
    assert code == 0, err
    code = train.main(["--run", "narrow", "--steps", "2", "--learning-rate", "0.000000000001", "--set",
                       f"model.init_checkpoint={tmp_path / 'fine'}", "--set", "model.fine_anchor_scales=[0.05]",
                       "--set", "model.fine_lateral_channels=96", *common])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "fine layer narrowed to 96 lateral channels: 100.0% of what the stride-16 map adds" in out
    fine = restore_model(str(tmp_path / "fine" / "ckpt-2"), 1, fine_scales=(0.05,))
    narrow = restore_model(str(tmp_path / "narrow" / "ckpt-2"), 1, fine_scales=(0.05,), fine_lateral=96)
    batch = np.random.default_rng(0).uniform(-1, 1, [1, 300, 300, 3]).astype(np.float32)
    assert np.allclose(fine(batch)["class_logits"].numpy(), narrow(batch)["class_logits"].numpy(), atol=1e-3)
    code, _, err = run_train(["--run", "stage3", "--set", f"model.init_checkpoint={tmp_path / 'nosuch'}",
                              *common], capsys)
    _one_line_error(code, err, "nosuch: neither a run folder nor a checkpoint prefix")
    # loss.keep_weight: the starting weights teach on loss.keep_sources; the student starts equal to them,
    # so at a negligible learning rate that loss stays ~0 (it is the KL of equal scores)
    keep = ["--set", f"model.init_checkpoint={tmp_path / 'stage1'}", "--set", "loss.keep_weight=1",
            "--set", "loss.keep_sources=[egohands]"]
    code, summary, err = run_train(["--run", "kept", "--steps", "2", "--learning-rate", "0.000000000001", *keep,
                                    *common], capsys)
    assert code == 0, err
    assert 0 <= summary["final_losses"]["loss/keeping"] < 1e-3
    code, _, err = run_train(["--run", "kept320", *keep, "--set", "model.input_size=320", *common], capsys)
    _one_line_error(code, err, "loss.keep_weight needs model.init_checkpoint of this run's input size")
    code, _, err = run_train(["--run", "kept_oxford", *keep, "--set", "loss.keep_sources=[oxford]", *common], capsys)
    _one_line_error(code, err, "no 'train' examples from source(s) oxford")
    # loss.distillation_checkpoint: a run of this network as the teacher instead of the pretrained model; the
    # student starting from that run's weights agrees with it on every anchor, the fine layer's too
    taught = ["--set", f"model.init_checkpoint={tmp_path / 'fine'}", "--set", "model.fine_anchor_scales=[0.05]",
              "--set", "loss.distillation_weight=1", "--set", f"loss.distillation_checkpoint={tmp_path / 'fine'}"]
    code, summary, err = run_train(["--run", "taught", "--steps", "2", "--learning-rate", "0.000000000001", *taught,
                                    *common], capsys)
    assert code == 0, err
    assert 0 <= summary["final_losses"]["loss/distillation"] < 1e-3
    code, _, err = run_train(["--run", "taught_plain", *taught[4:], *common], capsys)
    _one_line_error(code, err, "loss.distillation_checkpoint needs a run of this run's input size and anchors")

    # ship_weights.py --blend-with: the weight-space average of two runs of one network, recorded in model.json
    from scripts import ship_weights
    from utils.train.shipped import INFO_NAME, layer_weights, load_shipped

    blended = tmp_path / "shipped" / "blend"
    assert ship_weights.main(["--checkpoint", str(tmp_path / "fine"), "--blend-with", str(tmp_path / "narrow"),
                              "--blend-share", "0.25", "--output-dir", str(blended), "--dtype", "float32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot blend" in err and "same network" in err
    assert not blended.exists() or not any(blended.iterdir())
    assert ship_weights.main(["--checkpoint", str(tmp_path / "stage1"), "--blend-with", str(tmp_path / "stage2"),
                              "--blend-share", "0.25", "--output-dir", str(blended), "--dtype", "float32"]) == 0
    info = json.loads((blended / INFO_NAME).read_text())
    assert info["trained"]["run"] == "stage1" and info["trained"]["share"] == 0.75
    assert info["blended_with"]["run"] == "stage2" and info["blended_with"]["share"] == 0.25
    ours, theirs = (layer_weights(restore_model(str(tmp_path / run / "ckpt-2"), 1)) for run in ("stage1", "stage2"))
    shipped = layer_weights(load_shipped(blended))
    for name, value in shipped.items():
        assert np.allclose(value, 0.75 * ours[name] + 0.25 * theirs[name], atol=1e-6)
    assert ship_weights.main(["--checkpoint", str(tmp_path / "stage1"), "--blend-with", str(tmp_path / "stage2"),
                              "--blend-share", "1.5", "--output-dir", str(blended)]) == 2
    assert "--blend-share 1.5" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad input

def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert err.startswith("train.py: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def test_missing_records_and_label_map(sample_data, tmp_path, capsys):
    code, _, err = run_train(["--run", "r", "--checkpoint-root", str(tmp_path), "--data-dir", str(tmp_path)], capsys)
    _one_line_error(code, err, "hand_label_map.pbtxt: label map not found", "make data")
    (tmp_path / config.LABEL_MAP_NAME).write_text((sample_data[1] / config.LABEL_MAP_NAME).read_text())
    code, _, err = run_train(["--run", "r", "--checkpoint-root", str(tmp_path), "--data-dir", str(tmp_path)], capsys)
    _one_line_error(code, err, "train.record: not found", "make data")
    assert not (tmp_path / "r").exists(), "nothing may be written before training starts"


def test_empty_split(sample_data, tmp_path, capsys):
    code, _, err = run_train(["--run", "r", "--checkpoint-root", str(tmp_path), "--data-dir", str(sample_data[1]),
                              "--train-split", "eval"], capsys)
    # an empty split writes no records (tests/test_reliability.py), so training finds none to read
    _one_line_error(code, err, "eval.record: not found", "make data")


@pytest.mark.parametrize("args, needles", [
    (["--set", "train.bach_size=4"], ["unknown config key 'train.bach_size'", "batch_size"]),
    (["--set", "train.steps=many"], ["'train.steps' must be a int"]),
    (["--set", "optimization.optimizer.sgd.bogus=1"], ["optimization:", "'bogus' does not exist"]),
    (["--set", "model.init=imagenet21k"], ["model.init must be one of"]),
    (["--num-classes", "3"], ["1 classes (hand) but model.num_classes is 3"]),
])
def test_bad_config(sample_data, tmp_path, capsys, args, needles):
    code, _, err = run_train(["--run", "r", "--checkpoint-root", str(tmp_path), "--data-dir", str(sample_data[1]),
                              *args], capsys)
    _one_line_error(code, err, *needles)


def test_bad_config_file(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("train:\n  steps: 10\n  warmup: 3\n")
    code, _, err = run_train(["--run", "r", "--checkpoint-root", str(tmp_path)], capsys)
    _one_line_error(code, err, "r.yaml: unknown config key 'train.warmup'")


def test_checkpoint_of_another_class_count_or_architecture(sample_data, tmp_path, capsys):
    import tensorflow as tf

    from utils.train.model import ARCHITECTURE, build_ssd_model

    run_dir = tmp_path / "r"
    tf.train.Checkpoint(model=build_ssd_model(1)).save(str(run_dir / "ckpt"))
    info = {"architecture": ARCHITECTURE, "num_classes": 1, "class_names": ["hand"]}
    (run_dir / "run.json").write_text(json.dumps(info))
    args = ["--run", "r", "--checkpoint-root", str(tmp_path), "--data-dir", str(sample_data[4]), "--num-classes", "4"]
    code, _, err = run_train(args, capsys)
    _one_line_error(code, err, "trained with 1 classes, this run asks for 4")
    (run_dir / "run.json").write_text(json.dumps({**info, "architecture": "ssd_resnet50_fpn"}))
    code, _, err = run_train(args, capsys)
    _one_line_error(code, err, "architecture 'ssd_resnet50_fpn'")
    (run_dir / "run.json").write_text(json.dumps(info))  # a run from before model.input_size: 300
    code, _, err = run_train(args[:-2] + ["--set", "model.input_size=448"], capsys)
    _one_line_error(code, err, "trained at input size 300, this run asks for 448")
    code, _, err = run_train(args[:-2] + ["--set", "model.fine_anchor_scales=[0.05]"], capsys)
    _one_line_error(code, err, "trained with fine anchor scales [], this run asks for [0.05]")
    code, _, err = run_train(args[:-2] + ["--set", "model.batch_norm=true"], capsys)
    _one_line_error(code, err, "trained with model.batch_norm False, this run asks for True")


def test_help_explains_every_flag():
    text = train.build_parser().format_help()
    for flag in ("--run", "--config", "--data-dir", "--num-classes", "--init", "--strategy", "--cpu-devices",
                 "--set", "--steps", "--learning-rate"):
        assert flag in text


# ----------------------------------------------------------------------------- a larger input, shipped weights

def test_larger_input_with_the_teacher_then_shipped_weights_export_and_detect(sample_data, pretrained_dir, tmp_path,
                                                                               capsys):
    """model.input_size 384 with a fine layer (and its lateral conv) and batch norm (the pretrained 300x300
    network as teacher, mapped onto the student's anchors) -> ship_weights.py (batch norm folded, float16) ->
    export_inference_graph.py --checkpoint <shipped folder> -> a 384x384 TFLite model that agrees with the
    checkpoint; a damaged weights file is refused."""
    import cv2

    import export_inference_graph
    from scripts import ship_weights
    from utils.runtime.detector import load_inference_graph
    from utils.train.model import restore_model
    from utils.train.shipped import INFO_NAME, WEIGHTS_NAME, load_shipped

    code, summary, err = run_train(["--run", "big", "--checkpoint-root", str(tmp_path), "--data-dir",
                                    str(sample_data[1]), "--steps", "4", "--learning-rate", "0.0005",
                                    "--eval-split", "none", "--set", "model.input_size=384",
                                    "--set", "loss.distillation_weight=1.0",
                                    "--set", "model.fine_anchor_scales=[0.05, 0.1]", "--set", "model.batch_norm=true",
                                    "--set", "model.fine_lateral_channels=16",
                                    "--set", "model.batch_norm_calibration_images=16", *FAST], capsys)
    assert code == 0, err
    assert np.isfinite(summary["final_losses"]["loss/distillation"])
    run_info = json.loads((tmp_path / "big" / "run.json").read_text())
    assert run_info["input_size"] == 384 and run_info["fine_anchor_scales"] == [0.05, 0.1] and run_info["batch_norm"]
    assert run_info["fine_lateral_channels"] == 16

    shipped = tmp_path / "shipped" / "big"
    assert ship_weights.main(["--checkpoint", str(tmp_path / "big"), "--output-dir", str(shipped)]) == 0
    info = json.loads((shipped / INFO_NAME).read_text())
    assert info["input_size"] == 384 and info["dtype"] == "float16" and info["class_names"] == ["hand"]
    assert info["fine_anchor_scales"] == [0.05, 0.1] and info["fine_lateral_channels"] == 16
    assert (shipped / WEIGHTS_NAME).stat().st_size < 2 * info["parameters"]  # float16, compressed

    frame = next(iter(sorted((sample_data[1].parent / "images" / "test").glob("*.jpg"))))
    rgb = cv2.cvtColor(cv2.imread(str(frame)), cv2.COLOR_BGR2RGB)
    batch = (cv2.resize(rgb, (384, 384))[None].astype(np.float32) * 2 / 255 - 1)
    full = restore_model(str(tmp_path / "big" / "ckpt-4"), 1, 384, (0.05, 0.1), batch_norm=True, fine_lateral=16)(batch)
    full = full["class_logits"].numpy()
    half = load_shipped(shipped)(batch)["class_logits"].numpy()
    scores = [1 / (1 + np.exp(-logits)) for logits in (full, half)]
    assert np.abs(scores[0] - scores[1]).max() < 0.01  # float16 weights (batch norm folded in), float32 compute

    out = tmp_path / "exported"
    assert export_inference_graph.main(["--checkpoint", str(shipped), "--output_directory", str(out),
                                        "--no-int8"]) == 0
    manifest = json.loads((out / config.MANIFEST_NAME).read_text())
    assert manifest["source"]["kind"] == "shipped" and manifest["source"]["input_size"] == 384
    assert manifest["source"]["fine_lateral_channels"] == 16
    tflite = load_inference_graph(out / config.TFLITE_FP32_NAME)
    assert tflite.input_size == 384
    frozen = load_inference_graph(out / config.FROZEN_GRAPH_NAME)
    a, b = tflite.detect(rgb), frozen.detect(rgb)
    assert len(a.scores) and len(b.scores)
    assert a.scores[0] == pytest.approx(b.scores[0], abs=0.02)
    assert np.abs(a.boxes[0] - b.boxes[0]).max() < 0.02

    weights = shipped / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-100] + bytes(100))
    capsys.readouterr()
    assert export_inference_graph.main(["--checkpoint", str(shipped), "--output_directory", str(out), "--force",
                                        "--no-int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights.npz: sha256" in err and "restore it from git" in err
    assert (out / config.TFLITE_FP32_NAME).exists()  # the earlier export is kept
