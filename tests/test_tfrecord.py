"""generate_tfrecord.py and utils/data/tfrecord.py: CSV + images -> records -> parse back."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import egohands_dataset_clean
import generate_tfrecord
from utils.common.label_map import read_label_map
from utils.data.tfrecord import (
    BBOX_XMAX,
    BBOX_XMIN,
    BBOX_YMAX,
    BBOX_YMIN,
    CLASS_LABEL,
    CLASS_TEXT,
    FEATURE_KEYS,
    IMAGE_ENCODED,
    IMAGE_FILENAME,
    IMAGE_FORMAT,
    IMAGE_HEIGHT,
    IMAGE_SOURCE_ID,
    IMAGE_WIDTH,
    ImageLabels,
    build_example,
    example_boxes,
    feature_spec,
    parse_example,
    read_examples,
    record_files,
)

COLUMNS = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]


def jpeg(width: int, height: int, seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A clean-style folder: 5 labelled train images + 1 test image, classes 'hand'."""
    rows = {"train": [], "test": [], "eval": []}
    for split, count in (("train", 5), ("test", 1)):
        (tmp_path / "images" / split).mkdir(parents=True)
        for i in range(count):
            name = f"{split}_{i}.jpg"
            (tmp_path / "images" / split / name).write_bytes(jpeg(64, 48, seed=i))
            rows[split].append((name, 64, 48, "hand", 1 + i, 2, 30 + i, 40))
            if i % 2:
                rows[split].append((name, 64, 48, "hand", 0, 0, 64, 48))
    (tmp_path / "images" / "eval").mkdir()
    for split, split_rows in rows.items():
        pd.DataFrame(split_rows, columns=COLUMNS).to_csv(tmp_path / f"{split}_labels.csv", index=False)
    return tmp_path


def run_tfrecord(capsys, *argv) -> tuple[int, str]:
    rc = generate_tfrecord.main([*map(str, argv), "--no-progress"])
    return rc, capsys.readouterr().err


def files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()} if root.exists() else {}


def csv_boxes(path: Path) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for row in pd.read_csv(path).itertuples(index=False):
        out.setdefault(row.filename, []).append((row[3], row.xmin, row.ymin, row.xmax, row.ymax))
    return out


def record_boxes(paths: list[Path]) -> dict[str, list[tuple]]:
    """Records -> filename -> [(class, xmin, ymin, xmax, ymax)] in pixels (checks the other keys too)."""
    out = {}
    for ex in read_examples(paths):
        assert set(ex) == set(FEATURE_KEYS)
        w, h = ex[IMAGE_WIDTH], ex[IMAGE_HEIGHT]
        image = cv2.imdecode(np.frombuffer(ex[IMAGE_ENCODED], np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == (h, w) and ex[IMAGE_FORMAT] == "jpeg"
        assert ex[IMAGE_SOURCE_ID] == ex[IMAGE_FILENAME]
        pixels = np.stack([ex[BBOX_XMIN] * w, ex[BBOX_YMIN] * h, ex[BBOX_XMAX] * w, ex[BBOX_YMAX] * h], 1)
        assert np.abs(pixels - np.round(pixels)).max(initial=0) < 1e-3  # float32 of integer pixels
        out[ex[IMAGE_FILENAME]] = [(c, *map(int, np.round(p)))
                                   for c, p in zip(ex[CLASS_TEXT], pixels, strict=True)]
        out[ex[IMAGE_FILENAME] + "/labels"] = ex[CLASS_LABEL].tolist()
    return out


# ----------------------------------------------------------------------------- the real sample

@pytest.fixture(scope="module")
def sample_records(egohands_sample_zip, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    assert egohands_dataset_clean.main(["--zip", str(egohands_sample_zip), "--output-dir", str(out),
                                        "--classes", "4", "--no-progress"]) == 0
    assert generate_tfrecord.main(["--input-dir", str(out), "--output-dir", str(out / "data"),
                                   "--shard-size", "60", "--no-progress"]) == 0
    return out


def test_sample_records_parse_back_to_the_csv(sample_records):
    out = sample_records
    id_to_name = read_label_map(out / "data" / "hand_label_map.pbtxt")
    assert id_to_name == {1: "myleft", 2: "myright", 3: "yourleft", 4: "yourright"}
    total = 0
    seen_videos: dict[str, str] = {}
    for split in ("train", "test", "eval"):
        paths = record_files(out / "data", split)
        expected = csv_boxes(out / f"{split}_labels.csv")
        if not expected:
            assert paths == []  # an empty split writes no record file (an earlier one would be kept)
            continue
        assert [p.name for p in paths] == [f"{split}.record-{k:05d}-of-00002" for k in range(2)]
        got = record_boxes(paths)
        for name, boxes in expected.items():
            assert got[name] == boxes
            assert [id_to_name[i] for i in got[name + "/labels"]] == [b[0] for b in boxes]
            video = name.split("_frame_")[0]
            assert seen_videos.setdefault(video, split) == split  # no video in two splits
        assert len(got) == 2 * len(expected)
        total += sum(len(b) for b in expected.values())
    assert total == 501


def test_sample_one_class_is_detected(sample_records, tmp_path, capsys):
    src = sample_records
    df = pd.read_csv(src / "test_labels.csv")
    df["class"] = "hand"
    df.to_csv(tmp_path / "test_labels.csv", index=False)
    rc, err = run_tfrecord(capsys, "--input-dir", tmp_path, "--images-dir", src / "images",
                           "--output-dir", tmp_path / "data", "--splits", "test")
    assert rc == 0, err
    assert read_label_map(tmp_path / "data" / "hand_label_map.pbtxt") == {1: "hand"}
    labels = {lab for key, value in record_boxes(record_files(tmp_path / "data", "test")).items()
              if key.endswith("/labels") for lab in value}
    assert labels == {1}


# ----------------------------------------------------------------------------- fabricated data

def test_shards_round_trip_and_rerun(dataset, capsys):
    data = dataset / "data"
    rc, err = run_tfrecord(capsys, "--input-dir", dataset, "--output-dir", data, "--shard-size", "2",
                           "--workers", "2")
    assert rc == 0, err
    train = record_files(data, "train")
    assert [p.name for p in train] == [f"train.record-{k:05d}-of-00003" for k in range(3)]
    got = record_boxes(train)
    boxes = {k: v for k, v in got.items() if not k.endswith("/labels")}
    assert boxes == csv_boxes(dataset / "train_labels.csv")
    assert [len(list(read_examples(p))) for p in train] == [2, 2, 1]  # round-robin
    assert [p.name for p in record_files(data, "test")] == ["test.record"]
    assert "eval_labels.csv has no rows; no eval.record written" in err  # an empty split writes nothing

    first = files(data)
    assert run_tfrecord(capsys, "--input-dir", dataset, "--output-dir", data, "--shard-size", "2",
                        "--workers", "1")[0] == 0
    assert files(data) == first  # same bytes, whatever the worker count
    assert run_tfrecord(capsys, "--input-dir", dataset, "--output-dir", data)[0] == 0
    assert [p.name for p in record_files(data, "train")] == ["train.record"]  # stale shards removed
    assert len(list(read_examples(record_files(data, "train")))) == 5


@pytest.mark.parametrize("damage", ["truncated", "not_an_image", "wrong_size"])
def test_bad_image_fails_and_keeps_previous_records(dataset, capsys, damage):
    data = dataset / "data"
    assert run_tfrecord(capsys, "--input-dir", dataset, "--output-dir", data)[0] == 0
    before = files(data)
    bad = dataset / "images" / "train" / "train_3.jpg"
    good = bad.read_bytes()
    bad.write_bytes({"truncated": good[:len(good) // 2], "not_an_image": b"hello",
                     "wrong_size": jpeg(32, 48, 0)}[damage])
    rc, err = run_tfrecord(capsys, "--input-dir", dataset, "--output-dir", data, "--workers", "2")
    assert rc == 2 and err.startswith(f"error: {bad}: ") and len(err.strip().splitlines()) == 1, err
    assert files(data) == before
    assert not [p for p in data.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("row, column, value, message", [
    (0, "xmax", 65, "line 2: box x range"),
    (0, "ymin", -1, "line 2: box y range"),
    (0, "xmin", 30, "line 2: box x range"),  # xmin == xmax
    (0, "class", "paw", "line 2: class 'paw' is not in the label map"),
    (0, "width", 64.5, "line 2: width/height 64.5x48 are not positive integers"),
    (0, "ymax", "", "line 2: a size or box value is missing"),
    (1, "width", 100, "line 4: train_1.jpg has a different width/height"),
])
def test_bad_csv_row(dataset, tmp_path, capsys, row, column, value, message):
    path = dataset / "train_labels.csv"
    df = pd.read_csv(path, dtype=str)
    df.loc[row, column] = str(value)
    df.to_csv(path, index=False)
    out = tmp_path / "data"
    rc, err = run_tfrecord(capsys, "--input-dir", dataset, "--output-dir", out, "--classes", "1")
    assert rc == 2 and f"error: {path}: {message}" in err, err
    assert not [p for p in out.rglob("*") if p.is_file()] if out.exists() else True


def test_size_mismatch_between_csv_and_image(dataset, capsys, tmp_path):
    path = dataset / "train_labels.csv"
    df = pd.read_csv(path)
    df["width"], df["xmax"] = 640, 600  # consistent rows, but the image is 64 wide
    df.to_csv(path, index=False)
    rc, err = run_tfrecord(capsys, "--input-dir", dataset, "--output-dir", tmp_path / "data")
    assert rc == 2 and "train_0.jpg: image is 64x48 but" in err and "640x48" in err, err


def test_missing_csv_and_unwritable_output(dataset, tmp_path, capsys):
    (dataset / "test_labels.csv").unlink()
    rc, err = run_tfrecord(capsys, "--input-dir", dataset, "--output-dir", tmp_path / "data")
    assert rc == 2 and "test_labels.csv: no such file" in err, err
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, err = run_tfrecord(capsys, "--input-dir", dataset, "--output-dir", blocker / "data",
                           "--splits", "train")
    assert rc == 2 and str(blocker / "data") in err, err
    rc, err = run_tfrecord(capsys, "--input-dir", dataset, "--output-dir", tmp_path / "d",
                           "--shard-size", "0")
    assert rc == 2 and "--shard-size" in err


def test_records_do_not_depend_on_the_hash_seed(dataset):
    """Feature maps serialize in string-hash order unless asked not to: re-runs must give the same bytes."""
    root = Path(__file__).resolve().parent.parent
    runs = [subprocess.Popen([sys.executable, str(root / "generate_tfrecord.py"), "--input-dir", str(dataset),
                              "--output-dir", str(dataset / f"data{seed}"), "--splits", "train",
                              "--no-progress"], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONHASHSEED": seed}, text=True)
            for seed in ("1", "2")]
    for run in runs:
        assert run.wait(timeout=120) == 0, run.stderr.read()
        run.stderr.close()
    assert files(dataset / "data1") == files(dataset / "data2")


def test_parse_example_without_boxes_and_feature_spec_agree():
    import tensorflow as tf

    labels = ImageLabels("empty.jpg", 64, 48, np.zeros((0, 4)), (), ())
    serialized = build_example(jpeg(64, 48, 0), "jpeg", labels).SerializeToString()
    parsed = parse_example(serialized)
    assert parsed[IMAGE_FILENAME] == "empty.jpg" and parsed[IMAGE_WIDTH] == 64
    assert parsed[BBOX_XMIN].shape == (0,) and parsed[BBOX_XMIN].dtype == np.float32
    assert parsed[CLASS_LABEL].dtype == np.int64 and parsed[CLASS_TEXT].shape == (0,)
    assert example_boxes(parsed).shape == (0, 4)

    labels = ImageLabels("one.jpg", 64, 48, np.array([[8, 12, 32, 36]]), ("hand",), (1,))
    serialized = build_example(jpeg(64, 48, 1), "jpeg", labels).SerializeToString()
    parsed = parse_example(serialized)
    np.testing.assert_allclose(example_boxes(parsed), [[0.25, 0.125, 0.75, 0.5]])
    tf_parsed = tf.io.parse_single_example(serialized, feature_spec())
    assert tf.sparse.to_dense(tf_parsed[BBOX_YMAX]).numpy().tolist() == [0.75]
    assert tf_parsed[IMAGE_HEIGHT].numpy() == 48
