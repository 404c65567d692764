"""--track / --detect-every / --smooth in both detectors on the real video: JSON track_ids, predicted
boxes, the multi-threaded detector giving the single-threaded one's IDs and boxes, skipped frames
never reaching a detector worker."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from tests.test_detect_cli import MULTI, SINGLE, VIDEO_FRAMES, count_video_frames, read_json_lines, run_script

EVERY = 3


@pytest.fixture(scope="module")
def tracked_single(hand_video, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tracked")
    result = run_script(SINGLE, "--source", hand_video, "--display", "0", "--track", "--detect-every", EVERY,
                        "--json", out / "t.jsonl", "--output", out / "t.mp4")
    assert result.returncode == 0, result.stderr
    return result, out


@pytest.mark.timeout(120)
def test_tracked_json_lines_carry_ids_and_predicted_flags(tracked_single):
    result, out = tracked_single
    assert "tracking (bytetrack, smoothed, detector on every 3 frame(s))" in result.stdout
    records = read_json_lines(out / "t.jsonl")
    assert [r["index"] for r in records] == list(range(VIDEO_FRAMES))
    for r in records:
        assert len(r["track_ids"]) == len(r["boxes"]) == len(r["predicted"]) == len(r["scores"])
        assert all(p == (r["index"] % EVERY != 0) for p in r["predicted"])  # the detector ran on frames 0, 3, 6...
        assert all(t is None or (isinstance(t, int) and t >= 1) for t in r["track_ids"])
        for xmin, ymin, xmax, ymax in r["boxes"]:
            assert 0 <= xmin <= xmax <= r["width"] == 720 and 0 <= ymin <= ymax <= r["height"] == 720
    ids = [t for r in records for t in r["track_ids"] if t is not None]
    assert len(ids) > 0.8 * VIDEO_FRAMES  # the hand is numbered on most frames
    # One hand: the ID it carries on most frames covers a large part of the video.
    most = max(set(ids), key=ids.count)
    assert ids.count(most) > 0.25 * VIDEO_FRAMES
    assert count_video_frames(out / "t.mp4") == (VIDEO_FRAMES, (720, 720))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 4])
def test_multi_threaded_gives_the_same_ids_and_boxes(tracked_single, hand_video, tmp_path, workers):
    _, single_out = tracked_single
    result = run_script(MULTI, "--source", hand_video, "--display", "0", "--track", "--detect-every", EVERY,
                        "--num-workers", workers, "--json", tmp_path / "m.jsonl")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.jsonl").read_text() == (single_out / "t.jsonl").read_text()


@pytest.mark.timeout(60)
def test_smooth_alone_turns_tracking_on_and_bad_detect_every(hand_video, model_dir, tmp_path):
    result = run_script(SINGLE, "--source", hand_video, "--display", "0", "--smooth", "--max-frames", 10,
                        "--json", tmp_path / "s.jsonl")
    assert result.returncode == 0, result.stderr
    assert all("track_ids" in r for r in read_json_lines(tmp_path / "s.jsonl"))
    result = run_script(MULTI, "--source", hand_video, "--display", "0", "--track", "--no-smooth",
                        "--max-frames", 5, "--json", tmp_path / "n.jsonl")
    assert result.returncode == 0 and "tracking (bytetrack, detector on every 1 frame(s))" in result.stdout
    result = run_script(SINGLE, "--source", hand_video, "--display", "0", "--detect-every", 0)
    assert result.returncode == 2 and "--detect-every must be >= 1" in result.stderr
    result = run_script(SINGLE, "--source", hand_video, "--display", "0", "--output-size", "wide")
    assert result.returncode == 2 and "give a width like 640" in result.stderr


class CountingDetector:
    """The real detector, counting the frames it is given (shared by the worker threads)."""

    def __init__(self, detector, counter: list, lock: threading.Lock):
        self.detector, self.counter, self.lock = detector, counter, lock
        self.class_names = detector.class_names

    def detect(self, rgb, **kwargs):
        with self.lock:
            self.counter.append(1)
        return self.detector.detect(rgb, **kwargs)


@pytest.mark.timeout(120)
def test_skipped_frames_never_reach_a_worker(hand_video, model_dir):
    from utils.runtime import detector as detector_utils
    from utils.runtime.loop import FrameProcessor, FrameStream, run
    from utils.runtime.sources import open_source
    from utils.runtime.tracking import HandTracker

    first = detector_utils.load_inference_graph(detector_utils.default_model_path(model_dir), 1)
    records: dict[bool, list] = {}
    for threaded in (False, True):
        calls, lock = [], threading.Lock()
        processors = [FrameProcessor(CountingDetector(first if i == 0 else first.clone(), calls, lock), 0.2, 2)
                      for i in range(3 if threaded else 1)]
        got = []
        with open_source(hand_video) as source:
            stats = run(FrameStream(source, 320, 240, detect_every=EVERY), processors,
                        lambda result, got=got: got.append(result.record) or True, threaded=threaded,
                        tracker=HandTracker(source.fps))
        assert stats.frames == VIDEO_FRAMES
        assert len(calls) == math.ceil(VIDEO_FRAMES / EVERY)  # the detector ran on every 3rd frame only
        records[threaded] = got
    assert records[True] == records[False]


def test_frame_stream_gives_the_tracker_a_grey_view_of_every_frame_when_it_skips_some(hand_video):
    from utils.runtime.loop import FrameStream
    from utils.runtime.sources import open_source

    for every, motion in ((3, True), (1, False)):
        with open_source(hand_video) as source:
            frames = list(FrameStream(source, 320, 240, max_frames=6, detect_every=every))
        assert [f.detector_bgr is not None for f in frames] == [i % every == 0 for i in range(6)]
        if motion:
            assert all(f.motion_gray.shape == (240, 320) and f.motion_gray.dtype == np.uint8 for f in frames)
        else:
            assert all(f.motion_gray is None for f in frames)
