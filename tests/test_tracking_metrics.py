"""The bench's tracking figures (utils.evaluation.tracking) on hand-made box sequences."""
from __future__ import annotations

import numpy as np
import pytest

from utils.evaluation import tracking as metrics

A = np.array([[0, 0, 10, 10]], float)
B = np.array([[100, 100, 120, 120]], float)
NONE = np.zeros((0, 4))


def test_recall_and_precision():
    reference = [A, np.vstack([A, B]), NONE]
    tracked = [A + 1, A, B]          # frame 0: IoU 0.68; frame 1: B missed; frame 2: a box the reference lacks
    assert metrics.recall(tracked, reference) == pytest.approx(2 / 3)
    assert metrics.precision(tracked, reference) == pytest.approx(2 / 3)
    assert metrics.recall([A + 6], [A]) == 0.0  # IoU 0.09
    assert metrics.recall([NONE], [NONE]) == 1.0


def test_sure_boxes_keep_the_confident_reference_boxes():
    sure = metrics.sure_boxes([np.vstack([A, B]), NONE, A], [[0.9, 0.3], [], [0.5]])
    assert [b.tolist() for b in sure] == [A.tolist(), [], A.tolist()]
    # the tracker that did not carry the doubtful B misses nothing the detector was sure of
    assert metrics.recall([A, NONE, A], sure) == 1.0


def test_id_switches_count_a_continued_box_under_another_id():
    boxes = [A, A, A + 1, A + 1, B]
    assert metrics.id_switches(boxes, [[1], [1], [2], [2], [2]]) == 1
    assert metrics.id_switches(boxes, [[1], [1], [1], [1], [3]]) == 0   # B does not continue A
    assert metrics.id_switches(boxes, [[-1], [1], [1], [1], [1]]) == 0  # unconfirmed -> confirmed


def test_fragmented_tracks_and_track_count():
    ids = [[1], [1], [], [2], [2], [], [], [], [], [], [3], [-1]]
    assert metrics.fragmented_tracks(ids, gap_frames=3) == 1   # 2 starts 2 frames after 1 ended
    assert metrics.fragmented_tracks(ids, gap_frames=1) == 0
    assert metrics.track_count(ids) == 3


def test_box_jitter_ignores_steady_motion_and_measures_shake():
    t = np.arange(30, dtype=float)[:, None]
    moving = np.hstack([t * 2, t, t * 2 + 50, t + 50])
    assert metrics.box_jitter(moving) == pytest.approx(0.0, abs=1e-9)
    shaky = moving + np.where(np.arange(30) % 2, 1.0, -1.0)[:, None]
    assert 0.8 < metrics.box_jitter(shaky) <= 1.0
    with pytest.raises(ValueError, match="at least"):
        metrics.box_jitter(moving[:3])


def test_stillest_run_needs_one_box_per_frame():
    boxes = [A + 5 * i for i in range(5)] + [A] * 5 + [np.vstack([A, B])] * 3
    assert metrics.stillest_run(boxes, 5) == 5
    assert metrics.stillest_run(boxes, 11) is None


def test_bench_tracking_table_on_the_real_video(hand_video, model_dir):
    from benchmarks import bench
    from utils.runtime.detector import default_model_path

    rows, figures = bench.tracking_bench(str(hand_video), default_model_path(model_dir), 320, 240, max_frames=40,
                                         repeats=1)
    assert [r.every for r in rows] == [1, 1, 2, 3, 5, 1] and all(r.frames == 40 for r in rows)
    reference = figures[rows[0].name]
    assert reference["recall"] == reference["precision"] == reference["recall_sure"] == 1.0
    assert reference["switches"] is None
    tracked = figures["--track --detect-every 3"]
    assert 0.5 < tracked["recall"] <= 1.0 and tracked["tracks"] >= 1
    table = bench.tracking_markdown(rows, figures, 30.0)
    assert "| --track --detect-every 5 |" in table and "Goal (shown, not asserted): N = 3" in table
    assert "| Recall (sure) |" in table and 0.5 < tracked["recall_sure"] <= 1.0
