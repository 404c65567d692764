"""`make demo`: the shared video when present, else camera 0 in a window, else the shipped sample
headless; the picture of a run (results/demo.png). tests/test_fresh_clone.py runs it as a fresh clone."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.test_detect_cli import VIDEO_FRAMES, count_video_frames, read_json_lines, script_env
from utils.common import config
from utils.runtime.demo import (
    PICTURE_TILE_HEIGHT,
    PICTURE_TITLE_HEIGHT,
    picture_frames,
    picture_size,
    tile_frames,
)

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
def test_demo_without_video_or_screen_takes_the_sample(display, monkeypatch):
    from utils.runtime.demo import demo_video

    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if display:
        monkeypatch.setenv("DISPLAY", display)
    else:
        monkeypatch.delenv("DISPLAY", raising=False)
    video, note = demo_video(None)
    assert video == config.SAMPLE_HAND_VIDEO and video.is_file()
    assert note == f"no video given and no display to show a camera in: running on the sample {video}"
    assert demo_video(Path("mine.mp4")) == (Path("mine.mp4"), None)  # a video given is always the one


def test_demo_without_video_screen_or_sample_says_how_to_pass_one(tmp_path, monkeypatch):
    from utils.common.errors import UserError
    from utils.runtime.demo import demo_video

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(UserError) as raised:
        demo_video(None, sample=tmp_path / "gone.mp4")  # a checkout whose samples/ is gone
    assert str(raised.value) == (f"no video given, no display to show a camera in, and the sample video "
                                 f"{tmp_path / 'gone.mp4'} is missing; pass one: make demo VIDEO=path/to/hands.mp4")


def test_camera_problem_names_the_missing_camera(monkeypatch):
    from utils.runtime import demo

    monkeypatch.setattr(demo, "check_display", lambda: None)  # as on a desktop
    problem = demo.camera_problem(camera=97)                   # no machine has a 98th camera
    assert problem == "no camera 97"


@pytest.mark.timeout(120)
def test_demo_on_the_shared_video_tracks_hands(hand_video, model_dir, tmp_path):
    from utils.runtime.demo import PICTURE_FRAMES

    result = subprocess.run([sys.executable, "demo.py", "--video", str(hand_video), "--model", str(model_dir),
                             "--output", str(tmp_path / "demo.mp4"), "--json", str(tmp_path / "demo.jsonl"),
                             "--picture", str(tmp_path / "demo.png")],
                            cwd=ROOT, env=script_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Single-Threaded Detection: 378 frames" in result.stdout and "tracking (bytetrack" in result.stdout
    assert "running on the sample" not in result.stdout  # a video given is the one
    records = read_json_lines(tmp_path / "demo.jsonl")
    assert len(records) == VIDEO_FRAMES and sum(bool(r["track_ids"]) for r in records) > 0.8 * VIDEO_FRAMES
    assert count_video_frames(tmp_path / "demo.mp4") == (VIDEO_FRAMES, (720, 720))
    # The picture: frames with confirmed tracks, spread over the video, at the size picture_size gives.
    shown = picture_frames(records)
    assert len(shown) == PICTURE_FRAMES and shown == sorted(set(shown))
    assert all(any(t is not None for t in records[i]["track_ids"]) for i in shown)
    assert shown[-1] - shown[0] > VIDEO_FRAMES / 2
    picture = cv2.imread(str(tmp_path / "demo.png"))
    assert (picture.shape[1], picture.shape[0]) == picture_size(720, 720, PICTURE_FRAMES)
    assert result.stdout.splitlines()[-1] == f"wrote {tmp_path / 'demo.png'}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.jsonl", "demo.mp4", "demo.png"]  # no temporaries


def test_picture_frames_prefer_confirmed_tracks():
    def line(index, boxes, ids=None, predicted=False):
        record = {"index": index, "boxes": [[0, 0, 10, 10]] * boxes, "width": 20, "height": 20}
        return record | ({"track_ids": ids, "predicted": predicted} if ids is not None else {})

    tracked = [line(0, 0, []), line(1, 1, [None]), line(2, 1, [3]), line(3, 1, [3], predicted=True),
               line(4, 2, [3, 4]), line(5, 0, [])]
    assert picture_frames(tracked, 4) == [2, 4]                    # confirmed and detected only
    assert picture_frames([line(i, i % 2) for i in range(10)], 2) == [3, 7]  # no tracker: frames with boxes
    assert picture_frames([line(i, 0) for i in range(3)], 4) == [0, 1, 2]   # no hands at all: any frames
    assert picture_frames([], 4) == []


def test_tile_frames_lays_frames_side_by_side():
    frames = [frame for _, frame in zip(range(3), iter_video(config.SAMPLE_HAND_VIDEO), strict=False)]
    picture = tile_frames(frames, "title", ["a", "b", "c"], [[(0.5, 0.5, "#1")], [], []])
    assert (picture.shape[1], picture.shape[0]) == picture_size(480, 480, 3)
    assert picture.shape[0] == PICTURE_TITLE_HEIGHT + PICTURE_TILE_HEIGHT
    tile = cv2.resize(frames[1], (PICTURE_TILE_HEIGHT, PICTURE_TILE_HEIGHT), interpolation=cv2.INTER_AREA)
    middle = picture[PICTURE_TITLE_HEIGHT:, PICTURE_TILE_HEIGHT:2 * PICTURE_TILE_HEIGHT]
    assert np.array_equal(middle[:200], tile[:200])  # the frame itself, above its label
    with pytest.raises(ValueError):
        tile_frames([], "title")


def iter_video(path):
    capture = cv2.VideoCapture(str(path))
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        yield frame
    capture.release()
