"""Bad input to the detector scripts: one clear line on stderr, exit status 2, nothing half-written."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import detect_multi_threaded
import detect_single_threaded
from utils import detector_utils
from utils.common import config
from utils.common.errors import EXIT_BAD_INPUT, EXIT_FAILED
from utils.detector_utils import Detections
from utils.runtime import detector as runtime_detector

SCRIPTS = {"single": detect_single_threaded, "multi": detect_multi_threaded}


def _error_line(capfd) -> str:
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("INFO: ")]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert ": error: " in lines[0]
    return lines[0]


def _a_file(path):
    path.write_text("")
    return path


@pytest.fixture(params=sorted(SCRIPTS))
def script(request):
    return SCRIPTS[request.param]


@pytest.mark.parametrize("make_args, expected", [
    (lambda tmp, video: ["--source", tmp / "missing.mp4"], r"missing\.mp4: no such file or folder"),
    (lambda tmp, video: ["--source", (tmp / "notes.txt", (tmp / "notes.txt").write_text("hi"))[0]],
     r"notes\.txt: cannot open it as a video"),
    (lambda tmp, video: ["--source", "99"], r"camera 99: cannot open it"),
    (lambda tmp, video: ["--source", video, "--model", (tmp / "m.txt", (tmp / "m.txt").write_text("x"))[0]],
     r"m\.txt: unsupported model file"),
    (lambda tmp, video: ["--source", video, "--model",
                         (tmp / "c.tflite", (tmp / "c.tflite").write_bytes(b"TFL3" + b"\x07" * 300))[0]],
     r"c\.tflite: not a loadable TFLite model"),
    (lambda tmp, video: ["--source", video, "--model", tmp / "nope.tflite"],
     r"nope\.tflite: model file not found"),
    (lambda tmp, video: ["--source", video, "--output", _a_file(tmp / "file") / "o.mp4"],
     r"o\.mp4: --output cannot be written: .*file is not a folder"),
    (lambda tmp, video: ["--source", video, "--json", _a_file(tmp / "f2") / "o.jsonl"],
     r"o\.jsonl: --json cannot be written"),
    (lambda tmp, video: ["--source", video, "--output", tmp / "o.gif"], r"o\.gif: --output must end in"),
])
def test_bad_input_is_one_line_and_a_failure(script, make_args, expected, tmp_path, hand_video, model_dir,
                                             capfd):
    (tmp_path / "out").mkdir()
    argv = [str(a) for a in make_args(tmp_path, hand_video)]
    argv += ["--display", "0", "--max-frames", "3"]
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "out" / "video.mp4")]
    if "--json" not in argv:
        argv += ["--json", str(tmp_path / "out" / "lines.jsonl")]
    assert script.main(argv) == EXIT_BAD_INPUT
    assert re.search(expected, _error_line(capfd))
    assert not list((tmp_path / "out").iterdir()), "nothing may be written on error"


def test_display_without_a_screen_is_refused_before_any_work(script, hand_video, monkeypatch, capfd):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert script.main(["--source", str(hand_video), "--display", "1"]) == EXIT_BAD_INPUT
    assert "DISPLAY is not set; use --display 0" in _error_line(capfd)


def test_bad_option_values_exit_with_usage(script, capfd):
    with pytest.raises(SystemExit) as info:
        script.main(["--num-workers", "0"])
    assert info.value.code == 2 and "--num-workers must be >= 1" in capfd.readouterr().err


def test_exit_status_of_the_real_process(tmp_path):
    result = subprocess.run([sys.executable, "detect_multi_threaded.py", "--source", str(tmp_path / "no.mp4"),
                             "--display", "0"], cwd=config.ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.strip().endswith("no.mp4: no such file or folder; pass a camera index, a video "
                                          "file, a stream URL, an image, or a folder or glob of images")


class _FailingDetector(detector_utils.HandDetector):
    """Finds nothing, and raises on its 10th frame (a crash inside a worker)."""

    def __init__(self):
        super().__init__(config.MODEL_DIR / "fake.tflite", {1: "hand"}, "fake")
        self.calls = 0

    def _detect(self, rgb):
        self.calls += 1
        if self.calls == 10:
            raise RuntimeError("interpreter exploded")
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))


@pytest.mark.timeout(60)
def test_a_worker_error_is_reported_never_swallowed(hand_video, tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(runtime_detector, "load_inference_graph", lambda path, threads=None: _FailingDetector())
    argv = ["--source", str(hand_video), "--display", "0", "--num-workers", "2", "--model", "fake.tflite",
            "--json", str(tmp_path / "x.jsonl"), "--output", str(tmp_path / "x.mp4")]
    assert detect_multi_threaded.main(argv) == EXIT_FAILED  # a crash, not bad input
    err = capfd.readouterr().err
    assert "Traceback" in err and "RuntimeError: interpreter exploded" in err
    assert re.fullmatch(r"detect_multi_threaded\.py: error: worker \d failed: "
                        r"RuntimeError: interpreter exploded", err.strip().splitlines()[-1])
    assert not list(tmp_path.iterdir()), "a failed run leaves no output behind"
