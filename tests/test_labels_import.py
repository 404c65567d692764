"""labels_import.py, utils/data/voc.py, coco.py, annotated.py: your own labels -> images + CSVs; bad input."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import labels_import
from utils.common import config

PROG = "labels_import.py"
SIZE = (80, 60)  # width, height of every fixture image

# image stem -> [(category, xmin, ymin, xmax, ymax)]
LABELS = {
    "img_a": [("hand", 10, 5, 30, 25), ("face", 40, 10, 70, 50)],
    "img_b": [("hand", 0, 0, 80, 60)],
    "img_c": [("face", 5, 5, 20, 20)],             # no hand: left out with --category hand
    "img_d": [("hand", 12.5, 7.25, 20.5, 30.0), ("hand", 50, 40, 60, 59)],
}


def write_jpeg(path: Path, seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path.read_bytes()


def voc_xml(filename: str, objects, size=SIZE) -> str:
    body = "".join(f"<object><name>{c}</name><pose>Unspecified</pose><difficult>0</difficult><bndbox>"
                   f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
                   for c, x0, y0, x1, y1 in objects)
    return (f"<annotation><folder>JPEGImages</folder><filename>{filename}</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size>{body}</annotation>")


def make_voc(root: Path, labels=LABELS) -> Path:
    """The Pascal VOC layout: Annotations/*.xml beside JPEGImages/*.jpg (real JPEGs written by OpenCV)."""
    for i, (stem, objects) in enumerate(labels.items()):
        write_jpeg(root / "JPEGImages" / f"{stem}.jpg", i)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", objects))
    return root / "Annotations"


def make_coco(root: Path, labels=LABELS) -> Path:
    """A COCO detection json with its images beside it in images/."""
    categories = sorted({o[0] for objects in labels.values() for o in objects})
    data = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(categories)]}
    for i, (stem, objects) in enumerate(labels.items(), 1):
        write_jpeg(root / "images" / f"{stem}.jpg", i)
        data["images"].append({"id": i, "file_name": f"images/{stem}.jpg", "width": SIZE[0], "height": SIZE[1]})
        for c, x0, y0, x1, y1 in objects:
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": i, "iscrowd": 0,
                                        "category_id": categories.index(c) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0]})
    data["annotations"].append({"id": 99, "image_id": 1, "iscrowd": 1, "category_id": 1, "bbox": [0, 0, 1, 1],
                                "segmentation": {"counts": [], "size": [SIZE[1], SIZE[0]]}})  # crowd: skipped
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path


def run_import(capsys, *args) -> tuple[int, str, str]:
    rc = labels_import.main([str(a) for a in (*args, "--no-progress")])
    out, err = capsys.readouterr()
    return rc, out, err


def all_rows(out: Path) -> dict[str, pd.DataFrame]:
    return {s: pd.read_csv(out / f"{s}_labels.csv", dtype={"filename": str, "class": str, "source": str})
            for s in ("train", "test", "eval")}


def expected_hand_rows(prefix: str = "") -> list[tuple]:
    return sorted((f"{prefix}{stem}.jpg", SIZE[0], SIZE[1], "hand", float(x0), float(y0), float(x1), float(y1))
                  for stem, objects in LABELS.items() for c, x0, y0, x1, y1 in objects if c == "hand")


def boxes_of(frames: dict[str, pd.DataFrame], source: str) -> list[tuple]:
    df = pd.concat(frames.values())
    assert set(df["source"]) == {source}
    return sorted((r.filename, r.width, r.height, r[3], float(r.xmin), float(r.ymin), float(r.xmax), float(r.ymax))
                  for r in df.itertuples(index=False))


# ----------------------------------------------------------------------------- good input

@pytest.mark.parametrize("fmt", ["voc", "coco"])
def test_import_keeps_the_category_and_copies_images(fmt, tmp_path, capsys):
    labels = make_voc(tmp_path / "voc") if fmt == "voc" else make_coco(tmp_path / "coco")
    out = tmp_path / "out"
    rc, stdout, err = run_import(capsys, f"--{fmt}", labels, "--category", "hand", "--output-dir", out)
    assert rc == 0, err
    frames = all_rows(out)
    assert list(frames["train"].columns) == [*config.LABELS_CSV_COLUMNS, "source"]
    prefix = "images_" if fmt == "coco" else ""  # COCO file_name images/x.jpg -> images_x.jpg
    assert boxes_of(frames, fmt) == expected_hand_rows(prefix)
    assert "1 image(s) without a box of the kept categories left out" in stdout
    written = {p.name: p.read_bytes() for p in (out / "images").rglob("*.jpg")}
    assert sorted(written) == sorted({r[0] for r in expected_hand_rows(prefix)})  # img_c is not copied
    source_dir = tmp_path / fmt / ("JPEGImages" if fmt == "voc" else "images")
    assert all(written[name] == (source_dir / name.removeprefix(prefix)).read_bytes() for name in written)


def test_all_categories_and_own_classes_and_source(tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = run_import(capsys, "--voc", make_voc(tmp_path / "voc"), "--keep-classes", "--source", "kitchen",
                            "--output-dir", out)
    assert rc == 0, err
    df = pd.concat(all_rows(out).values())
    assert set(df["source"]) == {"kitchen"} and sorted(df["class"]) == ["face", "face", "hand", "hand", "hand", "hand"]


def test_split_by_user_lists(tmp_path, capsys):
    (tmp_path / "test.txt").write_text("# held out\nimg_b\n")
    (tmp_path / "eval.txt").write_text("img_d.jpg\n")
    out = tmp_path / "out"
    rc, _, err = run_import(capsys, "--voc", make_voc(tmp_path / "voc"), "--output-dir", out,
                            "--test-list", tmp_path / "test.txt", "--eval-list", tmp_path / "eval.txt")
    assert rc == 0, err
    frames = all_rows(out)
    assert set(frames["test"]["filename"]) == {"img_b.jpg"} and set(frames["eval"]["filename"]) == {"img_d.jpg"}
    assert set(frames["train"]["filename"]) == {"img_a.jpg", "img_c.jpg"}  # the rest


def test_split_by_file_is_seeded_and_whole(tmp_path, capsys):
    labels = {f"im_{i:02d}": [("hand", 1, 1, 10, 10), ("hand", 20, 20, 30, 30)] for i in range(20)}
    voc = make_voc(tmp_path / "voc", labels)
    splits = []
    for run in range(2):
        out = tmp_path / f"out{run}"
        rc, _, err = run_import(capsys, "--voc", voc, "--output-dir", out, "--seed", "3")
        assert rc == 0, err
        splits.append({s: sorted(set(df["filename"])) for s, df in all_rows(out).items()})
    assert splits[0] == splits[1]
    assert [len(splits[0][s]) for s in ("train", "test", "eval")] == [16, 2, 2]  # 80/10/10 of the files
    assert not set(splits[0]["train"]) & set(splits[0]["test"])


# ----------------------------------------------------------------------------- bad input

def break_xml(root, voc):
    (voc / "img_a.xml").write_text("<annotation><filename>img_a.jpg</filename><size>")


def box_outside(root, voc):
    (voc / "img_a.xml").write_text(voc_xml("img_a.jpg", [("hand", 10, 5, 81, 25)]))


def box_inverted(root, voc):
    (voc / "img_a.xml").write_text(voc_xml("img_a.jpg", [("hand", 30, 5, 30, 25)]))


def box_not_a_number(root, voc):
    (voc / "img_a.xml").write_text(voc_xml("img_a.jpg", [("hand", "ten", 5, 30, 25)]))


def image_missing(root, voc):
    (root / "JPEGImages" / "img_b.jpg").unlink()


def image_truncated(root, voc):
    path = root / "JPEGImages" / "img_b.jpg"
    path.write_bytes(path.read_bytes()[:-50])  # the end of the scan and the end marker gone


def image_not_an_image(root, voc):
    (root / "JPEGImages" / "img_b.jpg").write_text("hello")


def image_other_size(root, voc):
    (voc / "img_a.xml").write_text(voc_xml("img_a.jpg", [("hand", 1, 1, 5, 5)], size=(100, 60)))


VOC_CASES = {
    "malformed xml": (break_xml, None, "img_a.xml: malformed XML"),
    "box outside the image": (box_outside, None, "img_a.xml: box 1 (xmin 10, ymin 5, xmax 81, ymax 25) is not inside"),
    "xmin >= xmax": (box_inverted, None, "img_a.xml: box 1 (xmin 30"),
    "not a number": (box_not_a_number, None, "<xmin> is 'ten', not a number"),
    "missing image": (image_missing, None, "img_b.jpg: cannot read the image named in"),
    "truncated image": (image_truncated, None, "img_b.jpg: JPEG is truncated"),
    "not an image": (image_not_an_image, None, "img_b.jpg: not a JPEG or PNG image"),
    "size differs": (image_other_size, None, "img_a.jpg: image is 80x60 but"),
    "unknown category": (None, ["hands"], "unknown category 'hands'; the labels have face, hand"),
}


def previous_outputs(out: Path) -> dict[str, bytes]:
    (out / "images" / "train").mkdir(parents=True)
    (out / "images" / "train" / "old.jpg").write_bytes(b"old image")
    (out / "train_labels.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\nold.jpg,1,1,hand,0,0,1,1\n")
    return snapshot(out)


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def check_one_line_and_untouched(rc: int, err: str, message: str, out: Path, before: dict) -> None:
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"{PROG}: error: "), err
    assert message in err, err
    assert snapshot(out) == before


@pytest.mark.parametrize("case", list(VOC_CASES))
def test_bad_voc_input_is_one_line_and_keeps_earlier_outputs(case, tmp_path, capsys):
    damage, categories, message = VOC_CASES[case]
    voc = make_voc(tmp_path / "voc")
    if damage:
        damage(tmp_path / "voc", voc)
    out = tmp_path / "out"
    before = previous_outputs(out)
    flags = [f for c in categories or [] for f in ("--category", c)]
    rc, _, err = run_import(capsys, "--voc", voc, "--output-dir", out, *flags)
    check_one_line_and_untouched(rc, err, message, out, before)


def coco_edit(edit):
    def damage(path: Path) -> None:
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return damage


COCO_CASES = {
    "malformed json": (lambda p: p.write_text('{"images": ['), "instances.json: malformed JSON"),
    "not coco": (lambda p: p.write_text('{"info": {}}'), "no 'images', 'annotations', 'categories' list"),
    "box outside": (coco_edit(lambda d: d["annotations"][0].update(bbox=[70, 5, 20, 20])), "box 1 (xmin 70"),
    "zero width": (coco_edit(lambda d: d["annotations"][0].update(bbox=[10, 5, 0, 20])), "is not inside"),
    "bad bbox": (coco_edit(lambda d: d["annotations"][0].update(bbox=[10, 5])), "is not [x, y, width, height]"),
    "unknown image": (coco_edit(lambda d: d["annotations"][0].update(image_id=77)), "image_id 77 is not in 'images'"),
    "unknown category id": (coco_edit(lambda d: d["annotations"][0].update(category_id=9)),
                            "category_id 9 is not in 'categories'"),
    "missing image": (lambda p: (p.parent / "images" / "img_a.jpg").unlink(), "img_a.jpg: cannot read the image"),
    "corrupt image": (lambda p: (p.parent / "images" / "img_a.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage"),
                      "img_a.jpg: corrupt JPEG"),
}


@pytest.mark.parametrize("case", list(COCO_CASES))
def test_bad_coco_input_is_one_line_and_keeps_earlier_outputs(case, tmp_path, capsys):
    damage, message = COCO_CASES[case]
    path = make_coco(tmp_path / "coco")
    damage(path)
    out = tmp_path / "out"
    before = previous_outputs(out)
    rc, _, err = run_import(capsys, "--coco", path, "--output-dir", out)
    check_one_line_and_untouched(rc, err, message, out, before)


def test_unknown_coco_category_and_list_entry(tmp_path, capsys):
    path = make_coco(tmp_path / "coco")
    out = tmp_path / "out"
    before = previous_outputs(out)
    rc, _, err = run_import(capsys, "--coco", path, "--output-dir", out, "--category", "foot")
    check_one_line_and_untouched(rc, err, "unknown category 'foot'", out, before)
    (tmp_path / "test.txt").write_text("img_z\n")
    rc, _, err = run_import(capsys, "--coco", path, "--output-dir", out, "--test-list", tmp_path / "test.txt")
    check_one_line_and_untouched(rc, err, "--test-list: unknown image 'img_z'", out, before)
