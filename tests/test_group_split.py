"""Splitting by group (capture session, video): labels_import.py --group-by / --group-pattern, mix_datasets.py
--group-by, utils.data.splits.split_weighted_groups. Frames of one session never straddle two splits."""
from __future__ import annotations

import re

import pandas as pd
import pytest

import labels_import
import mix_datasets
from tests.test_labels_import import all_rows, make_voc, run_import
from utils.common import config
from utils.common.errors import EXIT_BAD_INPUT
from utils.data.annotated import LabelsImportError, image_groups, read_groups
from utils.data.splits import split_weighted_groups


def test_weighted_groups_keep_the_image_shares():
    sizes = {"big": 546, "a": 181, "b": 84, "c": 80, "d": 66, "e": 64, "f": 51, "g": 46, "h": 42, "i": 38,
             "j": 30, "k": 14, "l": 7}
    splits = split_weighted_groups(sizes, (0.8, 0.1, 0.1), seed=0)
    assert sorted(g for s in splits.values() for g in s) == sorted(sizes)  # each group once
    total = sum(sizes.values())
    shares = {s: sum(sizes[g] for g in groups) / total for s, groups in splits.items()}
    assert "big" in splits["train"]
    assert all(abs(shares[s] - f) < 0.03 for s, f in zip(("train", "test", "eval"), (0.8, 0.1, 0.1), strict=True))


@pytest.mark.parametrize("sizes, expected", [
    ({"a": 5}, {"train": ["a"], "test": [], "eval": []}),
    ({"a": 5, "b": 1}, {"train": ["a"], "test": ["b"], "eval": []}),
    ({"a": 5, "b": 1, "c": 3}, {"train": ["a"], "test": ["c"], "eval": ["b"]}),
])
def test_weighted_groups_give_every_split_one_while_train_keeps_one(sizes, expected):
    assert split_weighted_groups(sizes, (0.8, 0.1, 0.1)) == expected


def test_weighted_groups_seed_orders_equal_groups():
    sizes = {f"s{i}": 10 for i in range(10)}
    runs = [split_weighted_groups(sizes, seed=seed) for seed in range(4)]
    assert all(len(r["train"]) == 8 and len(r["test"]) == 1 and len(r["eval"]) == 1 for r in runs)
    assert len({tuple(r["test"]) for r in runs}) > 1  # the seed chooses which


def grouped_labels(n_sessions: int = 5, per_session: int = 4) -> dict:
    return {f"sess{s}_frame{f:03d}": [("hand", 1 + f, 1, 20 + f, 20)] for s in range(n_sessions)
            for f in range(per_session)}


def session_of(filename: str) -> str:
    return filename.split("_frame")[0]


def test_group_pattern_keeps_each_session_in_one_split(tmp_path, capsys):
    voc = make_voc(tmp_path / "voc", grouped_labels())
    out = tmp_path / "out"
    rc, _, err = run_import(capsys, "--voc", voc, "--output-dir", out, "--group-pattern", r"^(sess\d+)_frame")
    assert rc == 0, err
    frames = all_rows(out)
    sessions = {s: {session_of(f) for f in df["filename"]} for s, df in frames.items()}
    assert sum(len(v) for v in sessions.values()) == 5  # no session in two splits
    assert len(sessions["train"]) == 3 and len(sessions["test"]) == 1 and len(sessions["eval"]) == 1


def test_group_by_file_and_its_errors(tmp_path, capsys):
    voc = make_voc(tmp_path / "voc", grouped_labels())
    groups = tmp_path / "sessions.csv"
    stems = list(grouped_labels())
    pd.DataFrame({"filename": [f"{s}.jpg" for s in stems], "session": [session_of(s) for s in stems]}).to_csv(
        groups, index=False)
    rc, _, err = run_import(capsys, "--voc", voc, "--output-dir", tmp_path / "out", "--group-by", groups)
    assert rc == 0, err
    frames = all_rows(tmp_path / "out")
    seen = [session_of(f) for df in frames.values() for f in set(df["filename"])]
    split_of = {session_of(f): s for s, df in frames.items() for f in df["filename"]}
    assert len(seen) == 20 and len(split_of) == 5

    # one image without a group: refused in one line, nothing written
    pd.read_csv(groups).iloc[1:].to_csv(tmp_path / "partial.csv", index=False)
    rc, _, err = run_import(capsys, "--voc", voc, "--output-dir", tmp_path / "out2", "--group-by",
                            tmp_path / "partial.csv")
    assert rc == EXIT_BAD_INPUT and "names no group for 1 of the 20 images" in err and err.count("\n") == 1
    assert not (tmp_path / "out2" / "train_labels.csv").exists()
    (tmp_path / "other.csv").write_text("filename,session\nelsewhere.jpg,x\n")
    rc, _, err = run_import(capsys, "--voc", voc, "--output-dir", tmp_path / "out3", "--group-by",
                            tmp_path / "other.csv")
    assert rc == EXIT_BAD_INPUT and "names none of the 20 images" in err
    (tmp_path / "one.csv").write_text("filename\na.jpg\n")
    with pytest.raises(LabelsImportError, match="two columns"):
        read_groups(tmp_path / "one.csv")
    with pytest.raises(SystemExit):
        labels_import.main(["--voc", str(voc), "--group-pattern", "(unclosed"])


def test_the_webcam_photos_split_by_session(webcam_hands_dir, tmp_path, capsys):
    """The real laptop-webcam set: every session in one split, the boxes exactly the shared labels.csv's."""
    out = tmp_path / "out"
    rc, stdout, err = run_import(capsys, "--voc", webcam_hands_dir, "--group-by", config.SHARED_WEBCAM_SESSIONS,
                                 "--source", "webcam", "--output-dir", out)
    assert rc == 0, err
    sessions = dict(pd.read_csv(config.SHARED_WEBCAM_SESSIONS, dtype=str).itertuples(index=False))
    frames = all_rows(out)
    split_sessions = {s: {sessions[f] for f in df["filename"]} for s, df in frames.items()}
    assert not (split_sessions["train"] & split_sessions["test"]) and not (split_sessions["train"]
                                                                          & split_sessions["eval"])
    assert not split_sessions["test"] & split_sessions["eval"]
    images = {s: df["filename"].nunique() for s, df in frames.items()}
    assert sum(images.values()) == 1249 and images["eval"] >= 100 and images["test"] >= 100
    ours = pd.concat(frames.values())[["filename", "xmin", "ymin", "xmax", "ymax"]]
    shared = pd.read_csv(config.SHARED_WEBCAM_LABELS)[["filename", "xmin", "ymin", "xmax", "ymax"]]
    key = ["filename", "xmin", "ymin", "xmax", "ymax"]
    pd.testing.assert_frame_equal(ours.sort_values(key).reset_index(drop=True).astype(float, errors="ignore"),
                                  shared.sort_values(key).reset_index(drop=True).astype(float, errors="ignore"),
                                  check_dtype=False)


def test_mix_datasets_group_by_applies_to_the_source_it_names(webcam_hands_dir, tmp_path, capsys):
    voc = make_voc(tmp_path / "voc", grouped_labels(3, 2))
    out = tmp_path / "out"
    rc = mix_datasets.main([f"webcam=voc:{webcam_hands_dir}", f"mine=voc:{voc}", "--group-by",
                            str(config.SHARED_WEBCAM_SESSIONS), "--output-dir", str(out), "--no-progress"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert "webcam: split by the 13 groups of" in stdout and "mine: split by" not in stdout
    sessions = dict(pd.read_csv(config.SHARED_WEBCAM_SESSIONS, dtype=str).itertuples(index=False))
    frames = all_rows(out)
    split_of: dict[str, set[str]] = {}
    for split, df in frames.items():
        for name in df.loc[df["source"] == "webcam", "filename"]:
            split_of.setdefault(sessions[re.sub(r"^webcam_", "", name)], set()).add(split)
    assert len(split_of) == 13 and all(len(v) == 1 for v in split_of.values())
    assert sum((df["source"] == "mine").sum() for df in frames.values()) == 6  # the other source, by file


def test_image_groups_match_output_name_file_name_or_stem(tmp_path):
    from utils.data.voc import read_voc_folder

    images = read_voc_folder(make_voc(tmp_path / "voc", grouped_labels(2, 1)))
    assert image_groups(images, {"sess0_frame000": "a", "sess1_frame000.jpg": "b"}, "g.csv") == {
        "sess0_frame000.jpg": "a", "sess1_frame000.jpg": "b"}
    assert image_groups(images, {"unrelated.jpg": "x"}, "g.csv") is None
