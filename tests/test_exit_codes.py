"""Every top-level script reports bad input the same way: one line on stderr, exit status 2.

Each script runs in its own process with an input that does not exist (or cannot be written), so the
check covers argument handling, the error class (a utils.common.errors.UserError) and the exit path.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils.common.errors import EXIT_BAD_INPUT

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(str(p.relative_to(ROOT)) for pattern in ("*.py", "benchmarks/*.py", "scripts/*.py")
                 for p in ROOT.glob(pattern))


def bad_input(script: str, tmp: Path) -> list[str]:
    """Arguments naming a missing file (or a folder under a regular file) for `script`."""
    missing = tmp / "missing"
    blocked = tmp / "a_file" / "sub"  # nothing can be created under a regular file, even as root
    return {
        "benchmarks/bench.py": ["--model-dir", str(missing), "--output-dir", str(tmp)],
        "benchmarks/bench_web.py": ["--model-dir", str(missing), "--output", str(tmp / "bench_web.md")],
        "benchmarks/bench_batch.py": ["--video", str(missing / "clip.mp4"), "--output-dir", str(tmp)],
        "benchmarks/bench_data.py": ["--zip", str(missing / "egohands_data.zip")],
        "benchmarks/bench_gesture.py": ["--hand-model", str(missing), "--gesture-model", str(missing)],
        "demo.py": ["--video", str(missing / "clip.mp4")],
        "labels_import.py": ["--voc", str(missing), "--output-dir", str(tmp / "out")],
        "mix_datasets.py": ["egohands", "--egohands-zip", str(missing / "egohands_data.zip"),
                            "--output-dir", str(tmp / "out")],
        "oxford_dataset_clean.py": ["--archive", str(missing / "hand_dataset.tar.gz"), "--output-dir", str(tmp)],
        "detect_multi_threaded.py": ["--source", str(missing / "clip.mp4"), "--display", "0"],
        "detect_single_threaded.py": ["--source", str(missing / "clip.mp4"), "--display", "0"],
        "detect_batch.py": [str(missing / "videos"), "--output", str(tmp / "out")],
        "egohands_dataset_clean.py": ["--zip", str(missing / "egohands_data.zip"), "--output-dir", str(tmp)],
        "evaluate.py": ["--model", str(missing / "m.tflite"), "--labels", str(missing / "labels.csv"),
                        "--images", str(missing), "--output-dir", str(tmp)],
        "export_inference_graph.py": ["--from-tfjs", str(missing), "--calibration", str(missing / "clip.mp4"),
                                      "--output_directory", str(tmp / "model")],
        "scripts/export_web.py": ["--model-dir", str(missing), "--output", str(tmp / "web_model")],
        "scripts/serve_web.py": ["--model-dir", str(missing), "--port", "0"],
        "scripts/fetch_pretrained.py": ["--cache-dir", str(blocked)],
        "generate_tfrecord.py": ["--input-dir", str(missing), "--output-dir", str(tmp / "data")],
        "scripts/make_chess_video.py": ["--zip", str(missing / "egohands_data.zip"), "--output", str(tmp / "c.mov")],
        "scripts/ship_weights.py": ["--checkpoint", str(missing), "--output-dir", str(tmp / "shipped")],
        "train.py": ["--run", "not/a/name"],
    }[script]


def test_every_script_is_covered():
    for script in SCRIPTS:
        bad_input(script, Path("/tmp"))  # a KeyError names a new script this test must learn about


@pytest.mark.timeout(120)
@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_input_is_one_line_and_exit_2(script, tmp_path):
    (tmp_path / "a_file").write_text("a file, not a folder")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("DISPLAY", None)
    result = subprocess.run([sys.executable, script, *bad_input(script, tmp_path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=110)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith((f"{Path(script).name}: error: ", "error: ")), lines[0]
    assert "Traceback" not in result.stderr
