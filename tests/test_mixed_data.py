"""Mixed sources end to end: mix_datasets.py on the real EgoHands sample + Oxford copy + a VOC folder,
generate_tfrecord.py (image/source in every record), evaluate.py's per-source rows, `make data` wiring."""
from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import evaluate
import generate_tfrecord
import mix_datasets
from tests.test_labels_import import make_voc
from utils.common import config
from utils.data.sources import SourceSpecError, parse_source, parse_sources
from utils.data.tfrecord import IMAGE_FILENAME, IMAGE_SOURCE, read_examples, record_files

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def oxford_archive() -> Path:
    if not config.SHARED_OXFORD_ARCHIVE.exists():
        pytest.skip(f"Oxford Hands archive not found at {config.SHARED_OXFORD_ARCHIVE}: put the shared data beside "
                    "the checkout or set HANDTRACK_SHARED_DIR")
    return config.SHARED_OXFORD_ARCHIVE


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"filename": str, "class": str, "source": str}, keep_default_na=False)


def test_source_specs():
    assert parse_source("oxford").kind == "oxford" and parse_source("oxford").path is None
    spec = parse_source("kitchen=voc:labels/kitchen")
    assert (spec.kind, spec.name, spec.path) == ("voc", "kitchen", Path("labels/kitchen"))
    assert parse_source("coco:a/b.json").name == "coco"
    for bad, message in (("imagenet", "expected egohands, oxford"), ("voc", "voc needs a path")):
        with pytest.raises(SourceSpecError, match=message):
            parse_source(bad)
    with pytest.raises(SourceSpecError, match="names source 'voc' twice"):
        parse_sources(["voc:a", "voc:b"])


def test_make_data_runs_the_mixer_for_several_sources_and_the_cleaner_for_egohands():
    mixed = subprocess.run(["make", "-n", "data", "DATASETS=egohands oxford voc:my", "EGOHANDS_ZIP=e.zip",
                            "OXFORD_ARCHIVE=o.tar.gz", "DATA_ARGS=--carve-eval 0.1"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout
    assert "mix_datasets.py egohands oxford voc:my --egohands-zip e.zip" in mixed
    assert "--oxford-archive o.tar.gz --carve-eval 0.1" in mixed and "generate_tfrecord.py" in mixed
    single = subprocess.run(["make", "-n", "data", "EGOHANDS_ZIP=e.zip"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    assert "egohands_dataset_clean.py --zip e.zip" in single and "mix_datasets.py" not in single


def test_mixed_sources_keep_their_source_through_csv_and_records(egohands_sample_zip, oxford_archive, model_dir,
                                                                 tmp_path, capsys, monkeypatch):
    make_voc(tmp_path / "voc")
    out = tmp_path / "mixed"
    rc = mix_datasets.main(["egohands", "oxford", f"mine=voc:{tmp_path / 'voc'}", "--egohands-zip",
                            str(egohands_sample_zip), "--oxford-archive", str(oxford_archive), "--carve-eval", "0.1",
                            "--category", "hand", "--output-dir", str(out), "--no-progress"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    frames = {s: read_csv(out / f"{s}_labels.csv") for s in ("train", "test", "eval")}
    everything = pd.concat(frames.values())
    assert Counter(everything["source"]) == {"egohands": 501, "oxford": 10998, "mine": 4}
    for source, rows in everything.groupby("source"):  # file names prefixed by source: no collisions
        assert rows["filename"].str.startswith(f"{source}_").all()
    assert set(frames["test"]["source"]) >= {"egohands"} and "oxford" in set(frames["eval"]["source"])
    for split, df in frames.items():  # every image listed is there, under its split
        assert set(df["filename"]) <= {p.name for p in (out / "images" / split).iterdir()}
    assert "eval carved from training" in stdout

    # Records of the small splits: every example carries its CSV source in image/source.
    rc = generate_tfrecord.main(["--input-dir", str(out), "--output-dir", str(out / "data"), "--splits", "test",
                                 "eval", "--no-progress"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    for split in ("test", "eval"):
        csv_source = dict(zip(frames[split]["filename"], frames[split]["source"], strict=True))
        records = {e[IMAGE_FILENAME]: e[IMAGE_SOURCE] for e in read_examples(record_files(out / "data", split))}
        assert records == csv_source

    # `make eval EVAL_SPLIT="test eval"`: the splits pooled, one row per source and split (EgoHands' test
    # video, Oxford's carved sources, a VOC source's test and eval files) with its own images.
    monkeypatch.setattr(config, "ROOT", out)
    monkeypatch.setattr(config, "IMAGES_DIR", out / "images")
    rc = evaluate.main(["--model", str(model_dir), "--split", "test", "eval", "--output-dir", str(tmp_path),
                        "--no-progress"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    rows = {" ".join(line.split()[:2]): line.split()[2:] for line in stdout.splitlines()
            if line.split()[:1] in (["egohands"], ["oxford"], ["mine"])}
    expected = {f"{source} {split}": df for split in ("test", "eval") for source, df in frames[split].groupby("source")}
    assert set(rows) == set(expected)
    for key, df in expected.items():
        assert int(rows[key][0]) == df["filename"].nunique() and int(rows[key][1]) == len(df)
    assert float(rows["egohands test"][2]) > 0.9  # the pretrained model on the egocentric test video
    assert len(list(tmp_path.glob("eval_*_test_eval.json"))) == 1


def test_old_csv_without_source_reads_as_egohands(tmp_path, capsys):
    from utils.data.tfrecord import read_labels_csv
    from utils.evaluation.samples import csv_samples

    (tmp_path / "x").mkdir()
    old_header = ",".join(config.LABELS_CSV_COLUMNS)
    (tmp_path / "train_labels.csv").write_text(f"{old_header}\na.jpg,8,8,hand,1,1,4,4\n")
    assert read_labels_csv(tmp_path / "train_labels.csv", {"hand": 1})[0].source == "egohands"
    (tmp_path / "x" / "a.jpg").write_bytes(b"")
    assert csv_samples(tmp_path / "train_labels.csv", tmp_path / "x")[0].source == "egohands"


def test_evaluate_prints_one_row_per_source_and_the_total(model_dir, egohands_sample_zip, egohands_sample_labels,
                                                          tmp_path, capsys):
    """The CHESS frames labelled as two sources: each row and the total are pycocotools' figures."""
    labels = pd.read_csv(egohands_sample_labels)
    labels = labels[labels["filename"].str.startswith("CHESS_COURTYARD_B_T/")].copy()
    frames = sorted(labels["filename"].unique())
    labels["source"] = ["early" if frames.index(f) < 20 else "late" for f in labels["filename"]]
    labels = labels[labels["filename"].isin(frames[:20] + frames[-20:])]
    labels.to_csv(tmp_path / "two.csv", index=False)
    rc = evaluate.main(["--model", str(model_dir), "--labels", str(tmp_path / "two.csv"), "--images",
                        str(egohands_sample_zip), "--output-dir", str(tmp_path), "--name", "two", "--no-progress"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    rows = {line.split()[0]: line.split() for line in stdout.splitlines() if line.split()[:1] in (["early"], ["late"],
                                                                                                  ["total"])}
    assert rows["early"][1] == "20" and rows["late"][1] == "20" and rows["total"][1] == "40"
    assert int(rows["early"][2]) + int(rows["late"][2]) == int(rows["total"][2]) == len(labels)
    assert all(float(rows[k][3]) > 0.9 for k in rows)  # the pretrained model finds these hands (AP@0.5)
