"""make_chess_video.py: videos/chess.mov from the EgoHands CHESS frames, then the detector on it."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from scripts import make_chess_video
from tests.test_detect_cli import ROOT, read_json_lines, run_script
from utils.common.errors import EXIT_BAD_INPUT


@pytest.mark.timeout(120)
def test_chess_video_from_the_zip_plays_in_order_and_has_hands(egohands_sample_zip, model_dir, tmp_path):
    out = tmp_path / "videos" / "chess.mov"
    result = subprocess.run([sys.executable, "scripts/make_chess_video.py", "--zip", str(egohands_sample_zip),
                             "--output", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "100 frames at 10 fps" in result.stdout
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(make_chess_video.DEFAULT_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 100 and frames[0].shape == (720, 1280, 3)
    # In frame-number order: frame 0 of the video is the zip's lowest-numbered frame.
    with zipfile.ZipFile(egohands_sample_zip) as archive:
        names = sorted(n for n in archive.namelist() if "/CHESS_COURTYARD_B_T/frame_" in n)
        first = cv2.imdecode(np.frombuffer(archive.read(names[0]), np.uint8), cv2.IMREAD_COLOR)
        last = cv2.imdecode(np.frombuffer(archive.read(names[-1]), np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(frames[0].astype(int) - first).mean() < np.abs(frames[0].astype(int) - last).mean()
    assert np.abs(frames[0].astype(int) - first).mean() < 8  # mp4v is lossy, but close

    result = run_script("detect_single_threaded.py", "--source", out, "--display", "0", "--max-frames", 30,
                        "--json", tmp_path / "chess.jsonl")
    assert result.returncode == 0, result.stderr
    records = read_json_lines(tmp_path / "chess.jsonl")
    assert len(records) == 30 and sum(bool(r["boxes"]) for r in records) >= 25


def test_bad_inputs(tmp_path, egohands_sample_zip, capsys):
    out = ["--output", str(tmp_path / "c.mov")]
    assert make_chess_video.main(["--zip", str(tmp_path / "none.zip"), *out]) == EXIT_BAD_INPUT
    assert "none.zip: no such file" in capsys.readouterr().err
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 truncated")
    assert make_chess_video.main(["--zip", str(tmp_path / "bad.zip"), *out]) == EXIT_BAD_INPUT
    assert "bad.zip: not a readable zip" in capsys.readouterr().err
    assert make_chess_video.main(["--zip", str(egohands_sample_zip), "--video", "NOPE", *out]) == EXIT_BAD_INPUT
    assert "no frames of videos named NOPE*" in capsys.readouterr().err
    assert not (tmp_path / "c.mov").exists()


def test_images_folder_layout(tmp_path, egohands_sample_zip):
    """images/<split>/<VIDEO>_frame_NNNN.jpg as egohands_dataset_clean.py writes them."""
    with zipfile.ZipFile(egohands_sample_zip) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
        for name in names[:3] + names[-2:]:  # 3 CARDS frames, 2 CHESS frames
            video, frame = name.split("/")[-2:]
            split = "test" if video.startswith("CHESS") else "train"
            (tmp_path / "images" / split).mkdir(parents=True, exist_ok=True)
            (tmp_path / "images" / split / f"{video}_{frame}").write_bytes(archive.read(name))
    frames = make_chess_video.folder_frames(tmp_path / "images", "CHESS")
    assert [label.rsplit("/", 1)[-1] for label, _ in frames] == [
        f"CHESS_COURTYARD_B_T_{n.rsplit('/', 1)[-1]}" for n in names[-2:]]
    argv = ["--images", str(tmp_path / "images"), "--output", str(tmp_path / "c.mov")]
    assert make_chess_video.main(argv) == 0
    assert (tmp_path / "c.mov").stat().st_size > 0
