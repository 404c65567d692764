"""detect_batch.py end to end on real clips (cut from the shared hand video and EgoHands frames here): its
per-video JSON equals detect_single_threaded.py's, a killed run resumes, a truncated video fails alone."""
from __future__ import annotations

import json
import os
import shutil
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

from utils.common.errors import EXIT_INTERRUPTED, UserError
from utils.common.fileio import sha256_of
from utils.runtime import batch
from utils.runtime.detector import default_model_path

ROOT = Path(__file__).resolve().parent.parent
BATCH = "detect_batch.py"
SINGLE = "detect_single_threaded.py"
CLIP_FRAMES = 30      # each cut of the hand video
EGO_FRAMES = 20       # each EgoHands sequence
DESK_STARTS = (0, 90, 180, 270)
GOOD = ["desk/desk_0", "desk/desk_1", "desk/desk_2", "desk/desk_3", "egohands/CARDS_OFFICE_S_B",
        "egohands/CARDS_OFFICE_S_B_frames", "egohands/CHESS_COURTYARD_B_T"]


def script_env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("DISPLAY", None)
    return env


def run_script(script: str, *args, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, env=script_env(),
                          capture_output=True, text=True, timeout=timeout)


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 30.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def clips(hand_video, egohands_sample_zip, tmp_path_factory) -> Path:
    """7 real clips: 4 cuts of the hand video, an EgoHands video and 2 EgoHands frame folders."""
    root = tmp_path_factory.mktemp("clips")
    capture = cv2.VideoCapture(str(hand_video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    for number, start in enumerate(DESK_STARTS):
        _write_video(root / "desk" / f"desk_{number}.mp4", frames[start:start + CLIP_FRAMES])
    with zipfile.ZipFile(egohands_sample_zip) as archive:
        def names(video: str) -> list[str]:
            return sorted(n for n in archive.namelist() if f"/{video}/" in n and n.endswith(".jpg"))

        cards = names("CARDS_OFFICE_S_B")
        decoded = [cv2.imdecode(np.frombuffer(archive.read(n), np.uint8), cv2.IMREAD_COLOR)
                   for n in cards[:EGO_FRAMES]]
        _write_video(root / "egohands" / "CARDS_OFFICE_S_B.mp4", decoded)
        for folder, chosen in (("CARDS_OFFICE_S_B_frames", cards[EGO_FRAMES:2 * EGO_FRAMES]),
                               ("CHESS_COURTYARD_B_T", names("CHESS_COURTYARD_B_T")[:EGO_FRAMES])):
            (root / "egohands" / folder).mkdir()
            for name in chosen:
                (root / "egohands" / folder / name.rsplit("/", 1)[1]).write_bytes(archive.read(name))
    return root


def _source(clips: Path, name: str) -> Path:
    video = clips / f"{name}.mp4"
    return video if video.exists() else clips / name


def _single_json(clips: Path, name: str, out: Path, *flags: str) -> bytes:
    path = out / f"{name.replace('/', '_')}.single.jsonl"
    result = run_script(SINGLE, "--source", _source(clips, name), "--display", "0", "--json", path, *flags)
    assert result.returncode == 0, result.stderr
    return path.read_bytes()


def _hidden_temporaries(folder: Path) -> list[Path]:
    """What an atomic write leaves when it is cut short (.NAME.<pid>-<random>.tmp / .old)."""
    return [p for p in folder.rglob(".*") if p.is_file()]


@pytest.mark.timeout(240)
def test_batch_equals_single_threaded_and_a_truncated_video_fails_alone(clips, model_dir, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(clips, videos)
    whole = (videos / "desk" / "desk_3.mp4").read_bytes()
    (videos / "desk" / "broken.mp4").write_bytes(whole[:len(whole) // 2])  # an interrupted copy
    out = tmp_path / "out"
    result = run_script(BATCH, videos, "--output", out, "--workers", "2")
    assert result.returncode == batch.EXIT_SOME_FAILED, result.stdout + result.stderr
    assert "2 worker(s)" in result.stderr

    summary = pd.read_parquet(out / "summary.parquet")
    assert sorted(summary.video) == sorted(GOOD + ["desk/broken"])
    table = pd.read_csv(out / "summary.csv")
    assert list(table.columns) == list(summary.columns) == list(batch.SUMMARY_COLUMNS)
    assert table.video.tolist() == summary.video.tolist() and table.status.tolist() == summary.status.tolist()
    assert table.frames.fillna(-1).tolist() == summary.frames.fillna(-1).tolist()
    broken = summary.set_index("video").loc["desk/broken"]
    assert broken.status == batch.STATUS_FAILED and "broken.mp4" in broken.error
    assert not (out / "desk" / "broken.jsonl").exists()
    ok = summary[summary.status == batch.STATUS_OK].set_index("video")
    assert sorted(ok.index) == sorted(GOOD)
    assert set(ok.model_sha256) == {sha256_of(default_model_path(model_dir))}
    assert len(set(ok.worker)) == 2  # both workers took videos
    assert not _hidden_temporaries(out)
    for name in GOOD:
        mine = (out / f"{name}.jsonl").read_bytes()
        assert mine == _single_json(videos, name, tmp_path), name  # image records name their file: same place
        records = [json.loads(line) for line in mine.splitlines()]
        expected = CLIP_FRAMES if name.startswith("desk") else EGO_FRAMES
        assert ok.loc[name, "frames"] == len(records) == expected
        assert ok.loc[name, "frames_with_hands"] == sum(bool(r["boxes"]) for r in records)
        assert ok.loc[name, "hands_per_frame"] == pytest.approx(sum(len(r["boxes"]) for r in records) / expected,
                                                                abs=1e-4)
        assert ok.loc[name, "fps"] > 0


def _start_batch(videos: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, BATCH, str(videos), "--output", str(out), "--workers", "1",
                             "--detect-every", "2"], cwd=ROOT, env=script_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_rows(out: Path, more_than: int, process: subprocess.Popen, timeout: float = 90) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = sorted((out / batch.STATE_DIR).rglob("*.json")) if (out / batch.STATE_DIR).exists() else []
        if len(rows) > more_than:
            return rows
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no more than {more_than} video(s) done in {timeout} s")


def _descendants(pid: int) -> list:
    """The processes a run started: its children, and Ray's agents (started apart, named by their raylet)."""
    import psutil

    children = psutil.Process(pid).children(recursive=True)
    raylets = {str(p.pid) for p in children if p.name() == "raylet"}
    agents = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("RAY_RAYLET_PID") in raylets and process not in children:
                agents.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return children + agents


def _finished(out: Path) -> dict[str, tuple[int, int]]:
    """Each finished video's JSON: (inode, mtime_ns), to see that a rerun does not write it again."""
    done = {}
    for row_file in (out / batch.STATE_DIR).rglob("*.json"):
        row = json.loads(row_file.read_text())
        if row["status"] == batch.STATUS_OK:
            stat = (out / row["output"]).stat()
            done[row["video"]] = (stat.st_ino, stat.st_mtime_ns)
    return done


@pytest.mark.timeout(300)
def test_killed_runs_resume_without_redoing_or_losing_videos(clips, model_dir, tmp_path):
    import psutil

    out = tmp_path / "out"
    # 1. SIGTERM (kill, a supervisor) after the first video: a clean stop, the summary says what is left.
    first = _start_batch(clips, out)
    _wait_for_rows(out, 0, first)
    first.send_signal(signal.SIGTERM)
    stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == EXIT_INTERRUPTED, stdout + stderr
    summary = pd.read_parquet(out / "summary.parquet")
    assert len(summary) == len(GOOD) and (summary.status == batch.STATUS_NOT_DONE).any()
    done_first = _finished(out)
    assert 1 <= len(done_first) < len(GOOD)
    assert not _hidden_temporaries(out)

    # 2. SIGKILL (a crash, power loss) after one more video: nothing can clean up.
    second = _start_batch(clips, out)
    _wait_for_rows(out, len(done_first), second)
    ray_processes = _descendants(second.pid)
    second.kill()
    second.communicate(timeout=30)
    _, alive = psutil.wait_procs(ray_processes, timeout=5)
    for process in alive:  # Ray's agents notice their raylet is gone only after a minute, and hold SIGTERM
        process.kill()
    _, alive = psutil.wait_procs(alive, timeout=10)
    assert not alive
    done_second = _finished(out)
    assert len(done_second) > len(done_first)
    assert all(done_second[name] == stat for name, stat in done_first.items())

    # 3. The same command goes on: only the rest is done, then every video is there.
    third = _start_batch(clips, out)
    stdout, stderr = third.communicate(timeout=150)
    assert third.returncode == 0, stdout + stderr
    assert f"({len(done_second)} done earlier, skipped)" in stdout
    done = _finished(out)
    assert sorted(done) == sorted(GOOD)
    assert all(done[name] == stat for name, stat in done_second.items())  # not written again
    summary = pd.read_parquet(out / "summary.parquet")
    assert (summary.status == batch.STATUS_OK).all() and len(summary) == len(GOOD)
    assert not _hidden_temporaries(out)  # the killed worker's temporary was cleaned up
    for name in ("desk/desk_1", "egohands/CHESS_COURTYARD_B_T"):  # tracked output, as the detector writes it
        mine = (out / f"{name}.jsonl").read_bytes()
        assert mine == _single_json(clips, name, tmp_path, "--detect-every", "2")
        assert b'"track_ids"' in mine and b'"predicted":[true' in mine


def test_inputs_folder_list_and_glob(clips, tmp_path):
    by_folder = batch.expand_inputs(clips)
    assert [item.name for item in by_folder] == sorted(GOOD, key=lambda n: n.lower())
    assert all(Path(item.source).is_absolute() for item in by_folder)
    assert [i.name for i in batch.expand_inputs(f"{clips}/desk/*.mp4")] == [f"desk_{n}" for n in range(4)]

    listed = tmp_path / "videos.txt"
    listed.write_text(f"# two of them\n{clips}/desk/desk_1.mp4\n\n{os.path.relpath(clips / 'egohands', tmp_path)}"
                      "/CHESS_COURTYARD_B_T\n")
    assert [i.name for i in batch.expand_inputs(listed)] == ["desk/desk_1", "egohands/CHESS_COURTYARD_B_T"]
    named = tmp_path / "videos.csv"
    named.write_text(f"path,name\n{clips}/desk/desk_0.mp4,a\n{clips}/egohands/CARDS_OFFICE_S_B.mp4,b\n")
    assert [(Path(i.source).name, i.name) for i in batch.expand_inputs(named)] == [
        ("desk_0.mp4", "a"), ("CARDS_OFFICE_S_B.mp4", "b")]

    named.write_text(f"path,name\n{clips}/desk/desk_0.mp4,same\n{clips}/desk/desk_1.mp4,same\n")
    with pytest.raises(UserError, match="output name same.jsonl"):
        batch.expand_inputs(named)
    listed.write_text(f"{clips}/desk/missing.mp4\n")
    with pytest.raises(UserError, match="entry 1"):
        batch.expand_inputs(listed)
    with pytest.raises(UserError, match="no video"):
        batch.expand_inputs(tmp_path / "*.mkv")


def test_help_explains_every_flag():
    result = run_script(BATCH, "--help", timeout=60)
    assert result.returncode == 0
    for flag in ("--output", "--model", "--workers", "--address", "--track", "--detect-every", "--redo",
                 "--ship-code", "--threads-per-worker", "--progress"):
        assert flag in result.stdout
    assert "(default: None)" not in result.stdout
    assert f"{batch.EXIT_SOME_FAILED} some videos failed" in " ".join(result.stdout.split())


def test_workers_needed_is_the_cluster_arithmetic():
    assert batch.workers_needed(4_800, 20.0) == 1            # 4800 / 3600 / 20 = 0.07 of one worker
    assert batch.workers_needed(3_670 * 3600 * 30, 20.0) == 5_505  # 110,100 FPS / 20
    assert batch.workers_needed(72_000, 20.0) == 1 and batch.workers_needed(72_001, 20.0) == 2
    assert batch.workers_needed(72_000, 20.0, hours=0.5) == 2
    with pytest.raises(ValueError):
        batch.workers_needed(1, 0.0)


@pytest.mark.timeout(180)
def test_a_worker_killed_mid_video_fails_that_video_only(clips, model_dir, tmp_path):
    import psutil

    videos = tmp_path / "videos"
    shutil.copytree(clips / "desk", videos)
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, BATCH, str(videos), "--output", str(out), "--workers", "1"], cwd=ROOT,
                           env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(out, 0, run)
    workers = [p for p in _descendants(run.pid) if p.name().startswith("ray::BatchWorker")]
    assert len(workers) == 1
    workers[0].kill()  # out of memory, a crash in native code
    psutil.wait_procs(workers, timeout=10)
    stdout, stderr = run.communicate(timeout=120)
    summary = pd.read_parquet(out / "summary.parquet").set_index("video")
    failed = summary[summary.status == batch.STATUS_FAILED]
    # The video it was running fails, or, if it had not reported a frame yet, is tried once more elsewhere;
    # the one queued behind it is always tried again: at most one lost, and the exit status says which.
    assert run.returncode == (batch.EXIT_SOME_FAILED if len(failed) else 0), stdout + stderr
    assert len(summary) == len(DESK_STARTS) and len(failed) <= 1
    assert (summary.status == batch.STATUS_OK).sum() == len(DESK_STARTS) - len(failed)
    assert all(error == "the worker stopped: The actor died unexpectedly before finishing this task."
               for error in failed.error)
    assert not _hidden_temporaries(out)  # the killed worker's temporary is gone


def test_a_video_is_done_only_with_the_same_model_options_and_file(clips, tmp_path):
    video = tmp_path / "clip.mp4"
    shutil.copyfile(clips / "desk" / "desk_0.mp4", video)
    item = batch.expand_inputs(video)[0]
    out = tmp_path / "out"
    settings = batch.settings_key(batch.DetectOptions(), "a" * 64)
    row = {"video": item.name, "status": batch.STATUS_OK, "settings": settings,
           "source_signature": batch.source_signature(item.source)}
    batch.write_row(out, item, row)
    assert batch.finished_row(out, item, settings) is None  # no JSON lines: not done
    batch.json_path(out, item).write_text("{}\n")
    assert batch.finished_row(out, item, settings) == row
    assert batch.finished_row(out, item, batch.settings_key(batch.DetectOptions(detect_every=3), "a" * 64)) is None
    assert batch.finished_row(out, item, batch.settings_key(batch.DetectOptions(), "b" * 64)) is None
    video.write_bytes(video.read_bytes() + b"\0")  # the file was replaced
    assert batch.finished_row(out, item, settings) is None
