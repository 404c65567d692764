"""`make demo` on a fresh clone: the shared video when present, else camera 0 in a window, else one
line saying how to pass VIDEO=path."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_detect_cli import VIDEO_FRAMES, count_video_frames, read_json_lines, script_env

ROOT = Path(__file__).resolve().parent.parent


def make_dry_run(*variables: str, env: dict | None = None) -> str:
    """The demo command `make -n demo` would run (nothing is built: a dry run)."""
    result = subprocess.run(["make", "-n", "--no-print-directory", "demo", *variables], cwd=ROOT, text=True,
                            capture_output=True, env=env or script_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "demo.py" in line]
    return line


def test_make_demo_picks_the_video(model_dir, tmp_path):
    model = f"MODEL_DIR={model_dir}"
    assert "demo.py  --model" in make_dry_run(model, f"SHARED={tmp_path / 'no-shared'}")  # a fresh clone
    assert f"--video {tmp_path}/shared/videos/hand_desk.mp4 " not in make_dry_run(model, f"SHARED={tmp_path}/shared")
    (tmp_path / "shared" / "videos").mkdir(parents=True)
    (tmp_path / "shared" / "videos" / "hand_desk.mp4").write_bytes(b"")
    assert f"--video {tmp_path}/shared/videos/hand_desk.mp4 " in make_dry_run(model, f"SHARED={tmp_path}/shared")
    assert "--video mine.mp4 " in make_dry_run(model, "VIDEO=mine.mp4", f"SHARED={tmp_path / 'no-shared'}")
    env = dict(script_env(), VIDEO="env.mp4")
    assert "--video env.mp4 " in make_dry_run(model, f"SHARED={tmp_path / 'no-shared'}", env=env)


@pytest.mark.parametrize("display", [None, ":97"])  # no DISPLAY; a DISPLAY with no X server behind it
def test_demo_without_video_or_screen_says_how_to_pass_one(display):
    env = script_env()
    if display:
        env["DISPLAY"] = display
    result = subprocess.run([sys.executable, "demo.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "demo.py: error: no video given and no display to show a camera in; "
        "pass one: make demo VIDEO=path/to/hands.mp4"]


def test_camera_problem_names_the_missing_camera(monkeypatch):
    from utils.runtime import demo

    monkeypatch.setattr(demo, "check_display", lambda: None)  # as on a desktop
    problem = demo.camera_problem(camera=97)                   # no machine has a 98th camera
    assert problem == "no camera 97"


@pytest.mark.timeout(120)
def test_demo_on_the_shared_video_tracks_hands(hand_video, model_dir, tmp_path):
    result = subprocess.run([sys.executable, "demo.py", "--video", str(hand_video), "--model", str(model_dir),
                             "--output", str(tmp_path / "demo.mp4"), "--json", str(tmp_path / "demo.jsonl")],
                            cwd=ROOT, env=script_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Single-Threaded Detection: 378 frames" in result.stdout and "tracking (bytetrack" in result.stdout
    records = read_json_lines(tmp_path / "demo.jsonl")
    assert len(records) == VIDEO_FRAMES and sum(bool(r["track_ids"]) for r in records) > 0.8 * VIDEO_FRAMES
    assert count_video_frames(tmp_path / "demo.mp4") == (VIDEO_FRAMES, (720, 720))
