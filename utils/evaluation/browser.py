"""The page in real headless Chromium, for the web tests and `make bench`'s browser row.

web/tools/drive.mjs (playwright-core, Debian's /usr/bin/chromium) opens the page served by
utils.export.web.serving and answers one job as JSON: the predictions of still images, the frames the page
processed from Chromium's fake camera (fed a .y4m of real frames), or the speed of model.detect.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from utils.common.errors import user_error
from utils.export.web import WEB_DIR

DRIVER = WEB_DIR / "tools" / "drive.mjs"
CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    """The Chromium to drive: $HANDTRACK_CHROMIUM, else Debian's `chromium` on PATH; None when absent."""
    explicit = os.environ.get("HANDTRACK_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def missing_browser_tools() -> str | None:
    """Why the page cannot be driven here (None when it can): Chromium, node or the npm packages missing."""
    if chromium_path() is None:
        return "Chromium not found (apt-get install chromium, or set HANDTRACK_CHROMIUM)"
    if shutil.which("node") is None:
        return "node not found (apt-get install nodejs npm)"
    if not (WEB_DIR / "node_modules" / "playwright-core").is_dir():
        return f"{WEB_DIR / 'node_modules'}: npm packages not installed (run `make web`)"
    return None


def drive(job: dict, timeout_s: float = 120.0) -> dict:
    """Run one drive.mjs job (see its header) and return its JSON answer; a failed job raises UserError."""
    problem = missing_browser_tools()
    if problem:
        raise user_error("chromium", problem)
    with tempfile.TemporaryDirectory(prefix="handtrack-drive-") as tmp:
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps({"chromium": chromium_path(), "timeoutMs": int(timeout_s * 800), **job}))
        proc = subprocess.run(["node", str(DRIVER), str(job_path)], capture_output=True, text=True,
                              timeout=timeout_s, cwd=WEB_DIR)
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise user_error(DRIVER, f"no JSON answer (exit {proc.returncode}): {proc.stderr.strip()[-500:]}") from exc
    if proc.returncode != 0 or answer.get("error"):
        raise user_error(DRIVER, f"the {job.get('mode')} job failed: {answer.get('error')}; "
                                 f"page console: {answer.get('console', [])[-3:]}")
    return answer


def write_y4m(frames_rgb: Iterable[np.ndarray], path: str | Path, fps: int = 30) -> int:
    """RGB frames (one size, even width and height) -> a YUV4MPEG2 4:2:0 file, Chromium's fake-camera format.

    OpenCV converts each frame (BGR -> I420); the y4m framing is a text header and a FRAME line per frame."""
    import cv2

    count = 0
    with open(path, "wb") as out:
        for rgb in frames_rgb:
            height, width = rgb.shape[:2]
            if count == 0:
                if width % 2 or height % 2:
                    raise ValueError(f"y4m 4:2:0 needs even sizes, got {width}x{height}")
                out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
            count += 1
    return count


def y4m_round_trip(rgb: np.ndarray) -> np.ndarray:
    """The RGB frame the fake camera shows for `rgb`: its I420 conversion and back (what 4:2:0 keeps)."""
    import cv2

    return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), cv2.COLOR_YUV2RGB_I420)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x, y, width, height] boxes (the predictions' bbox form)."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def python_predictions(detections, width: int, height: int) -> list[dict]:
    """A Python Detections as handtrack.js predictions: {bbox: [x, y, w, h] in pixels, score}."""
    return [{"bbox": [float(b[1] * width), float(b[0] * height), float((b[3] - b[1]) * width),
                      float((b[2] - b[0]) * height)], "score": float(s)}
            for b, s in zip(detections.boxes, detections.scores, strict=True)]


def match_predictions(js: list[dict], py: list[dict]) -> list[tuple[dict, dict, float]]:
    """Pairs (js, py, IoU) by best IoU first, each box used once."""
    pairs = sorted(((box_iou(a["bbox"], b["bbox"]), i, j) for i, a in enumerate(js) for j, b in enumerate(py)),
                   reverse=True)
    used_js, used_py, matched = set(), set(), []
    for overlap, i, j in pairs:
        if overlap > 0 and i not in used_js and j not in used_py:
            used_js.add(i)
            used_py.add(j)
            matched.append((js[i], py[j], overlap))
    return matched


def read_frames(video: str | Path, count: int, step: int) -> list[np.ndarray]:
    """Every `step`-th frame of a video as RGB, at most `count`."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise user_error(video, "cannot be read as a video", "pass --source with a real video file")
    frames, index = [], 0
    try:
        while len(frames) < count:
            ok, bgr = capture.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        capture.release()
    if not frames:
        raise user_error(video, "holds no frames", "pass --source with a real video file")
    return frames


def bench_browser(model_dir: Path, frames: Sequence[np.ndarray], iterations: int, warmup: int,
                  work_dir: Path) -> list[dict]:
    """FPS of model.detect in headless Chromium for each exported model file, and of the Python detector
    (utils.runtime.detector, same files, same frames) beside it; one row per (runtime, file)."""
    import time

    import cv2

    from utils.export.web import export_web_model, serving
    from utils.runtime.detector import load_inference_graph

    web_model = work_dir / "model"
    meta = export_web_model(model_dir, web_model)
    paths = []
    for i, rgb in enumerate(frames):
        paths.append(work_dir / f"frame_{i:03d}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    rows = []
    with serving(web_model) as url:
        for name in meta["files"]:
            answer = drive({"mode": "bench", "url": url, "model": name, "images": [str(p) for p in paths],
                            "iterations": iterations, "warmup": warmup}, timeout_s=60 + iterations * 2)
            bench = answer["bench"]
            rows.append({"runtime": "browser: LiteRT.js Wasm (XNNPack), headless Chromium", "model": name,
                         "fps": bench["fps"], "median_ms": bench["medianMs"], "p90_ms": bench["p90Ms"],
                         "browser": next((w for w in answer["userAgent"].split() if "Chrome/" in w), "Chromium")})
    for name in meta["files"]:
        detector = load_inference_graph(Path(model_dir) / name)
        for i in range(warmup):
            detector.detect(frames[i % len(frames)])
        times = []
        start = time.perf_counter()
        for i in range(iterations):
            t0 = time.perf_counter()
            detector.detect(frames[i % len(frames)])
            times.append((time.perf_counter() - t0) * 1000)
        total = time.perf_counter() - start
        rows.append({"runtime": "Python: utils.runtime.detector (LiteRT)", "model": name, "fps": iterations / total,
                     "median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))})
    return rows


def bench_table(rows: Sequence[dict]) -> str:
    """The rows as a markdown table."""
    lines = ["| runtime | model | FPS of detect | median ms | p90 ms |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['runtime']} | {r['model']} | {r['fps']:.1f} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} |"
              for r in rows]
    return "\n".join(lines)
