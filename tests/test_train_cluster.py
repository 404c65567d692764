"""train.py --strategy multi_worker_mirrored: TF_CONFIG checks, a worker alone stops with one line, and
two worker processes on localhost train real EgoHands records, resume, export, and match one process.

CPU is scarce: 8 images, batch 4, 4 steps. Deterministic input (record order, no augmentation) so the
two workers' global batch holds exactly the images one process's batch holds."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import egohands_dataset_clean
import generate_tfrecord
import train
from utils.common import config
from utils.train.cluster import ClusterError, parse_tf_config

TRAIN_VIDEO, TEST_VIDEO = "CARDS_OFFICE_S_B", "CHESS_COURTYARD_B_T"
IMAGES = 8
GLOBAL_BATCH = 4
# The same loss on 2 workers as on 1 process: only the order of float sums differs (measured: 1e-7 relative).
LOSS_RTOL = 1e-4
DETERMINISTIC = ["--no-progress", "--eval-split", "none", "--batch-size", str(GLOBAL_BATCH),
                 "--set", "data.shuffle_buffer=1", "--set", "augment.horizontal_flip=0",
                 "--set", "augment.random_crop=false", "--set", "augment.brightness=0", "--set", "augment.contrast=0",
                 "--set", "augment.saturation=0", "--set", "train.steps_per_loop=1",
                 "--set", "train.checkpoint_interval=2",
                 # a schedule that does not depend on --steps, so a resumed run follows the same one
                 "--set", "optimization.learning_rate.cosine.decay_steps=4",
                 "--set", "optimization.warmup.linear.warmup_steps=1"]


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


# ----------------------------------------------------------------------------- TF_CONFIG

def test_tf_config_chief_and_peers():
    task = parse_tf_config(tf_config([2222, 2223], 1))
    assert (task.task_type, task.task_index, task.num_workers, task.is_chief) == ("worker", 1, 2, False)
    assert task.peers() == ["localhost:2222"] and parse_tf_config(tf_config([2222, 2223], 0)).is_chief
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}
    assert not parse_tf_config(json.dumps(with_chief)).is_chief  # the chief task writes, not worker 0
    assert parse_tf_config(json.dumps({**with_chief, "task": {"type": "chief", "index": 0}})).is_chief


@pytest.mark.parametrize("text, needle", [
    (None, "not set"),
    ("{cluster: 1}", "not valid JSON"),
    ('{"cluster": {"worker": ["a:1"]}}', "expected an object with 'cluster' and 'task'"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "non-empty list of HOST:PORT"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "'a' is not HOST:PORT"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}', "a:1 is listed twice"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker", "index": 0}}',
     "job 'ps' is not supported"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}', "task.index 2"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "task.type 'chief'"),
])
def test_bad_tf_config(text, needle):
    with pytest.raises(ClusterError) as info:
        parse_tf_config(text)
    message = str(info.value)
    assert message.startswith("TF_CONFIG: ") and needle in message and "\n" not in message, message


def test_train_py_bad_tf_config_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}')
    code = train.main(["--run", "r", "--checkpoint-root", str(tmp_path), "--strategy", "multi_worker_mirrored"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("train.py: error: TF_CONFIG: task.index 3") and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- real workers

def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _env(**extra: str) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **extra}


def start_worker(ports: list[int], index: int, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", "--strategy", "multi_worker_mirrored", *args],
                            cwd=config.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(TF_CONFIG=tf_config(ports, index)))


def run_workers(args: list[str], workers: int = 2, timeout: float = 420) -> list[tuple[int, str, str]]:
    """Start `workers` train.py processes of one cluster -> [(exit code, stdout, stderr)] by task index."""
    ports = free_ports(workers)
    processes = [start_worker(ports, i, args) for i in range(workers)]
    try:
        outputs = [p.communicate(timeout=timeout) for p in processes]
        return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs, strict=True)]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()


def summary_of(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("\n{") + 1:])


@pytest.mark.parametrize("index", [0, 1])  # 0 leads the cluster (TensorFlow would wait for it forever)
def test_worker_alone_stops_with_one_line(index, tmp_path):
    ports = free_ports(2)
    process = start_worker(ports, index, ["--run", "alone", "--checkpoint-root", str(tmp_path), "--cluster-timeout",
                                          "3", "--data-dir", str(tmp_path)])
    try:
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    errors = [line for line in err.splitlines() if line.startswith("train.py: error: ")]
    assert process.returncode == 2 and len(errors) == 1, err[-2000:]
    assert f"worker {index} (localhost:{ports[index]}) could not reach the other workers " \
           f"(localhost:{ports[1 - index]}) within 3 s" in errors[0]
    assert not (tmp_path / "alone").exists()


@pytest.fixture(scope="module")
def few_records(tmp_path_factory, egohands_sample_zip) -> Path:
    """A train.record of the first IMAGES frames of the CARDS video (real JPEGs, real boxes)."""
    import pandas as pd

    root = tmp_path_factory.mktemp("egohands_few")
    assert egohands_dataset_clean.main(
        ["--zip", str(egohands_sample_zip), "--output-dir", str(root), "--train-videos", TRAIN_VIDEO,
         "--test-videos", TEST_VIDEO, "--workers", "1", "--no-progress"]) == 0
    labels_csv = root / "train_labels.csv"
    labels = pd.read_csv(labels_csv)
    labels[labels.filename.isin(sorted(labels.filename.unique())[:IMAGES])].to_csv(labels_csv, index=False)
    assert generate_tfrecord.main(["--input-dir", str(root), "--output-dir", str(root / "data"), "--splits", "train",
                                   "--workers", "1", "--no-progress"]) == 0
    return root / "data"


def test_two_workers_train_resume_export_and_match_one_process(few_records, tmp_path, capsys):
    if not (config.HANDTRACKJS_MODEL_DIR / "weights_manifest.json").exists():
        pytest.skip(f"{config.HANDTRACKJS_MODEL_DIR} not found: run `make model`")
    from test_train import scalars

    run = f"mw{os.getpid()}"
    args = ["--run", run, "--checkpoint-root", str(tmp_path), "--data-dir", str(few_records), *DETERMINISTIC]
    # A first session stopped at step 2, then the same command asked for 4 steps: both workers resume
    # from the chief's checkpoint in the shared --checkpoint-root.
    for steps, done_before in ((2, 0), (4, 2)):
        results = run_workers([*args, "--steps", str(steps)])
        for index, (code, out, err) in enumerate(results):
            assert code == 0, f"worker {index}: {err[-3000:]}"
            assert "2 replica(s)" in out, out
            summary = summary_of(out)
            assert summary["step"] == steps and summary["steps_this_session"] == steps - done_before, summary
        assert summary_of(results[0][1])["checkpoint"] == str(tmp_path / run / f"ckpt-{steps}")
        assert summary_of(results[1][1])["checkpoint"] is None  # worker 1 wrote only to its temporary folder
    run_dir = tmp_path / run
    assert (run_dir / "ckpt-4.index").exists() and (run_dir / "run.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [run]  # nothing from worker 1 beside the run
    assert not list(Path(tempfile.gettempdir()).glob(f"{run}-worker-*")), "worker 1's temporary folder is left"
    two_workers = scalars(run_dir, "train")["loss/total"]

    # One process, the same global batch and steps (in-process; the default strategy).
    assert train.main(["--run", "single", "--checkpoint-root", str(tmp_path), "--data-dir", str(few_records),
                       *DETERMINISTIC, "--steps", "4"]) == 0
    capsys.readouterr()
    one_process = scalars(tmp_path / "single", "train")["loss/total"]
    assert [s for s, _ in two_workers] == [s for s, _ in one_process] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in two_workers], [v for _, v in one_process], rtol=LOSS_RTOL)

    # The chief's checkpoint exports, and the exported models load and detect.
    import export_inference_graph
    from utils import detector_utils

    out = tmp_path / "exported"
    assert export_inference_graph.main(["--checkpoint", str(run_dir), "--output_directory", str(out),
                                        "--no-int8"]) == 0
    manifest = json.loads((out / config.MANIFEST_NAME).read_text())
    assert manifest["source"]["kind"] == "checkpoint" and manifest["source"]["checkpoint"] == "ckpt-4"
    import cv2

    frame = next(iter(sorted((few_records.parent / "images" / "train").glob("*.jpg"))))
    image = cv2.cvtColor(cv2.imread(str(frame)), cv2.COLOR_BGR2RGB)
    for name in (config.SAVED_MODEL_NAME, config.TFLITE_FP32_NAME):
        detector = detector_utils.load_inference_graph(out / name)
        found = detector.detect(image)
        assert detector.class_names == {1: "hand"} and len(found.scores) > 0 and found.scores.max() > 0.5, name
