"""Frame sources (utils.runtime.sources): every kind of --source, clear errors, corrupt frames."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from utils.runtime.sources import SourceError, fit_frame, natural_key, open_source


@pytest.fixture(scope="module")
def video_frames(hand_video):
    capture = cv2.VideoCapture(str(hand_video))
    frames = [capture.read()[1] for _ in range(3)]
    capture.release()
    return frames


def _write_images(folder, frames, names):
    folder.mkdir(parents=True, exist_ok=True)
    for frame, name in zip(frames, names, strict=True):
        assert cv2.imwrite(str(folder / name), frame)
    return folder


def test_video_file_gives_every_frame_with_media_time(hand_video):
    with open_source(hand_video) as source:
        assert not source.live and source.fps == pytest.approx(30, abs=0.1)
        frames = list(source.frames())
    assert len(frames) == 378
    assert [f.index for f in frames] == list(range(378))
    assert frames[30].timestamp == pytest.approx(1.0, abs=1e-6)
    assert frames[0].bgr.shape == (720, 720, 3)


def test_image_folder_in_natural_order_and_single_image(tmp_path, video_frames):
    folder = _write_images(tmp_path / "imgs", video_frames, ["f10.jpg", "f2.png", "f1.jpg"])
    (folder / "notes.txt").write_text("not an image")
    with open_source(folder) as source:
        frames = list(source.frames())
    assert [f.name.rsplit("/", 1)[-1] for f in frames] == ["f1.jpg", "f2.png", "f10.jpg"]
    assert all(f.bgr is not None and f.timestamp is None for f in frames)
    with open_source(folder / "f2.png") as source:
        (only,) = source.frames()
    np.testing.assert_array_equal(only.bgr, video_frames[1])  # PNG is lossless


def test_glob_source(tmp_path, video_frames):
    _write_images(tmp_path, video_frames, ["a_1.jpg", "a_2.jpg", "b_1.jpg"])
    with open_source(str(tmp_path / "a_*.jpg")) as source:
        assert [f.name.rsplit("/", 1)[-1] for f in source.frames()] == ["a_1.jpg", "a_2.jpg"]
    with pytest.raises(SourceError, match=r"no image files .* match"):
        open_source(str(tmp_path / "zzz_*.jpg"))


def test_corrupt_image_comes_through_as_a_skippable_frame(tmp_path, video_frames):
    folder = _write_images(tmp_path, video_frames, ["f1.jpg", "f2.jpg", "f3.jpg"])
    good = (folder / "f2.jpg").read_bytes()
    (folder / "f2.jpg").write_bytes(good[:300] + b"\x00garbage" * 100)
    with open_source(folder) as source:
        frames = list(source.frames())
    assert [f.bgr is None for f in frames] == [False, True, False]
    assert frames[1].index == 1 and "not a decodable image" in frames[1].error


@pytest.mark.parametrize("make, source, message", [
    (None, "missing.mp4", "no such file or folder"),
    (lambda p: p.write_text("hello"), "notes.txt", "cannot open it as a video"),
    (lambda p: p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500), "broken.mp4",
     "cannot open|no frame"),
    (lambda p: p.mkdir(), "empty_dir", "folder has no image files"),
])
def test_bad_sources_name_the_source_and_what_to_do(tmp_path, make, source, message):
    path = tmp_path / source
    if make:
        make(path)
    with pytest.raises(SourceError, match=message) as info:
        open_source(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_absent_camera_is_a_clear_error_without_opencv_noise(capfd):
    with pytest.raises(SourceError, match=r"camera 99: cannot open it"):
        open_source("99")
    assert "WARN" not in capfd.readouterr().err


def test_fit_frame_resizes_keeps_aspect_and_flips():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :10] = 255  # a white band on the left
    assert fit_frame(image, 320, 240).shape == (240, 320, 3)
    assert fit_frame(image, 100, 0).shape == (50, 100, 3)
    assert fit_frame(image, 0, 0) is image
    flipped = fit_frame(image, 0, 0, flip=True)
    assert flipped[:, -1].min() == 255 and flipped[:, 0].max() == 0


def test_natural_key():
    names = ["frame_10", "frame_9", "Frame_100"]
    assert sorted(names, key=natural_key) == ["frame_9", "frame_10", "Frame_100"]
