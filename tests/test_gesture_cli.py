"""--models hand,gesture and --suppress-faces in detect_single_threaded.py / detect_multi_threaded.py:
JSON gestures and objects on the real video and a real Oxford photo, multi == single, tracking, errors."""
from __future__ import annotations

import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.test_detect_cli import MULTI, SINGLE, read_json_lines, run_script
from utils.common import config
from utils.common.errors import EXIT_BAD_INPUT
from utils.runtime import cli
from utils.runtime.multi_model import OBJECT_COLORS_BGR, intersection_over_first

FRAMES = 60  # the hand is in view on frames 10-48 of hand_desk.mp4
OBJECT_KEYS = {"model", "box", "score", "class_name"}
# Oxford Hands' Buffy_30.jpg: the hand model puts a box (score ~0.7) on the face, the gesture model
# finds the face; Buffy_1.jpg: a face and a weak hand box away from it.
FACE_FP_IMAGE = "Buffy_30.jpg"


@pytest.fixture(scope="module")
def gesture_dir() -> Path:
    if not (config.GESTURE_MODEL_DIR / config.MANIFEST_NAME).exists():
        pytest.skip(f"{config.GESTURE_MODEL_DIR}: no gesture model; run `make model` (or set HANDTRACK_GESTURE_DIR)")
    return config.GESTURE_MODEL_DIR


def oxford_image(name: str, folder: Path) -> Path:
    """Extract one Oxford Hands image (read in place from the shared archive) into `folder`."""
    archive = config.SHARED_DIR / "oxford-hands" / "hand_dataset.tar.gz"
    if not archive.exists():
        pytest.skip(f"{archive} not found: put the shared data beside the checkout or set HANDTRACK_SHARED_DIR")
    with tarfile.open(archive, "r:gz") as tar:
        member = next(m for m in tar if m.name.endswith(f"/images/{name}"))
        path = folder / name
        path.write_bytes(tar.extractfile(member).read())
    return path


@pytest.fixture(scope="module")
def hand_only(hand_video, model_dir, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("hand_only") / "run.jsonl"
    result = run_script(SINGLE, "--source", hand_video, "--display", "0", "--max-frames", FRAMES, "--json", out)
    assert result.returncode == 0, result.stderr
    return read_json_lines(out)


@pytest.fixture(scope="module")
def both_single(hand_video, model_dir, gesture_dir, tmp_path_factory) -> tuple[list[dict], Path, str]:
    out = tmp_path_factory.mktemp("both")
    result = run_script(SINGLE, "--source", hand_video, "--display", "0", "--max-frames", FRAMES,
                        "--models", "hand,gesture", "--json", out / "run.jsonl", "--output", out / "run.mp4")
    assert result.returncode == 0, result.stderr
    return read_json_lines(out / "run.jsonl"), out / "run.mp4", result.stdout


@pytest.mark.timeout(180)
def test_json_gestures_parallel_to_the_unchanged_hand_boxes(both_single, hand_only):
    lines, video, stdout = both_single
    assert len(lines) == FRAMES and "gesture model" in stdout
    for line, alone in zip(lines, hand_only, strict=True):
        # The hand model's output is the same as without the gesture model.
        assert (line["boxes"], line["scores"]) == (alone["boxes"], alone["scores"])
        assert "gestures" not in alone and "objects" not in alone
        assert len(line["gestures"]) == len(line["boxes"])
        assert all(g is None or g in config.GESTURE_HAND_CLASSES for g in line["gestures"])
        for obj in line["objects"]:
            assert set(obj) == OBJECT_KEYS and obj["model"] == "gesture"
            assert obj["class_name"] in (config.GESTURE_FACE_CLASS, *config.GESTURE_FINGERTIP_CLASSES)
            x1, y1, x2, y2 = obj["box"]
            assert 0 <= x1 <= x2 <= line["width"] and 0 <= y1 <= y2 <= line["height"]
            assert 0.6 <= obj["score"] <= 1
    named = [g for line in lines for g in line["gestures"] if g is not None]
    assert len(named) >= 10, "the pointing hand should get its gesture on many frames"
    assert max(set(named), key=named.count) == "point"  # the video's hand points at the desk
    assert not any(o["class_name"] == config.GESTURE_FACE_CLASS for line in lines for o in line["objects"])


@pytest.mark.timeout(240)
@pytest.mark.parametrize("side_by_side", ["--side-by-side", "--no-side-by-side"])
def test_multi_threaded_gives_the_single_threaded_lines(both_single, hand_video, tmp_path, side_by_side):
    result = run_script(MULTI, "--source", hand_video, "--display", "0", "--max-frames", FRAMES,
                        "--models", "hand,gesture", "--num-workers", 2, side_by_side, "--json", tmp_path / "m.jsonl")
    assert result.returncode == 0, result.stderr
    assert ("side by side" in result.stdout) == (side_by_side == "--side-by-side")
    assert read_json_lines(tmp_path / "m.jsonl") == both_single[0]  # same lines, same order


@pytest.mark.timeout(240)
def test_tracked_hands_keep_their_gesture_between_detector_runs(hand_video, gesture_dir, tmp_path):
    args = ["--source", hand_video, "--display", "0", "--max-frames", FRAMES, "--models", "hand,gesture",
            "--track", "--detect-every", 3]
    single = run_script(SINGLE, *args, "--json", tmp_path / "s.jsonl")
    multi = run_script(MULTI, *args, "--num-workers", 2, "--json", tmp_path / "m.jsonl")
    assert single.returncode == 0 and multi.returncode == 0, single.stderr + multi.stderr
    lines = read_json_lines(tmp_path / "s.jsonl")
    assert read_json_lines(tmp_path / "m.jsonl") == lines
    last_seen: dict[int, str | None] = {}
    carried = 0
    for i, line in enumerate(lines):
        assert len(line["gestures"]) == len(line["boxes"]) == len(line["track_ids"])
        assert all(p == (i % 3 != 0) for p in line["predicted"])
        for tid, gesture in zip(line["track_ids"], line["gestures"], strict=True):
            if i % 3 == 0:  # both models ran: the gesture of the box's own overlap
                if tid is not None:
                    last_seen[tid] = gesture
            elif tid is not None:  # the tracker moved the box: the track's gesture from the last run
                assert gesture == last_seen[tid]
                carried += gesture is not None
            else:
                assert gesture is None
    assert carried >= 5, "frames between detector runs should show the tracked hand's gesture"


@pytest.fixture(scope="module")
def face_photo(tmp_path_factory) -> Path:
    return oxford_image(FACE_FP_IMAGE, tmp_path_factory.mktemp("oxford"))


@pytest.mark.timeout(180)
def test_suppress_faces_removes_the_hand_box_on_a_real_face(face_photo, model_dir, gesture_dir, tmp_path):
    def boxes_on_faces(line: dict) -> list:
        faces = [o["box"] for o in line["objects"] if o["class_name"] == config.GESTURE_FACE_CLASS]
        if not faces or not line["boxes"]:
            return []
        # pixel (xmin, ymin, xmax, ymax): intersection_over_first only needs one corner order for both
        share = intersection_over_first(np.array(line["boxes"]), np.array(faces)).max(axis=1)
        return [box for box, s in zip(line["boxes"], share, strict=True) if s >= 0.5]

    runs = {}
    for flag in ([], ["--suppress-faces"]):
        out = tmp_path / f"run{len(flag)}.jsonl"
        video = tmp_path / f"run{len(flag)}.mp4"
        result = run_script(SINGLE, "--source", face_photo, "--display", "0", "--models", "hand,gesture", *flag,
                            "--json", out, "--output", video)
        assert result.returncode == 0, result.stderr
        (runs[bool(flag)],) = read_json_lines(out)
    plain, suppressed = runs[False], runs[True]
    assert boxes_on_faces(plain), f"expected the hand model's false box on the face in {FACE_FP_IMAGE}: {plain}"
    assert boxes_on_faces(suppressed) == []
    assert len(suppressed["boxes"]) == len(plain["boxes"]) - len(boxes_on_faces(plain))
    assert suppressed["objects"] == plain["objects"]  # the face itself is still reported

    # The --output video shows the face in its own colour, where the JSON puts it.
    capture = cv2.VideoCapture(str(video))
    ok, frame = capture.read()
    capture.release()
    assert ok
    x1, y1, x2, y2 = next(o["box"] for o in suppressed["objects"] if o["class_name"] == config.GESTURE_FACE_CLASS)
    orange = (np.abs(frame.astype(int) - OBJECT_COLORS_BGR[config.GESTURE_FACE_CLASS]) <= 40).all(axis=2)
    ys, xs = np.nonzero(orange)
    assert len(xs) > 2 * ((x2 - x1) + (y2 - y1)), "the face box should be drawn in its colour"
    assert abs(xs.min() - x1) <= 4 and abs(xs.max() - x2) <= 4 and abs(ys.max() - y2) <= 4
    assert ys.min() < y1 - 3, "the face's label should sit above its box"


@pytest.mark.parametrize("value, problem", [("hand,shoe", "unknown model 'shoe'"),
                                            ("gesture", "the hand model must be one of them"),
                                            ("hand,hand", "named twice"), ("", "unknown model ''")])
def test_bad_models_value_is_one_line_and_exit_2(value, problem, hand_video, model_dir, capsys):
    code = cli.main(["--source", str(hand_video), "--display", "0", "--models", value], multi=False, prog=SINGLE)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_BAD_INPUT
    assert len(err) == 1 and err[0].startswith(f"{SINGLE}: error: --models") and problem in err[0], err


@pytest.mark.parametrize("how", ["--gesture-model", "default folder"])
def test_missing_gesture_model_says_make_model(how, hand_video, model_dir, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "gesture_inference_graph"
    args = ["--source", str(hand_video), "--display", "0", "--suppress-faces", "--num-workers", "2"]
    if how == "--gesture-model":
        args += ["--gesture-model", str(missing)]
    else:
        monkeypatch.setattr(config, "GESTURE_MODEL_DIR", missing)
        args += ["--models", "hand,gesture"]
    code = cli.main(args, multi=True, prog=MULTI)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_BAD_INPUT
    assert len(err) == 1 and str(missing) in err[0] and "`make model`" in err[0], err


def test_help_explains_the_gesture_flags():
    for script, multi in ((SINGLE, False), (MULTI, True)):
        text = cli.build_parser(multi, script).format_help()
        for flag in ("--models", "--gesture-model", "--suppress-faces", "gestures", "objects"):
            assert flag in text, f"{script} --help lacks {flag}"
        assert ("--side-by-side" in text) == multi


@pytest.mark.timeout(180)
def test_bench_measures_one_model_against_two(hand_video, model_dir, gesture_dir, tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "benchmarks/bench.py", "--source", str(hand_video),
                             "--model-dir", str(model_dir), "--gesture-dir", str(gesture_dir), "--sections", "models",
                             "--max-frames", "4",
                             "--repeats", "1", "--output-dir", str(tmp_path)], cwd=Path(cli.__file__).parents[2],
                            capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "bench.md").read_text()
    for row in ("single-threaded, hand only", "single-threaded, hand + gesture, one after the other",
                "hand + gesture side by side (2 threads)", "multi-threaded, 2 workers, hand only",
                "one after the other in each", "side by side in each"):
        assert row in table, f"bench.md lacks {row!r}"
    assert table.count("| 4 |") == 6  # every row ran the 4 frames
