"""`make demo` the way a newcomer runs it: a fresh clone (no ../shared beside it, no display, no camera, no
VIDEO) shows hands in the shipped sample: a playable annotated video, its JSON lines and a PNG with boxes.

The clone is the files `git clone` would give once the working tree is committed (tracked and untracked,
not ignored, as they are now), in a folder with no shared/ beside it. It reuses this venv (make's install
step is taken as done) and the test model (building one is `make model`'s test, tests/test_make_model.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.test_detect_cli import VIDEO_FRAMES, count_video_frames, read_json_lines, script_env
from utils.runtime.demo import PICTURE_FRAMES, PICTURE_TITLE_HEIGHT, picture_frames, picture_size
from utils.runtime.detector import BOX_COLOR_BGR
from utils.runtime.tracking import LABEL_FONT_SCALE  # the sample is under 640 wide: the unscaled size

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = Path("samples") / "hand_desk_480.mp4"  # config.SAMPLE_HAND_VIDEO, as the clone names it
SAMPLE_SIZE = (480, 480)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A pixel of a drawn box: within this distance (sum over B, G, R) of BOX_COLOR_BGR after mp4v and scaling.
BOX_COLOR_TOLERANCE = 120


def fresh_env(clone: Path) -> dict:
    """The environment of a newcomer's shell: no DISPLAY (script_env), no VIDEO, no shared data."""
    env = script_env()
    for name in ("VIDEO", "MODEL_DIR", "SHARED", "HANDTRACK_MODEL_DIR", "HANDTRACK_GESTURE_DIR"):
        env.pop(name, None)
    env["HANDTRACK_SHARED_DIR"] = str(clone.parent / "shared")  # where a clone looks: nothing there
    return env


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no list of the files a clone has")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout
    clone = tmp_path_factory.mktemp("fresh") / "handtracking"
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        # A tracked file deleted in the working tree is not in the next clone, nor is node_modules/ ever.
        if source.is_file() and "node_modules" not in Path(name).parts:
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    assert not (clone.parent / "shared").exists() and (clone / SAMPLE).is_file()
    return clone


@pytest.fixture(scope="module")
def make_demo(fresh_clone, model_dir) -> subprocess.CompletedProcess:
    venv = Path(sys.prefix)
    if not (venv / ".installed").is_file():
        pytest.skip(f"{venv} is not the project's venv (no .installed): run the tests with `make test`")
    # VENV and MODEL_DIR: this venv and the test model, already built; -o: make's install step counts as done
    # (the clone's requirement files are newer than the venv's stamp); SHARED: the clone's ../shared, absent.
    command = ["make", "--no-print-directory", "demo", f"VENV={venv}", f"MODEL_DIR={model_dir}",
               f"SHARED={fresh_clone.parent / 'shared'}", "-o", f"{venv}/.installed"]
    return subprocess.run(command, cwd=fresh_clone, env=fresh_env(fresh_clone), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.timeout(320)
def test_make_demo_on_a_fresh_clone_prints_its_outputs(make_demo, fresh_clone):
    assert make_demo.returncode == 0, make_demo.stderr
    lines = make_demo.stdout.splitlines()
    assert (f"demo.py: no video given and no display to show a camera in: running on the sample "
            f"{fresh_clone / SAMPLE}") in lines
    assert lines[-3:] == ["wrote results/demo.mp4", "wrote results/demo.jsonl", "wrote results/demo.png"]
    assert sorted(p.name for p in (fresh_clone / "results").iterdir()) == ["demo.jsonl", "demo.mp4", "demo.png"]
    assert not (fresh_clone.parent / "shared").exists()


@pytest.mark.timeout(320)
def test_fresh_clone_demo_video_and_json_lines(make_demo, fresh_clone):
    assert make_demo.returncode == 0, make_demo.stderr
    results = fresh_clone / "results"
    assert count_video_frames(results / "demo.mp4") == (VIDEO_FRAMES, SAMPLE_SIZE)  # playable, every frame
    records = read_json_lines(results / "demo.jsonl")
    assert [r["index"] for r in records] == list(range(VIDEO_FRAMES))
    assert all((r["width"], r["height"]) == SAMPLE_SIZE for r in records)
    tracked = [r for r in records if any(t is not None for t in r["track_ids"])]
    assert len(tracked) > 0.8 * VIDEO_FRAMES, "the sample shows a hand in most frames"


@pytest.mark.timeout(320)
def test_fresh_clone_demo_picture_shows_boxes_on_hands(make_demo, fresh_clone):
    from utils.runtime.demo import read_frames, tile_frames

    assert make_demo.returncode == 0, make_demo.stderr
    path = fresh_clone / "results" / "demo.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    picture = cv2.imread(str(path))
    assert (picture.shape[1], picture.shape[0]) == picture_size(*SAMPLE_SIZE, PICTURE_FRAMES)
    records = read_json_lines(fresh_clone / "results" / "demo.jsonl")
    shown = picture_frames(records)
    # The same frames of the sample, tiled without any drawing: the boxes are what differs.
    plain = tile_frames(read_frames(fresh_clone / SAMPLE, shown), "")
    tile_width = picture.shape[1] // PICTURE_FRAMES
    scale = tile_width / SAMPLE_SIZE[0]
    for i, index in enumerate(shown):
        columns = slice(i * tile_width, (i + 1) * tile_width)
        drawn = box_colored(picture[PICTURE_TITLE_HEIGHT:, columns])
        assert drawn.sum() > 200, f"tile {i} (frame {index}) shows no box"
        assert box_colored(plain[PICTURE_TITLE_HEIGHT:, columns]).sum() < drawn.sum() / 10
        # The boxes lie where the JSON line says hands are, their labels above them (wider than a narrow box).
        near = np.zeros_like(drawn)
        record = records[index]
        for (xmin, ymin, xmax, ymax), tid, name, score in zip(record["boxes"], record["track_ids"],
                                                              record["class_names"], record["scores"], strict=True):
            label = f"#{tid} {name} {score:.2f}" if tid else f"{name} {score:.2f}"
            (text_width, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, LABEL_FONT_SCALE, 1)
            x1, y1 = max(round(xmin * scale) - 4, 0), max(round(ymin * scale) - 16, 0)
            x2 = round(max(xmax, xmin + text_width) * scale) + 4
            near[y1:round(ymax * scale) + 4, x1:x2] = True
        assert (drawn & near).sum() > 0.9 * drawn.sum()


def box_colored(image: np.ndarray) -> np.ndarray:
    return np.abs(image.astype(int) - np.array(BOX_COLOR_BGR)).sum(axis=-1) < BOX_COLOR_TOLERANCE


def test_fresh_clone_calibrates_int8_on_the_sample(fresh_clone):
    code = ("import json, export_inference_graph as e; "
            "print(json.dumps([e.default_calibration_sources(), e.default_calibration_sources(trained=True)]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=fresh_clone, env=fresh_env(fresh_clone),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    sample = str(fresh_clone / SAMPLE)
    assert json.loads(result.stdout) == [[sample], [sample]]  # int8 is built, never skipped


def test_a_checkout_with_shared_data_calibrates_on_it_as_before(hand_video):
    import export_inference_graph

    assert export_inference_graph.default_calibration_sources()[0] == str(hand_video)  # not the sample
