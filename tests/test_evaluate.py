"""evaluate.py: COCO metrics of any exported model on labelled real frames, JSON + PR curve, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

import evaluate
from utils.common import config
from utils.evaluation.samples import EvalDataError, LabelledImage, choose_class_mode, csv_samples

CHESS = "CHESS_COURTYARD_B_T"


def test_pretrained_frozen_graph_on_chess(model_dir, egohands_sample_zip, egohands_sample_labels, tmp_path, capsys):
    code = evaluate.main(["--model", str(model_dir / config.FROZEN_GRAPH_NAME), "--labels", str(egohands_sample_labels),
                          "--images", str(egohands_sample_zip), "--only", CHESS, "--output-dir", str(tmp_path),
                          "--name", "chess", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "class-agnostic" in out  # a 1-class 'hand' model against myleft/.../yourright labels
    result = json.loads((tmp_path / "chess.json").read_text())
    assert result["images"] == 100 and result["ground_truth_boxes"] == 241 and result["class_agnostic"]
    assert result["AP50"] == pytest.approx(0.989, abs=0.005)  # the figure the training evaluator reproduces
    assert 0.6 < result["AP"] < result["AP50"] and 0.6 < result["AR100"] <= 1
    assert len(result["precision"]) == len(result["recall"]) == 101
    png = (tmp_path / "chess_pr.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_records_and_csv_give_the_same_metrics(model_dir, egohands_sample_zip, egohands_sample_labels, tmp_path,
                                               capsys):
    """TFRecords from generate_tfrecord.py and the CSV + images are two routes to one answer."""
    import egohands_dataset_clean
    import generate_tfrecord

    assert egohands_dataset_clean.main(["--zip", str(egohands_sample_zip), "--output-dir", str(tmp_path),
                                        "--train-videos", "CARDS_OFFICE_S_B", "--test-videos", CHESS,
                                        "--workers", "1", "--no-progress"]) == 0
    assert generate_tfrecord.main(["--input-dir", str(tmp_path), "--output-dir", str(tmp_path / "data"),
                                   "--splits", "test", "--workers", "1", "--no-progress"]) == 0
    model = str(model_dir / config.TFLITE_INT8_NAME)
    common = ["--model", model, "--output-dir", str(tmp_path / "results"), "--no-progress"]
    assert evaluate.main([*common, "--records", str(tmp_path / "data" / "test.record"), "--name", "rec"]) == 0
    assert evaluate.main([*common, "--labels", str(tmp_path / "test_labels.csv"), "--images",
                          str(tmp_path / "images" / "test"), "--name", "csv"]) == 0
    capsys.readouterr()
    rec, csv = (json.loads((tmp_path / "results" / f"{n}.json").read_text()) for n in ("rec", "csv"))
    assert rec["backend"] == "tflite" and not rec["class_agnostic"]  # 'hand' labels, 'hand' model
    for key in ("AP50", "AP", "AR100", "images", "ground_truth_boxes"):
        assert rec[key] == pytest.approx(csv[key], abs=1e-9)
    assert rec["AP50"] > 0.95


def test_class_mode():
    def sample(*names):
        return LabelledImage("x.jpg", 10, 10, np.zeros([len(names), 4]), list(names), lambda: None)

    four = {1: "myleft", 2: "myright", 3: "yourleft", 4: "yourright"}
    assert choose_class_mode([sample("myleft", "yourright")], four)[0] is False
    assert choose_class_mode([sample("hand")], four)[0] is True
    assert choose_class_mode([sample("myleft")], {1: "hand"})[0] is True


def test_missing_split_is_one_clear_error(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(config, "ROOT", tmp_path)
    monkeypatch.setattr(config, "DATA_DIR", tmp_path / "data")
    code = evaluate.main(["--model", str(model_dir), "--split", "nosuch", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no 'nosuch' split" in err and "make data" in err
    assert not list(tmp_path.glob("*.json"))


def test_empty_labels_say_so(model_dir, tmp_path, capsys):
    (tmp_path / "eval_labels.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n")
    code = evaluate.main(["--model", str(model_dir), "--labels", str(tmp_path / "eval_labels.csv"), "--images",
                          str(tmp_path), "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no labelled images" in err


def test_missing_image_names_it(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\ngone.jpg,10,10,hand,1,1,5,5\n")
    with pytest.raises(EvalDataError, match="gone.jpg: image listed in the labels is missing"):
        csv_samples(labels, tmp_path)


def test_missing_model_is_one_clear_error(tmp_path, egohands_sample_labels, egohands_sample_zip, capsys):
    code = evaluate.main(["--model", str(tmp_path / "nothing.tflite"), "--labels", str(egohands_sample_labels),
                          "--images", str(egohands_sample_zip), "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nothing.tflite" in err
