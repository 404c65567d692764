"""oxford_dataset_clean.py and utils/data/oxford.py: corners -> boxes, splits, carving, bad input, real data."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import scipy.io

import oxford_dataset_clean
from utils.common import config
from utils.data.oxford import carve_groups, corners_to_boxes, image_group, read_corners

PROG = "oxford_dataset_clean.py"


# ----------------------------------------------------------------------------- fabricated archives

def jpeg_bytes(width: int, height: int, seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def boxes_mat(boxes: list[list[tuple[float, float]]], extra_fields: bool = True, name: str = "boxes") -> bytes:
    """An annotation .mat as the official files hold it: a cell array of 1x1 structs a b c d, (y, x)."""
    cell = np.empty((1, len(boxes)), dtype=object)
    for i, corners in enumerate(boxes):
        record = {k: np.array([corner], dtype=np.float64) for k, corner in zip("abcd", corners, strict=True)}
        if extra_fields:
            record.update(handtype="R", truncated=np.array([[0]]))
        cell[0, i] = record
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {name: cell})
    return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# One rotated box (corners in (y, x)), one reaching past the right/bottom edge, one flat after clipping.
ROTATED = [(10.0, 20.0), (5.0, 30.0), (15.0, 40.0), (20.0, 30.0)]           # x 20..40, y 5..20
PAST_EDGE = [(40.0, 50.0), (40.0, 70.0), (60.0, 70.0), (60.0, 50.0)]       # 64x48 image: x 50..64, y 40..48
OUTSIDE = [(10.0, 70.0), (10.0, 80.0), (20.0, 80.0), (20.0, 70.0)]         # entirely right of the image
SIZE = (64, 48)

LAYOUT = {  # archive split -> {image stem: boxes}
    "training": {"Buffy_1": [ROTATED, PAST_EDGE], "Buffy_2": [ROTATED], "VOC2010_7": [ROTATED, OUTSIDE],
                 "Movie_boy_3": [PAST_EDGE], "Movie_boy_4": [ROTATED]},
    "validation": {"Inria_5": [ROTATED]},
    "test": {"Poselet_9": [PAST_EDGE, ROTATED]},
}


def make_archive(path: Path, layout=LAYOUT, mat=boxes_mat, image=None, top: str = "hand_dataset") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        add(tar, f"{top}/README", b"not used")
        for k, (split, images) in enumerate(layout.items()):
            folder = f"{top}/{split}_dataset/{split}_data"
            for i, (stem, boxes) in enumerate(images.items()):
                add(tar, f"{folder}/images/{stem}.jpg", image(stem) if image else jpeg_bytes(*SIZE, seed=10 * k + i))
                add(tar, f"{folder}/annotations/{stem}.mat", mat(boxes))
    return path


def run_clean(capsys, *args) -> tuple[int, str, str]:
    rc = oxford_dataset_clean.main([str(a) for a in (*args, "--no-progress")])
    out, err = capsys.readouterr()
    return rc, out, err


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"filename": str, "class": str, "source": str}, keep_default_na=False)


# ----------------------------------------------------------------------------- units

def test_corners_to_boxes_min_max_clip_and_drop():
    corners = np.array([ROTATED, PAST_EDGE, OUTSIDE, [(np.nan, 1.0)] * 4], dtype=np.float64)
    boxes, kept, clipped = corners_to_boxes(corners, *SIZE)
    assert kept.tolist() == [0, 1]  # the box right of the image and the NaN one are dropped
    assert boxes.tolist() == [[20.0, 5.0, 40.0, 20.0], [50.0, 40.0, 64.0, 48.0]]
    assert clipped == 1


def test_corners_are_y_then_x():
    boxes, _, _ = corners_to_boxes(np.array([[(1.0, 2.0), (1.0, 30.0), (9.0, 30.0), (9.0, 2.0)]]), 100, 100)
    assert boxes.tolist() == [[2.0, 1.0, 30.0, 9.0]]  # x from the 2nd coordinate


def test_boxes_rounded_to_a_tenth_of_a_pixel():
    boxes, _, _ = corners_to_boxes(np.array([[(1.04, 2.26), (1.04, 3.0), (4.0, 3.0), (4.0, 2.26)]]), 100, 100)
    assert boxes.tolist() == [[2.3, 1.0, 3.0, 4.0]]


def test_read_corners_reads_the_cell_array_and_complains_without_boxes():
    corners = read_corners(boxes_mat([ROTATED, PAST_EDGE]), "x.mat")
    assert corners.shape == (2, 4, 2) and corners[0].tolist() == [list(c) for c in ROTATED]
    assert read_corners(boxes_mat([ROTATED], extra_fields=False), "x.mat").shape == (1, 4, 2)
    with pytest.raises(Exception, match="x.mat: no variable 'boxes'"):
        read_corners(boxes_mat([ROTATED], name="polygons"), "x.mat")


def test_image_groups_and_carving_are_deterministic_whole_sources():
    assert image_group("Movie_4weds_12.jpg") == "Movie_4weds"
    assert image_group("Buffy_1") == "Buffy" and image_group("VOC2010_1257.jpg") == "VOC2010"
    names = [f"A_{i}" for i in range(50)] + [f"B_{i}" for i in range(10)] + [f"C_{i}" for i in range(40)]
    carved = carve_groups(names, 0.1, seed=0)
    assert carved == ["B"] and carve_groups(names, 0.1, seed=0) == carved
    assert carve_groups(names, 0.0) == [] and carve_groups(["A_1", "A_2"], 0.5) == []  # one source: none
    assert len(carve_groups(names, 0.95, seed=3)) < 3  # train always keeps a source


# ----------------------------------------------------------------------------- the CLI on fabricated archives

def test_official_layout_converts_with_its_own_splits(tmp_path, capsys):
    archive = make_archive(tmp_path / "hand_dataset.tar.gz")
    out = tmp_path / "out"
    rc, stdout, err = run_clean(capsys, "--archive", archive, "--output-dir", out)
    assert rc == 0, err
    train, evals, test = (read_csv(out / f"{s}_labels.csv") for s in ("train", "eval", "test"))
    assert list(train.columns) == [*config.LABELS_CSV_COLUMNS, "source"] and set(train["source"]) == {"oxford"}
    assert train["filename"].tolist() == ["Buffy_1.jpg", "Buffy_1.jpg", "Buffy_2.jpg", "VOC2010_7.jpg",
                                          "Movie_boy_3.jpg", "Movie_boy_4.jpg"]
    assert train[["xmin", "ymin", "xmax", "ymax"]].to_numpy().tolist()[:2] == [[20, 5, 40, 20], [50, 40, 64, 48]]
    assert evals["filename"].tolist() == ["Inria_5.jpg"]                       # validation -> eval
    assert test["filename"].tolist() == ["Poselet_9.jpg", "Poselet_9.jpg"]     # test -> test
    assert sorted(p.name for p in (out / "images" / "test").iterdir()) == ["Poselet_9.jpg"]
    with tarfile.open(archive) as tar:  # bytes copied, not re-encoded
        original = tar.extractfile("hand_dataset/test_dataset/test_data/images/Poselet_9.jpg").read()
    assert (out / "images" / "test" / "Poselet_9.jpg").read_bytes() == original
    assert "dropped (no width or height): 1" in stdout and "clipped to the image: 3" in stdout


def test_missing_splits_are_reported_and_eval_carved_by_source(tmp_path, capsys):
    archive = make_archive(tmp_path / "train_only.tar.gz", {"training": LAYOUT["training"]})
    out = tmp_path / "out"
    rc, stdout, err = run_clean(capsys, "--archive", archive, "--output-dir", out, "--carve-eval", "0.4")
    assert rc == 0, err
    assert "no validation, test split" in stdout
    evals = read_csv(out / "eval_labels.csv")
    groups = {image_group(f) for f in evals["filename"]}
    train_groups = {image_group(f) for f in read_csv(out / "train_labels.csv")["filename"]}
    assert groups and not groups & train_groups  # whole sources moved
    assert sorted(p.name for p in (out / "images" / "eval").iterdir()) == sorted(set(evals["filename"]))
    assert read_csv(out / "test_labels.csv").empty


def test_limit_keeps_the_first_images_of_each_split(tmp_path, capsys):
    archive = make_archive(tmp_path / "a.tar.gz")
    rc, _, err = run_clean(capsys, "--archive", archive, "--output-dir", tmp_path / "out", "--limit", "2")
    assert rc == 0, err
    assert read_csv(tmp_path / "out" / "train_labels.csv")["filename"].unique().tolist() == ["Buffy_1.jpg",
                                                                                            "Buffy_2.jpg"]


# ----------------------------------------------------------------------------- bad input

def previous_outputs(out: Path) -> dict[str, bytes]:
    (out / "images" / "train").mkdir(parents=True)
    (out / "images" / "train" / "old.jpg").write_bytes(b"old image")
    (out / "train_labels.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\nold.jpg,1,1,hand,0,0,1,1\n")
    return snapshot(out)


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def truncated(tmp_path: Path) -> Path:
    whole = make_archive(tmp_path / "whole.tar.gz").read_bytes()
    path = tmp_path / "truncated.tar.gz"
    path.write_bytes(whole[:len(whole) // 2])
    return path


BAD_ARCHIVES = {
    "truncated": (truncated, "truncated or corrupt archive"),
    "mat without boxes": (lambda t: make_archive(t / "a.tar.gz", mat=lambda b: boxes_mat(b, name="other")),
                          "no variable 'boxes'"),
    "corrupt mat": (lambda t: make_archive(t / "a.tar.gz", mat=lambda b: b"MATLAB 5.0 garbage"),
                    "cannot read the MATLAB file"),
    "corrupt image": (lambda t: make_archive(t / "a.tar.gz", image=lambda s: jpeg_bytes(*SIZE)[:300]),
                      "re-download the archive"),
    "not a jpeg": (lambda t: make_archive(t / "a.tar.gz", image=lambda s: b"GIF89a..."),
                   "not a JPEG"),
    "wrong layout": (lambda t: make_archive(t / "a.tar.gz", {"train": LAYOUT["training"]}),
                     "is this the Oxford Hands hand_dataset.tar.gz"),
    "not an archive": (lambda t: (t / "a.tar.gz").write_bytes(b"hello") and t / "a.tar.gz",
                       "truncated or corrupt archive"),
    "no such file": (lambda t: t / "absent.tar.gz", "no such file"),
}


@pytest.mark.parametrize("case", list(BAD_ARCHIVES))
def test_bad_archive_is_one_line_and_keeps_earlier_outputs(case, tmp_path, capsys):
    make, message = BAD_ARCHIVES[case]
    archive = make(tmp_path)
    out = tmp_path / "out"
    before = previous_outputs(out)
    rc, _, err = run_clean(capsys, "--archive", archive, "--output-dir", out)
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"{PROG}: error: "), err
    assert message in err and str(archive) in err, err
    assert snapshot(out) == before  # nothing half-written, nothing lost


def test_image_without_annotation_is_named(tmp_path, capsys):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add(tar, "hand_dataset/training_dataset/training_data/images/Buffy_1.jpg", jpeg_bytes(*SIZE))
    rc, _, err = run_clean(capsys, "--archive", archive, "--output-dir", tmp_path / "out")
    assert rc == 2 and "Buffy_1.jpg (train) has no annotations/Buffy_1.mat" in err, err


# ----------------------------------------------------------------------------- the real archive

@pytest.fixture(scope="module")
def oxford_archive() -> Path:
    if not config.SHARED_OXFORD_ARCHIVE.exists():
        pytest.skip(f"Oxford Hands archive not found at {config.SHARED_OXFORD_ARCHIVE}: put the shared data beside "
                    "the checkout or set HANDTRACK_SHARED_DIR")
    return config.SHARED_OXFORD_ARCHIVE


def test_real_archive_gives_exactly_the_shared_boxes(oxford_archive, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = run_clean(capsys, "--archive", oxford_archive, "--output-dir", out, "--carve-eval", "0.1")
    assert rc == 0, err
    ours = pd.concat([read_csv(out / f"{s}_labels.csv") for s in ("train", "eval", "test")])
    reference = pd.read_csv(config.SHARED_OXFORD_LABELS, dtype={"filename": str, "class": str})
    assert len(ours) == len(reference) == 10998
    ours = ours.sort_values("filename", kind="stable").reset_index(drop=True)
    reference = reference.sort_values("filename", kind="stable").reset_index(drop=True)
    columns = ["filename", "width", "height", "class"]
    assert ours[columns].to_numpy().tolist() == reference[columns].to_numpy().tolist()
    boxes = ["xmin", "ymin", "xmax", "ymax"]
    assert np.abs(ours[boxes].to_numpy() - reference[boxes].to_numpy()).max() < 0.05  # the same to 0.1 px
    assert set(ours["source"]) == {"oxford"}
    assert "no validation, test split" in stdout
    evals = read_csv(out / "eval_labels.csv")
    assert 0.05 < evals["filename"].nunique() / 4805 < 0.15
    assert not {image_group(f) for f in evals["filename"]} & {image_group(f) for f in
                                                              read_csv(out / "train_labels.csv")["filename"]}
    assert sum(1 for _ in (out / "images").rglob("*.jpg")) == 4805
