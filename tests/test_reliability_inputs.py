"""Bad inputs a new user hands the importers, train.py and the Python API (issue 28): each is one line and exit
status 2 (or a UserError from the API), nothing is written, and no earlier output is replaced, least of all by
an empty one. The importers run in-process on real JPEGs; train.py and the archive mix-ups as real commands."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import labels_import
import mix_datasets
import oxford_dataset_clean
from utils.common.checks import checked_number, number_arg
from utils.common.errors import EXIT_BAD_INPUT, UserError
from utils.data.splits import OutputNames, name_problem
from utils.runtime.detector import Detections, select_detections
from utils.runtime.tracking import HandTracker
from utils.train.cluster import ClusterError, parse_tf_config

ROOT = Path(__file__).resolve().parent.parent


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def jpeg(path: Path, width: int = 64, height: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(len(str(path))).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)  # written by Python: OpenCV cannot take a non-UTF-8 path
    assert ok
    path.write_bytes(data.tobytes())
    return path


def voc_xml(folder: Path, image: str, objects: list[tuple[str, tuple]] | None = None, size: tuple = (64, 48)) -> Path:
    objects = [("hand", (4, 4, 30, 30))] if objects is None else objects
    body = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    path = folder / (Path(image).stem + ".xml")
    path.write_text(f"<annotation><filename>{image}</filename><size><width>{size[0]}</width>"
                    f"<height>{size[1]}</height></size>{body}</annotation>")
    return path


def coco_json(path: Path, images: list[tuple[int, str]], annotations: list | None = None,
              categories: list | None = None) -> Path:
    data = {"images": [{"id": i, "file_name": name, "width": 64, "height": 48} for i, name in images],
            "annotations": [{"id": k, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20]}
                            for k, (i, _) in enumerate(images)] if annotations is None else annotations,
            "categories": categories or [{"id": 1, "name": "hand"}]}
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def earlier(tmp_path) -> Path:
    """An output folder holding a good earlier import (what a bad run must leave as it was)."""
    labels = tmp_path / "good"
    labels.mkdir()
    for k in range(3):
        jpeg(labels / f"good{k}.jpg")
        voc_xml(labels, f"good{k}.jpg")
    out = tmp_path / "out"
    assert labels_import.main(["--voc", str(labels), "--output-dir", str(out), "--no-progress"]) == 0
    return out


def refused(code: int, capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_BAD_INPUT and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- output names

@pytest.mark.parametrize("names", [[(1, "a/x.jpg"), (2, "a_x.jpg")], [(1, "x.jpg"), (2, "x.jpg")]],
                         ids=["flatten-to-one", "one-file-two-ids"])
def test_two_coco_images_with_one_output_name_are_refused(names, earlier, tmp_path, capsys):
    for _, name in names:
        jpeg(tmp_path / "coco" / name)
    before = tree(earlier)
    code = labels_import.main(["--coco", str(coco_json(tmp_path / "coco" / "ann.json", names)),
                               "--output-dir", str(earlier), "--no-progress"])
    refused(code, capsys, "a_x.jpg" if "a_x.jpg" in str(names) else "x.jpg", "rename one of the two images")
    assert tree(earlier) == before


def test_output_names_stay_inside_the_folder_and_readable():
    outputs = OutputNames()
    for bad in ["..", ".hidden.jpg", "a/b.jpg", "", "caf\udce9.jpg"]:
        assert name_problem(bad) is not None, bad
        with pytest.raises(UserError):
            outputs.claim(bad, "here")
    outputs.claim("x.jpg", "first", "train")
    outputs.claim("x.jpg", "an archive's test copy", "test")  # another split's folder: no clash on disk
    with pytest.raises(UserError, match="also first's"):
        outputs.claim("x.jpg", "second", "train")


def test_a_non_utf8_folder_name_is_one_line_and_a_new_output_dir_is_left_out(tmp_path, capsys):
    session = tmp_path / "labels" / os.fsdecode(b"sess\xe9")  # a Latin-1 name: part of the output name
    session.mkdir(parents=True)
    jpeg(session / "a.jpg")
    voc_xml(session, "a.jpg")
    out = tmp_path / "new" / "out"
    code = labels_import.main(["--voc", str(tmp_path / "labels"), "--output-dir", str(out), "--no-progress"])
    refused(code, capsys, "is not valid UTF-8", "rename")
    assert not (tmp_path / "new").exists()


def test_a_non_utf8_output_dir_is_written(tmp_path, capsys):
    labels = tmp_path / "labels"
    labels.mkdir()
    jpeg(labels / "a.jpg")
    voc_xml(labels, "a.jpg")
    out = tmp_path / os.fsdecode(b"out\xff")
    assert labels_import.main(["--voc", str(labels), "--output-dir", str(out), "--no-progress"]) == 0, \
        capsys.readouterr().err
    assert (out / "train_labels.csv").read_text().count("\n") == 2


# ----------------------------------------------------------------------------- nothing kept

def test_an_import_that_keeps_no_box_writes_nothing(earlier, tmp_path, capsys):
    before = tree(earlier)
    voc = tmp_path / "stripped"
    voc.mkdir()
    jpeg(voc / "a.jpg")
    voc_xml(voc, "a.jpg", objects=[])
    refused(labels_import.main(["--voc", str(voc), "--output-dir", str(earlier), "--no-progress"]), capsys,
            "no image with a box", "earlier images and CSVs are kept")
    jpeg(tmp_path / "coco" / "a.jpg")
    refused(labels_import.main(["--coco", str(coco_json(tmp_path / "coco" / "a.json", [(1, "a.jpg")], [])),
                                "--output-dir", str(earlier), "--no-progress"]), capsys, "no image with a box")
    refused(mix_datasets.main([f"voc:{voc}", "--output-dir", str(earlier), "--no-progress"]), capsys,
            "gave no image with a box")
    assert tree(earlier) == before


# ----------------------------------------------------------------------------- malformed labels

@pytest.mark.parametrize("width", ["inf", "nan", "-inf"])
def test_a_voc_size_that_is_not_finite_is_one_line(width, tmp_path, capsys):
    jpeg(tmp_path / "a.jpg")
    xml = voc_xml(tmp_path, "a.jpg")
    xml.write_text(xml.read_text().replace("<width>64</width>", f"<width>{width}</width>"))
    refused(labels_import.main(["--voc", str(tmp_path), "--output-dir", str(tmp_path / "out")]), capsys,
            f"<size/width> is '{width}', not a finite number")
    assert not (tmp_path / "out").exists()


def test_a_deeply_nested_coco_json_is_one_line(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    refused(labels_import.main(["--coco", str(path), "--output-dir", str(tmp_path / "out")]), capsys,
            "nested too deeply")


def test_a_repeated_coco_category_id_is_refused(tmp_path, capsys):
    jpeg(tmp_path / "a.jpg")
    path = coco_json(tmp_path / "a.json", [(1, "a.jpg")], categories=[{"id": 1, "name": "hand"},
                                                                       {"id": 1, "name": "face"}])
    refused(labels_import.main(["--coco", str(path), "--output-dir", str(tmp_path / "out")]), capsys,
            "categories[1]", "category id 1 repeats")


# ----------------------------------------------------------------------------- archives and hints

def run_script(*argv: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "MAKELEVEL"} | env
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=300)


def test_one_archive_given_for_the_other_says_so(egohands_sample_zip, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAKELEVEL", raising=False)  # run directly, as `make test` is not: the hint names the flag
    code = oxford_dataset_clean.main(["--archive", str(egohands_sample_zip), "--output-dir", str(tmp_path / "o"),
                                      "--no-progress"])
    refused(code, capsys, "a zip archive, not the Oxford Hands tar.gz", "--archive")
    tarball = tmp_path / "hand_dataset.tar.gz"
    subprocess.run(["tar", "czf", str(tarball), "-C", str(tmp_path), "o"], check=False)
    if not tarball.exists():
        tarball.write_bytes(b"\x1f\x8b\x08\x00" + bytes(60))
    code = mix_datasets.main(["egohands", "--egohands-zip", str(tarball), "--output-dir", str(tmp_path / "m"),
                              "--no-progress"])
    refused(code, capsys, "a gzip archive, not the EgoHands zip", "--egohands-zip")


def test_a_missing_zip_names_the_flag_of_the_command_used(tmp_path):
    missing = tmp_path / "nowhere.zip"
    result = run_script("mix_datasets.py", "egohands", "--egohands-zip", str(missing), "--output-dir",
                        str(tmp_path / "m"))
    assert result.returncode == EXIT_BAD_INPUT and result.stderr.count("\n") == 1, result.stderr
    assert "--egohands-zip PATH" in result.stderr and "--zip " not in result.stderr.replace("-zip PATH", "")
    result = run_script("mix_datasets.py", "egohands", "--egohands-zip", str(missing), "--output-dir",
                        str(tmp_path / "m"), MAKELEVEL="1")
    assert result.returncode == EXIT_BAD_INPUT and "EGOHANDS_ZIP=PATH" in result.stderr, result.stderr


def test_train_py_run_directly_prints_only_its_own_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MAKELEVEL")}
    result = subprocess.run([sys.executable, "train.py", "--data-dir", str(tmp_path / "none"), "--run", "probe",
                             "--checkpoint-root", str(tmp_path / "runs")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.startswith("train.py: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("task", [{"type": ["worker"], "index": 0}, {"type": {"w": 1}}, {"type": None}])
def test_a_tf_config_task_type_that_is_not_a_name_is_refused(task):
    text = json.dumps({"cluster": {"worker": ["localhost:12345"]}, "task": task})
    with pytest.raises(ClusterError, match="task.type"):
        parse_tf_config(text)


def test_numeric_flags_refuse_nan_and_inf(tmp_path):
    for argv, flag in [(["detect_single_threaded.py", "--linger", "nan"], "--linger"),
                       (["detect_single_threaded.py", "--scorethreshold", "nan"], "--scorethreshold"),
                       (["train.py", "--cluster-timeout", "nan"], "--cluster-timeout"),
                       (["train.py", "--learning-rate", "inf"], "--learning-rate")]:
        result = run_script(*argv, "--display", "0") if "detect" in argv[0] else run_script(*argv)
        assert result.returncode == EXIT_BAD_INPUT and flag in result.stderr.splitlines()[-1], result.stderr
        assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- the Python API

def detections(n: int = 3) -> Detections:
    return Detections(np.tile([[0.1, 0.1, 0.5, 0.5]], (n, 1)).astype(np.float32),
                      np.linspace(0.9, 0.5, n).astype(np.float32), np.ones(n, np.int32))


@pytest.mark.parametrize("kwargs, needle", [({"max_hands": -1}, "max_hands is -1"),
                                            ({"max_hands": 1.5}, "max_hands is 1.5"),
                                            ({"min_score": math.nan}, "min_score is nan"),
                                            ({"min_score": 2}, "min_score is 2"),
                                            ({"max_hands": True}, "max_hands is True")])
def test_select_detections_refuses_what_means_nothing(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        select_detections(detections(), **kwargs)
    assert len(select_detections(detections(), min_score=0.0, max_hands=2).scores) == 2


@pytest.mark.parametrize("size", [(0, 0), (-640, 480), (640, math.nan), (640,), None])
def test_the_tracker_refuses_a_frame_without_size(size):
    tracker = HandTracker(fps=30)
    with pytest.raises(UserError, match="frame_size"):
        tracker.update(detections(), size)
    assert len(tracker.update(detections(), (640, 480)).scores) == 3  # the refused frame did not count


@pytest.mark.parametrize("kwargs", [{"fps": math.nan}, {"fps": 0}, {"max_miss_seconds": -1},
                                    {"score_thresh": math.inf}])
def test_the_tracker_refuses_settings_without_meaning(kwargs):
    with pytest.raises(UserError):
        HandTracker(**kwargs)


def test_the_number_check_itself():
    assert checked_number(3, "n", minimum=0, integer=True) == 3
    for value in (math.nan, math.inf, "3", None, True, -1):
        with pytest.raises(UserError, match="expected"):
            checked_number(value, "n", minimum=0)
    parse = number_arg(float, above=0)
    assert parse("0.5") == 0.5
    for text in ("nan", "inf", "0", "x"):
        with pytest.raises(Exception, match="expected"):
            parse(text)


def _detector(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "detect_single_threaded.py", "--display", "0", *argv], cwd=ROOT,
                          capture_output=True, text=True, errors="backslashreplace", timeout=120)


def test_a_video_name_opencv_cannot_take_is_one_line_not_a_crash(tmp_path, model_dir):
    """OpenCV's Python binding segfaults on a path that is not valid UTF-8 (VideoCapture, VideoWriter, imwrite):
    such a video source or --output is refused first; an image of such a name is read as bytes and works."""
    video = tmp_path / os.fsdecode(b"clip\xff.mp4")
    video.write_bytes(b"never opened")
    picture = jpeg(tmp_path / os.fsdecode(b"hand\xff.jpg"))
    for argv, option in [(["--source", str(video)], "--source"),
                         (["--source", str(picture), "--output", str(tmp_path / os.fsdecode(b"out\xff.mp4"))],
                          "--output")]:
        done = _detector(*argv, "--model", str(model_dir))
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == EXIT_BAD_INPUT and len(lines) == 1, done.stderr
        assert f"{option}: the name is not valid UTF-8" in lines[0] and "\\xff" in lines[0], lines[0]
    done = _detector("--source", str(picture), "--model", str(model_dir), "--json", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1
