"""detect_single_threaded.py / detect_multi_threaded.py end to end on the real video and images."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parent.parent
SINGLE = "detect_single_threaded.py"
MULTI = "detect_multi_threaded.py"
VIDEO_FRAMES = 378  # hand_desk.mp4


def script_env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("DISPLAY", None)  # --display 0 must need no display at all
    env.pop("WAYLAND_DISPLAY", None)
    return env


def run_script(script: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, env=script_env(),
                          capture_output=True, text=True, timeout=timeout)


def read_json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def count_video_frames(path: Path) -> tuple[int, tuple[int, int]]:
    capture = cv2.VideoCapture(str(path))
    count, size = 0, (0, 0)
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, size = count + 1, (frame.shape[1], frame.shape[0])
    capture.release()
    return count, size


@pytest.fixture(scope="module")
def single_run(hand_video, model_dir, tmp_path_factory):
    """The whole video through the single-threaded script with the default model."""
    out = tmp_path_factory.mktemp("single")
    result = run_script(SINGLE, "--source", hand_video, "--display", "0", "--output", out / "demo.mp4",
                        "--json", out / "demo.jsonl")
    assert result.returncode == 0, result.stderr
    return result, out


@pytest.mark.timeout(120)
def test_single_threaded_whole_video(single_run):
    result, out = single_run
    records = read_json_lines(out / "demo.jsonl")
    assert [r["index"] for r in records] == list(range(VIDEO_FRAMES))  # one line per frame, in order
    assert records[30]["timestamp"] == pytest.approx(1.0)
    with_hands = [r for r in records if r["boxes"]]
    assert len(with_hands) > 0.8 * VIDEO_FRAMES, "the video shows a hand in most frames"
    for r in with_hands:
        assert len(r["boxes"]) <= 2 and all(s > 0.2 for s in r["scores"])
        assert r["class_names"] == ["hand"] * len(r["boxes"]) and r["classes"] == [1] * len(r["boxes"])
        xmin, ymin, xmax, ymax = r["boxes"][0]
        # Detected at 320x240, written in the source's pixels: the boxes lie on the original video.
        assert 0 <= xmin < xmax <= r["width"] == 720 and 0 <= ymin < ymax <= r["height"] == 720
        assert "track_ids" not in r
    assert count_video_frames(out / "demo.mp4") == (VIDEO_FRAMES, (720, 720))  # the source's shape
    summary = result.stdout
    assert f"{VIDEO_FRAMES} frames in" in summary and "FPS" in summary
    assert "skipped 0 corrupt frame(s)" in summary and "stopped by end of stream" in summary
    assert sorted(p.name for p in out.iterdir()) == ["demo.jsonl", "demo.mp4"]  # no temporaries left


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 4])
def test_multi_threaded_matches_single_threaded(single_run, hand_video, tmp_path, workers):
    _, single_out = single_run
    result = run_script(MULTI, "--source", hand_video, "--display", "0", "--num-workers", workers,
                        "--json", tmp_path / "multi.jsonl", "--output", tmp_path / "multi.mp4")
    assert result.returncode == 0, result.stderr
    assert f"{workers} workers" in result.stdout and "stopped by end of stream" in result.stdout
    # Same frames, same order, same boxes: TFLite is deterministic, and the reorder buffer works.
    assert (tmp_path / "multi.jsonl").read_text() == (single_out / "demo.jsonl").read_text()
    assert count_video_frames(tmp_path / "multi.mp4")[0] == VIDEO_FRAMES


@pytest.mark.timeout(60)
def test_max_frames_flip_and_options(hand_video, tmp_path):
    result = run_script(MULTI, "--source", hand_video, "--display", "0", "--max-frames", 25, "--flip",
                        "--num-hands", 1, "--width", 400, "--height", 0, "--json", tmp_path / "a.jsonl",
                        "--output", tmp_path / "a.mp4", "--output-size", "360x300")
    assert result.returncode == 0, result.stderr
    records = read_json_lines(tmp_path / "a.jsonl")
    assert len(records) == 25 and "stopped by --max-frames" in result.stdout
    assert {(r["width"], r["height"]) for r in records} == {(720, 720)}  # JSON: the source's pixels
    assert count_video_frames(tmp_path / "a.mp4") == (25, (300, 300))   # fitted into 360x300, aspect kept
    assert all(len(r["boxes"]) <= 1 for r in records)


@pytest.mark.timeout(60)
def test_image_folder_with_a_corrupt_jpeg_and_single_image(hand_video, tmp_path):
    capture = cv2.VideoCapture(str(hand_video))
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(60):
        ok, frame = capture.read()
        if index in (15, 25, 35, 45):  # frames with the hand in view
            cv2.imwrite(str(folder / f"frame_{index:04d}.jpg"), frame)
    capture.release()
    corrupt = folder / "frame_0030.jpg"
    corrupt.write_bytes((folder / "frame_0025.jpg").read_bytes()[:400] + b"\x00broken" * 200)

    result = run_script(SINGLE, "--source", folder, "--display", "0", "--json", tmp_path / "f.jsonl")
    assert result.returncode == 0, result.stderr
    assert f"{corrupt}: not a decodable image; frame 2 skipped" in result.stderr
    assert "skipped 1 corrupt frame(s)" in result.stdout
    records = read_json_lines(tmp_path / "f.jsonl")
    assert [Path(r["file"]).name for r in records] == [f"frame_{i:04d}.jpg" for i in (15, 25, 35, 45)]
    assert [r["index"] for r in records] == [0, 1, 3, 4]
    assert all(r["boxes"] and r["timestamp"] is None for r in records)

    result = run_script(MULTI, "--source", folder / "frame_0035.jpg", "--display", "0", "--width", 0,
                        "--height", 0, "--json", tmp_path / "one.jsonl", "--output", tmp_path / "one.mp4")
    assert result.returncode == 0, result.stderr
    (record,) = read_json_lines(tmp_path / "one.jsonl")
    assert record["boxes"] and (record["width"], record["height"]) == (720, 720)
    assert count_video_frames(tmp_path / "one.mp4") == (1, (720, 720))


@pytest.mark.timeout(60)
def test_sigint_stops_multi_threaded_cleanly_with_a_playable_video(hand_video, model_dir, tmp_path):
    out = tmp_path / "run.mp4"
    # fp32 on one thread (~60 FPS) so the run lasts several seconds.
    process = subprocess.Popen(
        [sys.executable, MULTI, "--source", hand_video, "--display", "0", "--model",
         model_dir / "hand_detector.tflite", "--num-workers", "1", "--num-threads", "1", "--output", out,
         "--json", tmp_path / "run.jsonl"], cwd=ROOT, env=script_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob(".run.mp4.*")) and time.monotonic() < deadline:  # writing has begun
            time.sleep(0.05)
        time.sleep(0.5)
        assert process.poll() is None, "the run ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=10)  # a stop that hangs fails here
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "stopped by Ctrl-C" in stdout and "FPS" in stdout
    frames, size = count_video_frames(out)
    assert 0 < frames < VIDEO_FRAMES and size == (720, 720)
    assert len(read_json_lines(tmp_path / "run.jsonl")) == frames
    assert not list(tmp_path.glob(".run.*")), "temporaries must be gone"


@pytest.mark.timeout(60)
def test_help_explains_every_flag():
    for script in (SINGLE, MULTI):
        result = run_script(script, "--help")
        assert result.returncode == 0
        for flag in ("--source", "--scorethreshold", "--fps", "--width", "--height", "--display",
                     "--num-workers", "--queue-size", "--model", "--num-hands", "--output", "--json",
                     "--max-frames", "--flip"):
            assert flag in result.stdout, f"{script} --help lacks {flag}"
