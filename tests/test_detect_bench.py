"""bench.py runs end to end on a few frames and writes its table and chart (the figures: `make bench`)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(480)
def test_bench_smoke(hand_video, model_dir, tmp_path):
    result = subprocess.run([sys.executable, "benchmarks/bench.py", "--source", str(hand_video), "--max-frames", "4",
                             "--repeats", "1", "--output-dir", str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=470, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "bench.md").read_text()
    for row in ("original way", "single-threaded, frozen graph", "single-threaded, SavedModel",
                "single-threaded, TFLite fp32", "single-threaded, TFLite int8", "multi-threaded, 1 worker",
                "multi-threaded, 2 workers", "LiteRT", "tf.lite"):
        assert row in table, f"bench.md lacks {row!r}"
    assert "| 4 |" in table
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
