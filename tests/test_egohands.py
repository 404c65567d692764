"""egohands_dataset_clean.py and utils/egohands*.py: polygons -> boxes, splits, the CLI, download."""
from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

import egohands_dataset_clean
from utils.common import config
from utils.data.egohands import (
    HAND_FIELDS,
    EgoHandsError,
    index_videos,
    polygons_to_boxes,
    split_counts,
    split_videos,
)
from utils.data.jpeg import JpegHeaderError, jpeg_info, jpeg_is_complete, jpeg_size

NAN = float("nan")


# ----------------------------------------------------------------------------- fabricated zips

def jpeg_bytes(width: int, height: int, seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def polygons_mat(records: list[dict]) -> bytes:
    """polygons.mat in the real layout: a 1xN struct array with the 4 hand fields."""
    struct = np.empty((1, len(records)), dtype=[(f, object) for f in HAND_FIELDS])
    for i, record in enumerate(records):
        for f in HAND_FIELDS:
            value = record.get(f)
            struct[0, i][f] = np.zeros((0, 0)) if value is None else np.asarray(value, dtype=np.float64)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"polygons": struct})
    return buffer.getvalue()


def make_zip(path: Path, videos: dict[str, list[tuple[str, dict]]], size: tuple[int, int] = (64, 48),
             skip_mat: tuple[str, ...] = (), extra_records: int = 0, prefix: str = "") -> Path:
    """An EgoHands-layout zip: videos maps name -> [(frame file name, polygon record)]."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}metadata.mat", b"not used")
        for v, (video, frames) in enumerate(videos.items()):
            folder = f"{prefix}_LABELLED_SAMPLES/{video}/"
            for i, (name, _) in enumerate(frames):
                zf.writestr(folder + name, jpeg_bytes(*size, seed=v * 100 + i))
            records = [record for _, record in frames] + [{}] * extra_records
            if video not in skip_mat:
                zf.writestr(folder + "polygons.mat", polygons_mat(records))
    return path


SQUARE = [[10, 10], [30, 10], [30, 20], [10, 20]]
VIDEO_A = [
    ("frame_0001.jpg", {"myleft": SQUARE,
                        "yourleft": [[5, 5], [9, 9]],  # 2 points: dropped
                        "yourright": [[50, 30], [80, 30], [80, 60], [50, 60]]}),  # crosses the border
    ("frame_0002.jpg", {"myleft": [[5, 5], [NAN, 7], [20, 5], [20, 15], [5, 15]],  # NaN point dropped
                        "myright": [[1.5, 2.2], [9.7, 2.2], [9.7, 8.9]],  # floats: floor min, ceil max
                        "yourleft": [[0, 0], [10, 10], [20, 20]],  # collinear: zero area
                        "yourright": [[-10, -10], [-5, -10], [-5, -5]]}),  # outside: clipped flat
    ("frame_0003.jpg", {"yourleft": [[0, 0], [10, 0], [10, 10], [0, 10]]}),  # touches left/top: kept
    ("frame_0004.jpg", {}),  # no hands
]
VIDEO_B = [("frame_0100.jpg", {"myright": [[40, 40], [60, 40], [60, 47]]})]
EXPECTED_A = [
    ("VIDEO_A_frame_0001.jpg", 64, 48, "myleft", 10, 10, 30, 20),
    ("VIDEO_A_frame_0001.jpg", 64, 48, "yourright", 50, 30, 64, 48),
    ("VIDEO_A_frame_0002.jpg", 64, 48, "myleft", 5, 5, 20, 15),
    ("VIDEO_A_frame_0002.jpg", 64, 48, "myright", 1, 2, 10, 9),
    ("VIDEO_A_frame_0003.jpg", 64, 48, "yourleft", 0, 0, 10, 10),
]
EXPECTED_B = [("VIDEO_B_frame_0100.jpg", 64, 48, "myright", 40, 40, 60, 47)]


@pytest.fixture
def tiny_zip(tmp_path: Path) -> Path:
    return make_zip(tmp_path / "tiny.zip", {"VIDEO_A": VIDEO_A, "VIDEO_B": VIDEO_B})


def read_rows(path: Path) -> list[tuple]:
    import pandas as pd

    df = pd.read_csv(path, dtype={"filename": str, "class": str, "source": str})
    assert list(df.columns) == [*config.LABELS_CSV_COLUMNS, "source"]
    assert (df["source"] == "egohands").all()  # every row names its dataset
    return [tuple(r) for r in df.drop(columns="source").itertuples(index=False)]


def output_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_clean(capsys, *argv: str) -> tuple[int, str]:
    rc = egohands_dataset_clean.main([*map(str, argv), "--no-progress"])
    return rc, capsys.readouterr().err


# ----------------------------------------------------------------------------- pure functions

def test_polygons_to_boxes_rules():
    polygons = [np.zeros((0, 0)), SQUARE, [[5, 5], [9, 9]], [[50, 30], [80, 30], [80, 60], [50, 60]],
                [[5, 5], [NAN, 7], [20, 5], [20, 15], [5, 15]], [[0, 0], [10, 10], [20, 20]],
                [[-10, -10], [-5, -10], [-5, -5]], [[1.5, 2.2], [9.7, 2.2], [9.7, 8.9]],
                [[NAN, NAN], [1, 1], [3, 3]]]
    boxes, kept = polygons_to_boxes(polygons, 64, 48)
    assert kept.tolist() == [1, 3, 4, 7]
    assert boxes.tolist() == [[10, 10, 30, 20], [50, 30, 64, 48], [5, 5, 20, 15], [1, 2, 10, 9]]
    assert boxes.dtype == np.int64


def test_polygons_to_boxes_per_polygon_sizes_and_empty():
    boxes, kept = polygons_to_boxes([SQUARE, SQUARE], np.array([100, 25]), np.array([100, 15]))
    assert boxes.tolist() == [[10, 10, 30, 20], [10, 10, 25, 15]]
    assert polygons_to_boxes([], 10, 10)[0].shape == (0, 4)
    assert polygons_to_boxes([np.zeros((0, 0))] * 3, 10, 10)[1].size == 0
    with pytest.raises(ValueError, match="polygon 0"):
        polygons_to_boxes([np.zeros((3, 3))], 10, 10)


def test_jpeg_header_matches_decoder():
    for width, height in ((64, 48), (1280, 720), (33, 17)):
        data = jpeg_bytes(width, height)
        assert jpeg_size(data) == (width, height)
        assert jpeg_is_complete(data)
        assert not jpeg_is_complete(data[:len(data) // 2])
        assert jpeg_info(data).scan_offset > 0
    with pytest.raises(JpegHeaderError):
        jpeg_size(b"GIF89a....")
    with pytest.raises(JpegHeaderError):
        jpeg_size(jpeg_bytes(64, 48)[:20])


@pytest.mark.parametrize("n, expected", [(0, (0, 0, 0)), (1, (1, 0, 0)), (2, (1, 1, 0)), (3, (1, 1, 1)),
                                         (10, (8, 1, 1)), (48, (38, 5, 5))])
def test_split_counts(n, expected):
    assert split_counts(n) == expected


def test_split_counts_fractions():
    assert split_counts(10, (1, 0, 0)) == (10, 0, 0)
    assert split_counts(10, (0.5, 0.5, 0)) == (5, 5, 0)
    assert split_counts(2, (0, 1, 1)) == (1, 1, 0)  # train still gets one
    with pytest.raises(ValueError):
        split_counts(4, (0, 0, 0))


def test_split_videos_default_is_seeded_and_disjoint():
    videos = [f"V{i:02d}" for i in range(48)]
    a = split_videos(videos, seed=1)
    assert a == split_videos(list(reversed(videos)), seed=1)  # order of the input does not matter
    assert [len(a[s]) for s in ("train", "test", "eval")] == [38, 5, 5]
    assert sorted(a["train"] + a["test"] + a["eval"]) == videos
    assert any(split_videos(videos, seed=s) != a for s in (2, 3))


def test_split_videos_explicit():
    videos = ["A", "B", "C", "D"]
    assert split_videos(videos, explicit={"test": ["B"], "eval": ["C"]}) == \
        {"train": ["A", "D"], "test": ["B"], "eval": ["C"]}
    assert split_videos(videos, explicit={"train": ["A"], "test": ["B"]}) == \
        {"train": ["A"], "test": ["B"], "eval": []}
    with pytest.raises(EgoHandsError, match="unknown video 'Z'"):
        split_videos(videos, explicit={"test": ["Z"]})
    with pytest.raises(EgoHandsError, match="both --train-videos and --test-videos"):
        split_videos(videos, explicit={"train": ["A"], "test": ["A"]})


def test_index_videos_accepts_a_top_folder():
    names = ["egohands/_LABELLED_SAMPLES/V/frame_0002.jpg", "egohands/_LABELLED_SAMPLES/V/frame_0001.jpg",
             "egohands/_LABELLED_SAMPLES/V/polygons.mat", "egohands/metadata.mat"]
    videos = index_videos(names, "x.zip")
    assert list(videos) == ["V"]
    assert [m.rsplit("/", 1)[1] for m in videos["V"].frame_members] == ["frame_0001.jpg", "frame_0002.jpg"]


# ----------------------------------------------------------------------------- the CLI on a fabricated zip

def test_fabricated_zip_converts_as_specified(tiny_zip, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = run_clean(capsys, "--zip", tiny_zip, "--output-dir", out, "--classes", "4",
                        "--train-videos", "VIDEO_A", "--test-videos", "VIDEO_B", "--workers", "1")
    assert rc == 0, err
    assert read_rows(out / "train_labels.csv") == EXPECTED_A
    assert read_rows(out / "test_labels.csv") == EXPECTED_B
    assert read_rows(out / "eval_labels.csv") == []
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == \
        [f"VIDEO_A_frame_000{i}.jpg" for i in range(1, 5)]  # frames without hands are copied too
    with zipfile.ZipFile(tiny_zip) as zf:  # bytes copied, not re-encoded
        assert (out / "images/train/VIDEO_A_frame_0002.jpg").read_bytes() == \
            zf.read("_LABELLED_SAMPLES/VIDEO_A/frame_0002.jpg")
    assert list((out / "images" / "eval").iterdir()) == []


def test_one_class_and_default_split_of_two_videos(tiny_zip, tmp_path, capsys):
    out = tmp_path / "out"
    rc = egohands_dataset_clean.main(["--zip", str(tiny_zip), "--output-dir", str(out), "--classes", "1"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    rows = {s: read_rows(out / f"{s}_labels.csv") for s in ("train", "test", "eval")}
    assert rows["eval"] == []
    assert rows["train"] and rows["test"]  # 2 videos: one trains, one tests
    everything = sorted(rows["train"] + rows["test"])
    assert everything == sorted(r[:3] + ("hand",) + r[4:] for r in EXPECTED_A + EXPECTED_B)
    assert "train" in stdout and "videos" in stdout


def test_rerun_is_identical_and_drops_stale_split_images(tiny_zip, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--zip", tiny_zip, "--output-dir", out, "--seed", "3", "--workers", "2"]
    assert run_clean(capsys, *args)[0] == 0
    first = output_files(out)
    assert run_clean(capsys, *args)[0] == 0
    assert output_files(out) == first
    assert run_clean(capsys, "--zip", tiny_zip, "--output-dir", out, "--train-videos", "VIDEO_B",
                     "--test-videos", "VIDEO_A")[0] == 0
    assert {p.name.split("_frame")[0] for p in (out / "images" / "train").iterdir()} == {"VIDEO_B"}
    assert {p.name.split("_frame")[0] for p in (out / "images" / "test").iterdir()} == {"VIDEO_A"}
    assert not [p for p in out.rglob(".*")]  # no temporaries left


def test_visualize_writes_pngs_and_replaces_old_ones(tiny_zip, tmp_path, capsys):
    out, vis = tmp_path / "out", tmp_path / "vis"
    rc, err = run_clean(capsys, "--zip", tiny_zip, "--output-dir", out, "--visualize", "3",
                        "--visualize-dir", vis, "--workers", "1")
    assert rc == 0, err
    pngs = sorted(vis.glob("*.png"))
    assert len(pngs) == 3
    image = cv2.imread(str(pngs[0]))
    assert image.shape == (48, 64, 3)
    assert run_clean(capsys, "--zip", tiny_zip, "--output-dir", out, "--visualize", "1",
                     "--visualize-dir", vis, "--workers", "1")[0] == 0
    assert len(list(vis.glob("*.png"))) == 1


# ----------------------------------------------------------------------------- bad input

def assert_failed_cleanly(rc: int, err: str, names: str, out: Path, before: dict[str, bytes] | None = None):
    assert rc == 2
    assert err.startswith("error: ") and names in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert output_files(out) == (before or {}) if out.exists() else True


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_zip(tiny_zip, tmp_path, capsys, damage):
    data = tiny_zip.read_bytes()
    bad = tmp_path / "bad.zip"
    bad.write_bytes(data[:len(data) // 2] if damage == "truncated" else b"PK\x03\x04" + bytes(2000))
    out = tmp_path / "out"
    rc, err = run_clean(capsys, "--zip", bad, "--output-dir", out)
    assert_failed_cleanly(rc, err, str(bad), out)
    assert "not a readable zip" in err


def test_missing_zip(tmp_path, capsys):
    rc, err = run_clean(capsys, "--zip", tmp_path / "nope.zip", "--output-dir", tmp_path / "out")
    assert_failed_cleanly(rc, err, "nope.zip", tmp_path / "out")


def test_member_with_bad_crc(tmp_path, capsys):
    path = make_zip(tmp_path / "crc.zip", {"VIDEO_A": VIDEO_A})
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("_LABELLED_SAMPLES/VIDEO_A/frame_0003.jpg")
    start = info.header_offset + 30 + len(info.filename) + 400  # inside the stored JPEG
    data[start] ^= 0xFF
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    rc, err = run_clean(capsys, "--zip", path, "--output-dir", out, "--workers", "1")
    assert_failed_cleanly(rc, err, "VIDEO_A/frame_0003.jpg", out)


def test_video_without_polygons_mat(tmp_path, capsys):
    path = make_zip(tmp_path / "nomat.zip", {"VIDEO_A": VIDEO_A, "VIDEO_B": VIDEO_B}, skip_mat=("VIDEO_B",))
    out = tmp_path / "out"
    rc, err = run_clean(capsys, "--zip", path, "--output-dir", out)
    message = f"{path}: video folder _LABELLED_SAMPLES/VIDEO_B/ has no polygons.mat"
    assert_failed_cleanly(rc, err, message, out)


def test_record_count_differs_from_frames_keeps_previous_outputs(tiny_zip, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_clean(capsys, "--zip", tiny_zip, "--output-dir", out)[0] == 0
    before = output_files(out)
    path = make_zip(tmp_path / "count.zip", {"VIDEO_A": VIDEO_A, "VIDEO_B": VIDEO_B}, extra_records=1)
    rc, err = run_clean(capsys, "--zip", path, "--output-dir", out)
    assert_failed_cleanly(rc, err, "polygons.mat", out, before)
    assert "polygon records for" in err and str(path) in err


def test_unwritable_output_dir(tiny_zip, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "out"  # root ignores chmod, but nothing can be created under a regular file
    rc, err = run_clean(capsys, "--zip", tiny_zip, "--output-dir", out)
    assert rc == 2 and str(out) in err and "--output-dir" in err, err
    assert blocker.read_text() == "not a folder"


def test_unknown_explicit_video(tiny_zip, tmp_path, capsys):
    rc, err = run_clean(capsys, "--zip", tiny_zip, "--output-dir", tmp_path / "out", "--eval-videos", "NOPE")
    assert rc == 2 and "NOPE" in err and "VIDEO_A" in err


# ----------------------------------------------------------------------------- the real sample

def convert_sample(zip_path: Path, out: Path, classes: str) -> None:
    rc = egohands_dataset_clean.main(["--zip", str(zip_path), "--output-dir", str(out), "--classes", classes,
                                      "--no-progress"])
    assert rc == 0


def sample_lines(out: Path) -> list[str]:
    """All splits' CSV lines, filenames mapped back to labels.csv's '<VIDEO>/frame_NNNN.jpg'."""
    lines = []
    for split in ("train", "test", "eval"):
        for line in (out / f"{split}_labels.csv").read_text().splitlines()[1:]:
            name, rest = line.split(",", 1)
            rest, source = rest.rsplit(",", 1)
            assert source == "egohands"
            video, frame = name.rsplit("_frame_", 1)
            lines.append(f"{video}/frame_{frame},{rest}")
    return sorted(lines)


def test_sample_zip_gives_exactly_the_reference_boxes(egohands_sample_zip, egohands_sample_labels, tmp_path):
    reference = egohands_sample_labels.read_text().splitlines()
    assert reference[0] == "filename,width,height,class,xmin,ymin,xmax,ymax"
    out4, out1 = tmp_path / "four", tmp_path / "one"
    convert_sample(egohands_sample_zip, out4, "4")
    assert sample_lines(out4) == sorted(reference[1:])
    assert len(sample_lines(out4)) == 501

    convert_sample(egohands_sample_zip, out1, "1")
    as_hand = []
    for line in reference[1:]:
        parts = line.split(",")
        parts[3] = "hand"
        as_hand.append(",".join(parts))
    assert sample_lines(out1) == sorted(as_hand)

    videos = {s: {p.name.split("_frame_")[0] for p in (out4 / "images" / s).iterdir()}
              for s in ("train", "test", "eval")}
    assert videos["train"] and videos["test"] and not videos["eval"]
    assert not videos["train"] & videos["test"]
    with zipfile.ZipFile(egohands_sample_zip) as zf:
        jpgs = [n for n in zf.namelist() if n.endswith(".jpg")]
        copied = {p.name: p for s in videos for p in (out4 / "images" / s).iterdir()}
        assert len(copied) == len(jpgs) == 200
        for name in jpgs[::20]:
            video, frame = name.split("/")[-2:]
            assert copied[f"{video}_{frame}"].read_bytes() == zf.read(name)


# ----------------------------------------------------------------------------- download

class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `content`; honours Range unless told not to; can cut the first response short."""
    content = b""
    honour_range = True
    cut_after: int | None = None
    seen: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        cls = type(self)
        cls.seen.append(self.headers.get("Range"))
        data, start = cls.content, 0
        if self.headers.get("Range") and cls.honour_range:
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cls.cut_after is not None:
            body, cls.cut_after = body[:cls.cut_after], None  # then drop the connection
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tiny_zip):
    handler = type("Handler", (RangeHandler,), {"content": tiny_zip.read_bytes(), "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/egohands_data.zip"
    httpd.shutdown()
    httpd.server_close()


def download_args(url: str, dest: Path, content: bytes, out: Path, sha: str | None = None) -> list:
    return ["--url", url, "--download-to", dest, "--expected-size", len(content),
            "--sha256", sha or hashlib.sha256(content).hexdigest(), "--output-dir", out, "--workers", "1"]


def test_download_interrupted_then_resumed(server, tmp_path, capsys):
    handler, url = server
    dest, out = tmp_path / "dl" / "egohands_data.zip", tmp_path / "out"
    handler.cut_after = 1500
    rc, err = run_clean(capsys, *download_args(url, dest, handler.content, out))
    assert rc == 2 and "interrupted" in err and "egohands_data.zip.part" in err, err
    part = dest.with_name(dest.name + ".part")
    assert part.stat().st_size == 1500 and not dest.exists()

    rc, err = run_clean(capsys, *download_args(url, dest, handler.content, out))
    assert rc == 0, err
    assert handler.seen == [None, "bytes=1500-"]
    assert dest.read_bytes() == handler.content and not part.exists()
    assert read_rows(out / "train_labels.csv") or read_rows(out / "test_labels.csv")

    rc, err = run_clean(capsys, *download_args(url, dest, handler.content, out))  # already there
    assert rc == 0 and handler.seen == [None, "bytes=1500-"]


def test_download_restarts_when_server_ignores_range(server, tmp_path, capsys):
    handler, url = server
    handler.honour_range = False
    dest = tmp_path / "egohands_data.zip"
    dest.with_name(dest.name + ".part").write_bytes(b"junk" * 100)
    args = download_args(url, dest, handler.content, tmp_path / "out")
    args[args.index("--sha256") + 1] = ""  # no checksum pinned: it is printed instead
    rc, err = run_clean(capsys, *args)
    assert rc == 0, err
    assert dest.read_bytes() == handler.content
    assert f"sha256 {hashlib.sha256(handler.content).hexdigest()} (not checked" in err


def test_download_checksum_mismatch(server, tmp_path, capsys):
    handler, url = server
    dest, out = tmp_path / "egohands_data.zip", tmp_path / "out"
    rc, err = run_clean(capsys, *download_args(url, dest, handler.content, out, sha="0" * 64))
    assert rc == 2 and "sha256" in err and "egohands_data.zip.part" in err, err
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists() and not out.exists()


def test_download_size_mismatch_and_unreachable(server, tmp_path, capsys):
    handler, url = server
    dest = tmp_path / "egohands_data.zip"
    args = download_args(url, dest, handler.content + b"x", tmp_path / "out")
    rc, err = run_clean(capsys, *args)
    assert rc == 2 and "bytes, expected" in err, err
    assert not dest.exists()
    rc, err = run_clean(capsys, "--url", "http://127.0.0.1:9/none.zip", "--download-to", dest)
    assert rc == 2 and "127.0.0.1:9" in err and "download failed" in err, err
