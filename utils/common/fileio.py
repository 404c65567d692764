"""Files: atomic writes (nothing half-written is ever left under the final name), checks that an
output can be written before any work starts, and the sha256 of a file."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from utils.common.errors import UserError


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; rename it into place only if the block succeeds.

    Works for files and folders (a SavedModel). On error the temporary is removed.
    `suffix` keeps an extension some writers need (e.g. '.mp4' for OpenCV's VideoWriter).
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=f".tmp{suffix}",
                                    dir=final_path.parent)
    os.close(fd)
    os.unlink(tmp_name)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if final_path.is_dir() and not final_path.is_symlink():
            shutil.rmtree(final_path)
        os.replace(tmp, final_path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_of(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in chunks (the one sha256 helper)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of_files(paths: Iterable[Path], root: Path | None = None) -> str:
    """One sha256 over several files, in the given order: each file's name (relative to `root`, else
    its own name) and its sha256. A fingerprint that changes when any file, or the set, changes."""
    digest = hashlib.sha256()
    for path in paths:
        name = Path(path).relative_to(root).as_posix() if root is not None else Path(path).name
        digest.update(name.encode() + b"\0" + sha256_of(path).encode())
    return digest.hexdigest()


def is_stream_path(path: Path) -> bool:
    """'-' (stdout), /dev/stdout and the like, or an existing pipe: written directly, not atomically
    (renaming a temporary over them would replace the device node or link itself)."""
    if str(path) == "-":
        return True
    for name in (os.path.abspath(path), os.path.realpath(path)):
        if name.startswith(("/dev/", "/proc/")) and not name.startswith("/dev/shm/"):
            return True
    return path.exists() and not path.is_file() and not path.is_dir()


def unwritable_reason(folder: Path) -> str | None:
    """Why files could not be created in `folder` (made first if missing), or None. Creates nothing."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no permission in {existing}"
    return None


def check_writable_dir(folder: Path, option: str) -> None:
    """Fail before any work when nothing can be written in `folder` (the folder given with `option`)."""
    reason = unwritable_reason(folder)
    if reason is not None:
        raise UserError(f"{folder}: {option} cannot be written: {reason}; choose another {option}")


def check_output_path(path: Path, option: str, suffixes: tuple[str, ...] = (), stream_ok: bool = False) -> None:
    """Fail before any work when the file `path` (given with `option`) cannot be written."""
    if is_stream_path(path):
        if stream_ok:
            return
        raise UserError(f"{path}: {option} must be a regular file (the video container needs to seek)")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"{path}: {option} must end in one of {', '.join(suffixes)}")
    if path.is_dir():
        raise UserError(f"{path}: {option} is a folder; give a file name")
    reason = unwritable_reason(path.parent)
    if reason is not None:
        raise UserError(f"{path}: {option} cannot be written: {reason}; choose another path")
