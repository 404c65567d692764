"""Every signal that ends a detector run takes one stop path (issue 28): SIGHUP (a closed terminal) as Ctrl-C and
SIGTERM, a second signal soon after the first too: exit 130, a playable video and one complete JSON line per
frame, no temporary left. And the output layer: a --json reader that goes away stops the run quietly, a full
disk is one line. Real processes, real signals, the real model on the real hand video; each bounded in time."""
from __future__ import annotations

import signal
import subprocess
import sys

import cv2
import pytest

from tests.test_reliability import ROOT, env, hidden, start, wait_for
from utils.common import config
from utils.common.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED

SINGLE, MULTI = "detect_single_threaded.py", "detect_multi_threaded.py"


@pytest.fixture(scope="module")
def tflite_model():
    path = config.MODEL_DIR / config.TFLITE_FP32_NAME
    if not path.exists():
        pytest.skip(f"{path} not found: run `make model` first")
    return path


def playable_frames(video) -> int:
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while capture.read()[0]:
        frames += 1
    return frames


@pytest.mark.timeout(180)
@pytest.mark.parametrize("script, signals", [
    (SINGLE, [signal.SIGHUP]),
    (MULTI, [signal.SIGHUP]),
    (MULTI, [signal.SIGTERM, signal.SIGTERM]),
    (MULTI, [signal.SIGINT, signal.SIGINT]),
    (SINGLE, [signal.SIGINT, signal.SIGHUP]),
], ids=["single-hup", "multi-hup", "multi-term-term", "multi-int-int", "single-int-hup"])
def test_every_stop_signal_keeps_complete_outputs(script, signals, hand_video, tflite_model, tmp_path):
    video, lines = tmp_path / "run.mp4", tmp_path / "run.jsonl"
    process = start(script, "--source", hand_video, "--display", "0", "--model", tflite_model, "--num-workers", "2",
                    "--num-threads", "1", "--output", video, "--json", lines)
    try:
        wait_for(process, lambda: any(p.stat().st_size for p in tmp_path.glob(".run.jsonl.*")))
        assert process.poll() is None, "the run ended before it could be stopped"
        for sig in signals:  # the repeat comes while the first stop is still being handled
            process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED, stderr
    # Signals pending together are delivered in signal-number order, so either may be the first.
    names = {"Ctrl-C" if sig == signal.SIGINT else sig.name for sig in signals}
    assert any(f"stopped by {name};" in stdout for name in names) and "Traceback" not in stderr, stderr
    records = lines.read_text().splitlines()
    assert len(records) == playable_frames(video) > 0
    assert all(r.startswith("{") and r.endswith("}") for r in records)
    assert hidden(tmp_path) == []


@pytest.mark.timeout(180)
def test_a_json_reader_that_goes_away_stops_the_run_quietly(hand_video, tflite_model):
    process = start(SINGLE, "--source", hand_video, "--display", "0", "--model", tflite_model, "--num-threads", "1",
                    "--json", "-")
    try:
        first = process.stdout.readline()
        process.stdout.close()  # `| head -1`
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert first.startswith('{"index":0')
    assert process.returncode == 0 and "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert "stopped by --json reader closed the pipe" in stderr


@pytest.mark.timeout(180)
def test_a_full_disk_is_one_line_and_library_logs_stay_quiet(hand_video, tflite_model, tmp_path):
    environ = {k: v for k, v in env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the scripts quiet it themselves
    result = subprocess.run([sys.executable, SINGLE, "--source", str(hand_video), "--display", "0", "--model",
                             str(tflite_model), "--num-threads", "1", "--json", "/dev/full", "--max-frames", "3"],
                            cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.splitlines() == [f"{SINGLE}: error: /dev/full: writing --json failed (No space left on "
                                          "device); free some space or choose another --json (an earlier file "
                                          "there is kept)"], result.stderr
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(hand_video.read_bytes()[:2000])  # no moov atom: FFmpeg would say so on its own
    result = subprocess.run([sys.executable, SINGLE, "--source", str(cut), "--display", "0", "--model",
                             str(tflite_model)], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_BAD_INPUT and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"{SINGLE}: error: {cut}: cannot open it as a video")


def test_a_one_pixel_source_points_at_output_size(tmp_path, tflite_model):
    dot = tmp_path / "dot.png"
    cv2.imwrite(str(dot), (cv2.UMat(1, 1, cv2.CV_8UC3).get() * 0))
    args = [sys.executable, SINGLE, "--source", str(dot), "--display", "0", "--model", str(tflite_model),
            "--output", str(tmp_path / "x.mp4")]
    result = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_BAD_INPUT and "--output-size" in result.stderr and "--width" not in result.stderr
    result = subprocess.run(args + ["--output-size", "64"], cwd=ROOT, env=env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert playable_frames(tmp_path / "x.mp4") == 1
