"""Batch detection over a collection (detect_batch.py): what to process, where each result goes, what is
already done, the per-video work itself and the summary. The engine (Ray) lives in batch_engine.py.

    items = expand_inputs("videos/")              # BatchItem(source, name): videos and folders of images
    todo = [i for i in items if finished_row(out, i, settings) is None]
    row = detect_item(item, out, options, detector, settings)   # on a worker: one JSON-lines file, one row
    write_summary(out, rows)                      # summary.parquet + summary.csv

Each video's JSON lines come from the detectors' own code path (sources.open_source -> loop.FrameStream
-> loop.run with one processor -> outputs.Outputs), so they equal `detect_single_threaded.py --json`
byte for byte. A video's output is swapped in only when the whole video was read (utils.common.fileio
atomic writes); its row (OUTPUT/.batch/<name>.json) is written after it, so a video is done when both
are there with the same settings, and a run killed at any moment redoes at most the videos in flight.
"""
from __future__ import annotations

import csv
import glob
import hashlib
import json
import math
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from utils.common import config
from utils.common.errors import UserError, one_line
from utils.common.fileio import atomic_outputs, atomic_write_text, sha256_of, sha256_of_files
from utils.common.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from utils.runtime.sources import natural_key

MANIFEST_SUFFIXES = (".txt", ".lst", ".list", ".csv")
JSON_SUFFIX = ".jsonl"
STATE_DIR = ".batch"             # OUTPUT/.batch/<name>.json: each video's summary row (the resume state)
SUMMARY_STEM = "summary"         # OUTPUT/summary.parquet and OUTPUT/summary.csv
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_NOT_DONE = "not done"     # an interrupted run's videos that were never finished
EXIT_SOME_FAILED = 3             # the run ended but some videos failed (bad input is 2, a bug 1, Ctrl-C 130)
SUMMARY_COLUMNS = ("video", "status", "frames", "frames_with_hands", "hands_per_frame", "seconds", "fps",
                   "skipped_frames", "model_sha256", "error", "source", "output", "worker", "settings")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class BatchItem:
    source: str   # absolute: a video file, an image, or a folder of images (a frame sequence)
    name: str     # output name under OUTPUT, posix, without JSON_SUFFIX


@dataclass(frozen=True)
class DetectOptions:
    """The detection options of the detectors, under the same attribute names as their argparse
    Namespace (cli.make_tracker reads them), so one video gives the same JSON in both."""

    score_thresh: float = config.DEFAULT_SCORE_THRESHOLD
    num_hands: int = config.DEFAULT_NUM_HANDS
    width: int = config.DEFAULT_WIDTH
    height: int = config.DEFAULT_HEIGHT
    track: bool = False
    detect_every: int = 1
    smooth: bool | None = None
    max_frames: int | None = None
    flip: bool = False


# --- What to process ------------------------------------------------------------------------------

def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def discover(folder: Path) -> list[Path]:
    """The videos under `folder` (at any depth) and the folders that directly hold images (each one frame
    sequence, like EgoHands' _LABELLED_SAMPLES/<VIDEO_ID>/), in natural order; hidden entries skipped."""
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        here = Path(parent)
        names = [f for f in files if not f.startswith(".")]
        if any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in names):
            found.append(here)
        found.extend(here / f for f in names if Path(f).suffix.lower() in VIDEO_SUFFIXES)
    return sorted(found, key=lambda p: natural_key(p.as_posix()))


def read_manifest(path: Path) -> list[tuple[Path, str | None]]:
    """A list file: one source per line (# comments, blank lines skipped), or a CSV with a `path` column
    and an optional `name` column (the output name). Relative paths are relative to the list's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read this list of videos ({one_line(exc)}); give a readable text file") \
            from exc
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "path" not in rows[0]:
            raise UserError(f"{path}: a CSV list of videos needs a header with a 'path' column (and optionally "
                            f"'name'); add it")
        entries = [(r["path"].strip(), (r.get("name") or "").strip() or None) for r in rows if r["path"].strip()]
    else:
        entries = [(line.strip(), None) for line in text.splitlines()
                   if line.strip() and not line.strip().startswith("#")]
    out = []
    for number, (entry, name) in enumerate(entries, 1):
        source = Path(entry).expanduser()
        source = source if source.is_absolute() else path.parent / source
        if not (_is_video(source) or (source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES)
                or (source.is_dir() and _has_images(source))):
            raise UserError(f"{path}: entry {number} ({entry}) is not a video ({', '.join(VIDEO_SUFFIXES)}), an "
                            f"image, or a folder of images; fix or remove it")
        out.append((source, name))
    if not out:
        raise UserError(f"{path}: the list names no video; add one path per line")
    return out


def _matches(pattern: str) -> list[Path]:
    """A glob's videos, images and image folders (folders matched are searched like an INPUT folder)."""
    found: list[Path] = []
    for match in sorted(glob.glob(pattern, recursive=True), key=natural_key):
        path = Path(match)
        if path.is_dir():
            found.extend(discover(path))
        elif path.suffix.lower() in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
            found.append(path)
    return found


def _output_name(source: Path, root: Path) -> str:
    """`root/sub/clip.mp4` -> 'sub/clip'; a folder of images -> its path; INPUT itself -> its own name."""
    relative = source.relative_to(root) if source != root else Path(source.name)
    return (relative.with_suffix("") if source.is_file() else relative).as_posix()


def expand_inputs(spec: str | Path) -> list[BatchItem]:
    """INPUT as items: a folder (its videos and image folders, at any depth), a quoted glob, a list file
    (MANIFEST_SUFFIXES), or one video. Output names are the paths relative to the common folder, without
    the video's extension; two sources with one name are refused before any work."""
    text = str(spec).strip()
    path = Path(text).expanduser()
    named: list[tuple[Path, str | None]]
    if path.is_dir():
        named = [(p, None) for p in discover(path)]
        what = f"{text}: the folder holds no video ({', '.join(VIDEO_SUFFIXES)}) nor folder of images"
    elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        named, what = read_manifest(path), ""
    elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
        named, what = [(path, None)], ""
    elif path.exists():
        raise UserError(f"{text}: not a folder, a video, an image, nor a list of videos "
                        f"({', '.join(MANIFEST_SUFFIXES)}); pass one of those")
    elif _GLOB_CHARS & set(text):
        named = [(p, None) for p in _matches(text)]
        what = f"{text}: no video, image or folder of images matches this pattern"
    else:
        raise UserError(f"{text}: no such file or folder; pass a folder of videos, a quoted glob or a list file")
    if not named:
        raise UserError(f"{what}; pass a folder of videos, a quoted glob or a list file")
    absolute: dict[Path, str | None] = {}
    for source, name in named:  # one entry per source, its first name kept
        absolute.setdefault(Path(os.path.abspath(source)), name)
    # Names mirror the INPUT folder's tree; a list's or a glob's, the tree under their common folder.
    root = (Path(os.path.abspath(path)) if path.is_dir()
            else Path(os.path.commonpath([p.parent for p in absolute])))
    items = [BatchItem(str(p), name or _output_name(p, root)) for p, name in absolute.items()]
    seen: dict[str, str] = {}
    for item in items:
        key = item.name.lower()  # case-insensitive filesystems would merge them too
        if key in seen:
            raise UserError(f"{item.source}: its output name {item.name}{JSON_SUFFIX} is also {seen[key]}'s; "
                            f"rename one, or list them in a CSV with a 'name' column")
        seen[key] = item.source
    return items


# --- Where results go and what is done ------------------------------------------------------------

def json_path(output_dir: Path, item: BatchItem) -> Path:
    return output_dir / f"{item.name}{JSON_SUFFIX}"


def row_path(output_dir: Path, item: BatchItem) -> Path:
    return output_dir / STATE_DIR / f"{item.name}.json"


def model_sha256(model_path: Path) -> str:
    """The model's sha256: of the file, or over a SavedModel folder's files."""
    if model_path.is_dir():
        files = sorted(p for p in model_path.rglob("*") if p.is_file())
        return sha256_of_files(files, root=model_path)
    return sha256_of(model_path)


def source_signature(source: str) -> str:
    """Size and modification time of a video (or of a folder's images): a replaced file is redone."""
    path = Path(source)
    files = ([p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
             if path.is_dir() else [path])
    stats = [p.stat() for p in files]
    return f"{len(stats)}:{sum(s.st_size for s in stats)}:{max((s.st_mtime_ns for s in stats), default=0)}"


def settings_key(options: DetectOptions, model_hash: str) -> str:
    """What a finished video's output depends on besides its source: the model and the options."""
    text = json.dumps({"model_sha256": model_hash, **asdict(options)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def finished_row(output_dir: Path, item: BatchItem, settings: str) -> dict | None:
    """The row of a video an earlier run finished with these settings (its JSON still there), else None."""
    try:
        row = json.loads(row_path(output_dir, item).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    try:
        signature = source_signature(item.source)
    except OSError:
        return None
    if (row.get("status") == STATUS_OK and row.get("settings") == settings
            and row.get("source_signature") == signature and json_path(output_dir, item).is_file()):
        return row
    return None


def write_row(output_dir: Path, item: BatchItem, row: dict) -> None:
    atomic_write_text(row_path(output_dir, item), json.dumps(row, sort_keys=True) + "\n")


def not_done_row(output_dir: Path, item: BatchItem) -> dict:
    return {"video": item.name, "status": STATUS_NOT_DONE, "source": item.source,
            "output": json_path(output_dir, item).name}


def write_summary(output_dir: Path, rows: Iterable[dict]) -> tuple[Path, Path]:
    """summary.parquet and summary.csv (SUMMARY_COLUMNS), swapped in together."""
    import pandas as pd

    frame = pd.DataFrame([{c: row.get(c) for c in SUMMARY_COLUMNS} for row in rows], columns=list(SUMMARY_COLUMNS))
    for column in ("frames", "frames_with_hands", "skipped_frames"):
        frame[column] = frame[column].astype("Int64")
    for column in ("hands_per_frame", "seconds", "fps"):
        frame[column] = frame[column].astype("Float64")
    parquet, csv_file = output_dir / f"{SUMMARY_STEM}.parquet", output_dir / f"{SUMMARY_STEM}.csv"
    with atomic_outputs() as outputs:
        frame.to_parquet(outputs.path(parquet), index=False)
        frame.to_csv(outputs.path(csv_file), index=False)
    return parquet, csv_file


# --- The per-video work (on a worker) -------------------------------------------------------------

class TruncatedVideo(UserError):
    """A video that opened but ended before the frames its header promises."""


def detect_item(item: BatchItem, output_dir: Path, options: DetectOptions, detector: Any, settings: str,
                model_hash: str, progress: Callable[[int], None] = lambda frames: None) -> dict:
    """Detect hands in one video (or image folder) with a loaded `detector` and write its JSON lines; returns
    its summary row. A source that cannot be read, or a video cut short, is a failed row with the reason
    (and no JSON written); any other error too, so one bad file never stops a batch. `progress` gets the
    number of frames done every few frames."""
    from utils.runtime.cli import make_tracker
    from utils.runtime.loop import FrameProcessor, FrameStream, run
    from utils.runtime.outputs import Outputs, Presenter
    from utils.runtime.sources import open_source

    row: dict[str, Any] = {"video": item.name, "source": item.source, "output": f"{item.name}{JSON_SUFFIX}",
                           "model_sha256": model_hash, "settings": settings,
                           "worker": f"{socket.gethostname()}:{os.getpid()}"}
    warnings: list[str] = []
    hands = 0
    try:
        row["source_signature"] = source_signature(item.source)
        # A fresh processor per video (no state carried over), on the worker's one loaded model.
        processor = FrameProcessor(detector, options.score_thresh, options.num_hands)
        with open_source(item.source, options.width, options.height) as source:
            frames = FrameStream(source, options.width, options.height, options.flip, options.max_frames,
                                 warnings.append, detect_every=options.detect_every)
            tracker = make_tracker(options, source.fps)
            with Outputs(None, json_path(output_dir, item), source.fps) as outputs:
                presenter = Presenter(outputs, None)

                def present(result) -> bool:
                    nonlocal hands
                    hands += result.num_boxes
                    presenter(result)
                    if presenter.frames % 10 == 0:
                        progress(10)
                    return True

                stats = run(frames, [processor], present, threaded=False, tracker=tracker)
                progress(presenter.frames % 10)
                ended_early = getattr(source, "ended_early", None)
                if ended_early:  # raised inside Outputs: the partial JSON is discarded
                    raise TruncatedVideo(f"{item.source}: {ended_early}")
                if stats.frames == 0:
                    raise UserError(f"{item.source}: no frame could be decoded")
    except Exception as exc:  # noqa: BLE001 - a failed video is a row, never the end of the batch
        reason = one_line(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {one_line(exc)}"
        return {**row, "status": STATUS_FAILED, "error": reason}
    return {**row, "status": STATUS_OK, "error": "; ".join(warnings) or None, "frames": stats.frames,
            "frames_with_hands": stats.frames_with_boxes,
            "hands_per_frame": round(hands / stats.frames, 4), "seconds": round(stats.seconds, 3),
            "fps": round(stats.fps, 2), "skipped_frames": stats.skipped}


def workers_needed(frames: float, per_worker_fps: float, hours: float = 1.0) -> int:
    """Workers that detect `frames` in `hours` when each does `per_worker_fps` (the cluster arithmetic)."""
    if per_worker_fps <= 0 or hours <= 0:
        raise ValueError("per_worker_fps and hours must be > 0")
    return max(1, math.ceil(frames / (hours * 3600 * per_worker_fps)))
