"""Nothing lost, whatever the input or signal (issue 12): outputs never destroy inputs or earlier outputs,
SIGTERM acts like Ctrl-C, an empty split keeps its records, detect() refuses what it cannot take, and every
bad input is one line and exit status 2. The signal cases run real processes and send real signals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import egohands_dataset_clean
import generate_tfrecord
from utils.common import fileio
from utils.common.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, UserError, pass_hint
from utils.common.fileio import atomic_outputs, atomic_path, check_distinct_paths, recover_stale
from utils.common.signals import deferred_signals, sigterm_as_ctrl_c
from utils.runtime import detector as runtime_detector

ROOT = Path(__file__).resolve().parent.parent
SINGLE, MULTI = "detect_single_threaded.py", "detect_multi_threaded.py"
POLL_S = 0.01
START_TIMEOUT_S = 120  # a deadline for a process to reach a state, not a speed claim


def env() -> dict:
    environ = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    environ.pop("DISPLAY", None)
    environ.pop("MAKELEVEL", None)
    return environ


def _default_stop_signals() -> None:
    # A test run started under `nohup` (or `cmd &`) passes ignored SIGHUP (SIGINT) on, and the scripts rightly keep
    # a signal they were started ignoring: the child starts with the defaults a terminal would give it.
    for number in (signal.SIGHUP, signal.SIGINT):
        signal.signal(number, signal.SIG_DFL)


def start(*argv, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, env=kwargs.pop("env", env()),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=kwargs.pop("preexec_fn", _default_stop_signals), **kwargs)


def wait_for(process: subprocess.Popen, ready) -> None:
    """Poll until ready() or the process ends; fail if neither happens by the deadline."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready() and process.poll() is None:
        assert time.monotonic() < deadline, "the process never reached the state to interrupt"
        time.sleep(POLL_S)


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(("INFO:", "["))]
    assert len(lines) == 1, stderr
    return lines[0]


def dead_pid() -> int:
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                             text=True, check=True)
    return int(process.stdout)


# ----------------------------------------------------------------------------- the swap itself

def test_swap_has_no_moment_without_old_or_new(tmp_path, monkeypatch):
    """A signal in the middle of the renames waits for them; an error in the middle undoes them all."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "old.jpg").write_bytes(b"old")
    (tmp_path / "labels.csv").write_text("old\n")
    real_replace = os.replace
    calls = []

    def replace_and_signal(src, dst):
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered right here without the fix
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace_and_signal)
    with pytest.raises(KeyboardInterrupt), sigterm_as_ctrl_c(), atomic_outputs() as swap:
        swap.path(tmp_path / "images").mkdir()
        (tmp_path / ".images.tmp-check").write_text("")  # not ours: never touched
        swap.path(tmp_path / "labels.csv").write_text("new\n")
        (next(tmp_path.glob(".images.*.tmp")) / "new.jpg").write_bytes(b"new")
    assert len(calls) == 4  # both aside, both in: all done before the interrupt
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["new.jpg"]
    assert (tmp_path / "labels.csv").read_text() == "new\n"
    assert hidden(tmp_path) == [".images.tmp-check"]

    def fail_second_rename_in(src, dst):
        if Path(dst) == tmp_path / "labels.csv" and ".tmp" in Path(src).name:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", fail_second_rename_in)
    with pytest.raises(OSError), atomic_outputs() as swap:
        swap.path(tmp_path / "images").mkdir()
        swap.path(tmp_path / "labels.csv").write_text("newer\n")
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["new.jpg"]  # rolled back together
    assert (tmp_path / "labels.csv").read_text() == "new\n"
    assert hidden(tmp_path) == [".images.tmp-check"]


def test_a_killed_swap_is_repaired_by_the_next_write(tmp_path):
    pid = dead_pid()
    folder = tmp_path / "images"
    (tmp_path / f".images.{pid}-abcd1234.old").mkdir()          # moved aside, new one never arrived
    (tmp_path / f".images.{pid}-abcd1234.old" / "old.jpg").write_bytes(b"old")
    (tmp_path / f".images.{pid}-efgh5678.tmp").mkdir()          # the new one, half-written
    (tmp_path / f".out.mp4.{pid}-ijkl9012.tmp.mp4").write_bytes(b"half")
    (tmp_path / "out.mp4").write_bytes(b"earlier")
    (tmp_path / f".out.mp4.{pid}-mnop3456.old").write_bytes(b"earlier")  # new one arrived: aside is junk
    live = tmp_path / f".out.mp4.{os.getppid()}-qrst7890.tmp.mp4"        # a running writer's: kept
    live.write_bytes(b"busy")
    recover_stale(folder)
    assert [p.name for p in folder.iterdir()] == ["old.jpg"]
    with atomic_path(tmp_path / "out.mp4", suffix=".mp4") as tmp:
        tmp.write_bytes(b"new")
    assert (tmp_path / "out.mp4").read_bytes() == b"new"
    assert hidden(tmp_path) == [live.name]


def test_held_signals_arrive_after_the_block():
    order = []
    with pytest.raises(KeyboardInterrupt), sigterm_as_ctrl_c():
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            order.append("block finished")
        order.append("not reached")
    assert order == ["block finished"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_outputs_that_are_inputs_or_each_other_are_refused(tmp_path):
    video = tmp_path / "x.avi"
    video.write_bytes(b"video")
    os.link(video, tmp_path / "hard.avi")
    (tmp_path / "link.avi").symlink_to(video)
    for output in (video, tmp_path / "hard.avi", tmp_path / "link.avi", tmp_path / "sub" / ".." / "x.avi"):
        with pytest.raises(UserError, match="--output would overwrite --source"):
            check_distinct_paths({"--output": output}, {"--source": [video]})
    with pytest.raises(UserError, match="--json and --output name the same file"):
        check_distinct_paths({"--json": tmp_path / "o.mp4", "--output": tmp_path / "o.mp4"})
    check_distinct_paths({"--json": "-", "--output": tmp_path / "o.mp4"}, {"--source": [video]})


# ----------------------------------------------------------------------------- detectors

@pytest.mark.parametrize("script", [SINGLE, MULTI])
@pytest.mark.parametrize("clash", ["output", "json", "json_is_output"])
def test_detector_never_overwrites_its_input(script, clash, tmp_path):
    video = tmp_path / "x.avi"
    video.write_bytes(b"precious video bytes")
    args = {"output": ["--output", video], "json": ["--json", video],
            "json_is_output": ["--output", tmp_path / "o.mp4", "--json", tmp_path / "o.mp4"]}[clash]
    result = subprocess.run([sys.executable, script, "--source", str(video), "--display", "0",
                             *map(str, args)], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_BAD_INPUT
    assert "would overwrite --source" in one_error_line(result.stderr) or "name the same file" in result.stderr
    assert video.read_bytes() == b"precious video bytes" and sorted(os.listdir(tmp_path)) == ["x.avi"]


@pytest.mark.parametrize("args, expected", [
    (["--width", "100000", "--height", "100000"], "--width and --height must be at most 8192"),
    (["--source", "99999999999999999999"], "99999999999999999999: not a camera index (0..9999)"),
    (["--output-size", "1", "--output", "{tmp}/x.mp4"], "--output needs frames of at least 2x2: raise --output-size"),
])
def test_sizes_and_camera_indices_are_bounded(args, expected, tmp_path):
    args = [a.format(tmp=tmp_path) for a in args]
    result = subprocess.run([sys.executable, SINGLE, "--display", "0", *args], cwd=ROOT, env=env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_BAD_INPUT
    last = result.stderr.strip().splitlines()[-1]
    assert expected in last and "Traceback" not in result.stderr and "try a .mp4" not in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_one_pixel_source_says_so_not_try_mp4(tmp_path, model_dir):
    cv2.imwrite(str(tmp_path / "dot.png"), np.zeros((1, 1, 3), np.uint8))
    result = subprocess.run([sys.executable, SINGLE, "--source", str(tmp_path / "dot.png"), "--display", "0",
                             "--width", "0", "--height", "0", "--output", str(tmp_path / "x.mp4")],
                            cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_BAD_INPUT
    assert "frames of 1x1 pixels are too small for a video" in one_error_line(result.stderr)
    assert sorted(os.listdir(tmp_path)) == ["dot.png"]


def test_a_truncated_video_is_reported(tmp_path, model_dir):
    full = tmp_path / "full.avi"
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"mp4v"), 30, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(100):  # noise: every frame takes its share of the file
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[:int(full.stat().st_size * 0.3)])
    result = subprocess.run([sys.executable, SINGLE, "--source", str(cut), "--display", "0"], cwd=ROOT,
                            env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "of its 100 frames (the file is truncated or corrupt)" in warning[0]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("script", [SINGLE, MULTI])
def test_sigterm_stops_a_detector_like_ctrl_c(script, hand_video, model_dir, tmp_path):
    video, lines = tmp_path / "run.mp4", tmp_path / "run.jsonl"
    process = start(script, "--source", hand_video, "--display", "0", "--model", model_dir / "hand_detector.tflite",
                    "--num-workers", "1", "--num-threads", "1", "--output", video, "--json", lines)
    try:
        wait_for(process, lambda: any(p.stat().st_size for p in tmp_path.glob(".run.jsonl.*")))
        assert process.poll() is None, "the run ended before it could be stopped"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert "stopped by SIGTERM" in stdout and "FPS" in stdout
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while capture.read()[0]:
        frames += 1
    records = [line for line in lines.read_text().splitlines()]
    assert frames > 0 and len(records) == frames  # playable video, one complete JSON line per frame
    assert all(r.startswith("{") and r.endswith("}") for r in records)
    assert hidden(tmp_path) == []


@pytest.mark.timeout(180)
def test_temporaries_of_a_killed_detector_are_removed_by_the_next_run(hand_video, model_dir, tmp_path):
    args = ["--source", hand_video, "--display", "0", "--model", model_dir / "hand_detector.tflite",
            "--num-threads", "1", "--output", tmp_path / "run.mp4", "--json", tmp_path / "run.jsonl"]
    process = start(SINGLE, *args)
    try:
        wait_for(process, lambda: any(p.stat().st_size for p in tmp_path.glob(".run.jsonl.*")))
        process.kill()  # SIGKILL: no handler runs
        process.communicate(timeout=60)
    finally:
        process.kill()
    assert len(hidden(tmp_path)) == 2 and not (tmp_path / "run.mp4").exists()
    result = subprocess.run([sys.executable, SINGLE, *map(str, args), "--max-frames", "3"], cwd=ROOT, env=env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert hidden(tmp_path) == [] and len((tmp_path / "run.jsonl").read_text().splitlines()) == 3


# ----------------------------------------------------------------------------- detect() inputs

@pytest.fixture(scope="module")
def detector(model_dir):
    return runtime_detector.load_inference_graph(model_dir / "hand_detector.tflite", 1)


@pytest.fixture(scope="module")
def hand_frame(egohands_sample_zip) -> np.ndarray:
    with zipfile.ZipFile(egohands_sample_zip) as zf:
        name = sorted(n for n in zf.namelist() if "CHESS_COURTYARD_B_T/" in n and n.endswith(".jpg"))[10]
        bgr = cv2.imdecode(np.frombuffer(zf.read(name), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_detect_scales_float_and_16_bit_images(detector, hand_frame):
    expected = detector.detect(hand_frame)
    assert expected.scores[0] > 0.9
    for image in (hand_frame / 255.0, (hand_frame / 255.0).astype(np.float32),
                  hand_frame.astype(np.uint16) * 257, hand_frame.astype(np.int64)):
        got = detector.detect(image)
        np.testing.assert_allclose(got.scores, expected.scores, atol=1e-6)
        np.testing.assert_allclose(got.boxes, expected.boxes, atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda f: None, "the image is None (cv2.imread gives None"),
    (lambda f: f[:0, :0], "the image is empty (0x0 pixels)"),
    (lambda f: f[..., 0], "got shape [720, 1280]; convert it with cv2.cvtColor"),
    (lambda f: np.dstack([f, f[..., :1]]), "drop the alpha channel"),
    (lambda f: f[np.newaxis], "pass one RGB image [H,W,3] per call"),
    (lambda f: f > 128, "a bool array is a mask, not an image"),
    (lambda f: f.astype(np.float32), "float images must hold 0..1, this one holds 0..255"),
    (lambda f: np.full(f.shape, np.nan), "NaN"),
    (lambda f: f.astype(np.int32) * 2, "integer images must hold 0..255"),
    (lambda f: f.tolist(), "expected a NumPy array, got list"),
])
def test_detect_refuses_what_it_cannot_take_in_one_line(detector, hand_frame, make, message):
    with pytest.raises(runtime_detector.ImageError) as info:
        detector.detect(make(hand_frame))
    assert isinstance(info.value, UserError) and message in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- data scripts

@pytest.fixture(scope="module")
def sample_clean(egohands_sample_zip, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    assert egohands_dataset_clean.main(["--zip", str(egohands_sample_zip), "--output-dir", str(out),
                                        "--train-videos", "CARDS_OFFICE_S_B", "--test-videos",
                                        "CHESS_COURTYARD_B_T", "--no-progress"]) == 0
    return out


def consistent(out: Path) -> None:
    """Every split's CSV names exactly the images its folder holds: one run's outputs, never a mix."""
    for split in ("train", "test", "eval"):
        named = set(pd.read_csv(out / f"{split}_labels.csv")["filename"])
        assert named == {p.name for p in (out / "images" / split).iterdir()}, split
    assert hidden(out) == []


def test_interrupt_during_the_split_swap_keeps_a_whole_dataset(sample_clean, egohands_sample_zip, tmp_path,
                                                               monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert egohands_dataset_clean.main(["--zip", str(egohands_sample_zip), "--output-dir", str(out),
                                        "--train-videos", "CARDS_OFFICE_S_B", "--test-videos",
                                        "CHESS_COURTYARD_B_T", "--no-progress"]) == 0
    real_replace = os.replace

    def ctrl_c_at_the_swap(src, dst):
        if Path(dst) == out / "images" / "train":
            os.kill(os.getpid(), signal.SIGINT)  # what a user's Ctrl-C at 0.46 s did
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", ctrl_c_at_the_swap)
    rc = egohands_dataset_clean.main(["--zip", str(egohands_sample_zip), "--output-dir", str(out),
                                      "--train-videos", "CHESS_COURTYARD_B_T", "--test-videos",
                                      "CARDS_OFFICE_S_B", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == EXIT_INTERRUPTED and "interrupted" in one_error_line(err) and "Traceback" not in err
    consistent(out)
    assert all(n.startswith("CHESS") for n in pd.read_csv(out / "train_labels.csv")["filename"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_cleaning_keeps_the_earlier_dataset(sample_clean, egohands_sample_zip, tmp_path, sig):
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    for split in ("train", "test", "eval"):
        (out / "images" / split).mkdir()
        for image in (sample_clean / "images" / split).iterdir():
            os.link(image, out / "images" / split / image.name)
        os.link(sample_clean / f"{split}_labels.csv", out / f"{split}_labels.csv")
    process = start("egohands_dataset_clean.py", "--zip", egohands_sample_zip, "--output-dir", out,
                    "--train-videos", "CHESS_COURTYARD_B_T", "--test-videos", "CARDS_OFFICE_S_B",
                    "--workers", "1", "--no-progress")
    try:
        wait_for(process, lambda: any((out / "images").glob(".train.*.tmp/*.jpg")))
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert "interrupted by" in one_error_line(stderr) or "interrupted;" in stderr
    assert tree(out) == tree(sample_clean)  # the earlier dataset, byte for byte
    consistent(out)


@pytest.fixture(scope="module")
def sample_records(sample_clean, tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("records")
    assert generate_tfrecord.main(["--input-dir", str(sample_clean), "--output-dir", str(data),
                                   "--no-progress"]) == 0
    return data


@pytest.mark.timeout(300)
def test_sigterm_during_records_keeps_the_earlier_records(sample_clean, sample_records, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for path in sample_records.iterdir():
        os.link(path, data / path.name)
    before = tree(data)
    process = start("generate_tfrecord.py", "--input-dir", sample_clean, "--output-dir", data, "--shard-size",
                    "7", "--workers", "1", "--no-progress")
    try:
        wait_for(process, lambda: any(data.glob(".train.record*.tmp")))
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert "interrupted by SIGTERM" in stderr.strip().splitlines()[-1]
    assert tree(data) == before and hidden(data) == []


def test_an_empty_split_keeps_its_earlier_records(sample_clean, sample_records, tmp_path, capsys):
    data, inputs = tmp_path / "data", tmp_path / "in"
    data.mkdir()
    inputs.mkdir()
    for path in sample_records.iterdir():
        os.link(path, data / path.name)
    before = (data / "train.record").read_bytes()
    (inputs / "train_labels.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n")
    rc = generate_tfrecord.main(["--input-dir", str(inputs), "--images-dir", str(sample_clean / "images"),
                                 "--output-dir", str(data), "--splits", "train", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0 and len(before) > 1_000_000
    assert (data / "train.record").read_bytes() == before
    assert f"train_labels.csv has no rows; kept the earlier {data / 'train.record'}" in one_error_line(err)


def test_a_truncated_jpeg_is_refused_by_cleaning(egohands_sample_zip, tmp_path, capsys):
    cut = tmp_path / "cut.zip"
    with zipfile.ZipFile(egohands_sample_zip) as src, zipfile.ZipFile(cut, "w") as dst:
        victim = sorted(n for n in src.namelist() if "CARDS_OFFICE_S_B/" in n and n.endswith(".jpg"))[5]
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data[:len(data) // 3] if info.filename == victim else data)  # cut to a third
    out = tmp_path / "out"
    rc = egohands_dataset_clean.main(["--zip", str(cut), "--output-dir", str(out), "--no-progress"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == EXIT_BAD_INPUT and "the JPEG is truncated" in line and "CARDS_OFFICE_S_B/frame_" in line
    assert tree(out) == {} and hidden(out) == []  # no split folder, no CSV, no temporary


# ----------------------------------------------------------------------------- messages for make users

def test_download_failure_names_the_make_variable_under_make(tmp_path, monkeypatch):
    monkeypatch.delenv("MAKELEVEL", raising=False)  # `make test` itself runs under make
    argv = ["egohands_dataset_clean.py", "--url", "http://127.0.0.1:9/egohands_data.zip", "--download-to",
            tmp_path / "e.zip", "--output-dir", tmp_path / "out", "--no-progress"]
    for makelevel, hint in ((None, "--zip PATH"), ("1", "EGOHANDS_ZIP=PATH")):
        environ = {k: v for k, v in env().items() if k != "MAKELEVEL"}
        environ = environ if makelevel is None else dict(environ, MAKELEVEL=makelevel)
        result = subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, env=environ, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == EXIT_BAD_INPUT
        assert result.stderr.strip().splitlines()[-1].endswith(f"download it yourself and pass {hint}")
    assert pass_hint("--archive", "OXFORD_ARCHIVE") == "--archive PATH"


def test_bench_bad_input_exits_2_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "benchmarks/bench.py", "--model-dir", str(tmp_path), "--output-dir",
                             str(tmp_path / "results")], cwd=ROOT, env=env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == EXIT_BAD_INPUT
    assert "run `make model` first" in one_error_line(result.stderr)
