"""Files: atomic writes (nothing half-written is ever left under the final name), checks that an
output can be written before any work starts, and the sha256 of a file."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from utils.common.errors import UserError
from utils.common.signals import deferred_signals

# Beside an output NAME, while it is being written or replaced (pid: the writing process; 8 random chars):
#   .NAME.<pid>-<random>.tmp[<suffix>]   the new output being written
#   .NAME.<pid>-<random>.old             the previous output, moved aside for the moment of the swap
_TEMP_RE = r"\.(?:(\d+)-)?[a-z0-9_]{8}\.(tmp.*|old)"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def recover_stale(final_path: str | os.PathLike) -> None:
    """Clean up after a run that was killed (SIGKILL, power loss) while writing `final_path`.

    Its temporaries are removed; an output it had moved aside is put back when the new one never
    arrived, else removed. Files of a process still running are left alone. Returns nothing: it is
    safe to call before every write of `final_path`.
    """
    final_path = Path(final_path)
    if not final_path.parent.is_dir():
        return
    pattern = re.compile(re.escape(f".{final_path.name}") + _TEMP_RE)
    for stale in sorted(final_path.parent.iterdir()):
        match = pattern.fullmatch(stale.name)
        if not match or (match.group(1) and _alive(int(match.group(1)))):
            continue
        if match.group(2) == "old" and not os.path.lexists(final_path):
            os.replace(stale, final_path)  # the swap stopped half-way: the previous output comes back
        else:
            _remove(stale)


def _new_name(final_path: Path, kind: str, suffix: str = "") -> Path:
    """A free hidden name beside final_path (created and removed again: only the name is reserved)."""
    fd, name = tempfile.mkstemp(prefix=f".{final_path.name}.{os.getpid()}-", suffix=f".{kind}{suffix}",
                                dir=final_path.parent)
    os.close(fd)
    os.unlink(name)
    return Path(name)


class AtomicOutputs:
    """Several outputs written under temporary names and swapped in together (see atomic_outputs)."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []   # (temporary, final)

    def path(self, final_path: str | os.PathLike, suffix: str = "") -> Path:
        """A temporary path to write `final_path`'s new content to (a file, or a folder to create).
        `suffix` keeps an extension some writers need (e.g. '.mp4' for OpenCV's VideoWriter)."""
        final_path = Path(final_path)
        final_path.parent.mkdir(parents=True, exist_ok=True)
        recover_stale(final_path)
        # _new_name creates the file for a moment: a Ctrl-C / SIGTERM in between would leave it behind, unlisted
        with deferred_signals():
            tmp = _new_name(final_path, "tmp", suffix)
            self.pending.append((tmp, final_path))
        return tmp

    def commit(self) -> None:
        """Swap every new output in: each old one is moved aside, the new one renamed in, and only then
        are the old ones deleted, so no moment has neither; Ctrl-C and SIGTERM wait for the renames."""
        asides: list[Path] = []
        try:
            with deferred_signals():  # a held Ctrl-C / SIGTERM is raised when this block ends
                done: list[tuple[Path, Path, Path | None]] = []
                try:
                    for tmp, final in self.pending:
                        aside = None
                        if os.path.lexists(final):
                            aside = _new_name(final, "old")
                            os.replace(final, aside)
                        done.append((tmp, final, aside))
                        os.replace(tmp, final)
                except BaseException:
                    for tmp, final, aside in reversed(done):  # put the previous outputs back
                        if not os.path.lexists(tmp) and os.path.lexists(final):
                            os.replace(final, tmp)
                        if aside is not None:
                            os.replace(aside, final)
                    raise
                asides = [aside for _, _, aside in done if aside is not None]
                self.pending = []
        finally:
            for aside in asides:  # after the held section: deleting a big folder may take a while
                _remove(aside)

    def discard(self) -> None:
        for tmp, _ in self.pending:
            _remove(tmp)
        self.pending = []


@contextlib.contextmanager
def atomic_outputs() -> Iterator[AtomicOutputs]:
    """All-or-nothing outputs: `outputs.path(final)` gives a temporary per output; they replace the finals
    together only if the block succeeds, else they are removed and the earlier outputs stay.

    A run killed with SIGKILL leaves hidden temporaries; the next write of the same output removes
    them (recover_stale). Ctrl-C and SIGTERM never split the swap (see AtomicOutputs.commit).
    """
    outputs = AtomicOutputs()
    try:
        yield outputs
        outputs.commit()
    finally:
        outputs.discard()


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; it replaces `final_path` only if the block succeeds.

    Works for files and folders (a SavedModel). On error the temporary is removed and the earlier
    output kept; stale temporaries of a killed run are removed first. `suffix` keeps an extension some
    writers need (e.g. '.mp4' for OpenCV's VideoWriter).
    """
    with atomic_outputs() as outputs:
        yield outputs.path(final_path, suffix)


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


def opencv_path(path: str | os.PathLike, what: str) -> str:
    """`path` as the str that OpenCV's file functions (VideoCapture, VideoWriter, imwrite) take. A name that is
    not valid UTF-8 (bytes from another system's encoding) crashes the process inside OpenCV's Python binding,
    a segfault rather than an exception: refused here with a UserError instead."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise UserError(f"{shown}: {what}: the name is not valid UTF-8, which OpenCV cannot open; rename it "
                        f"(e.g. with convmv) or give another name") from None
    return text


def check_output_path(path: Path, option: str, suffixes: tuple[str, ...] = (), stream_ok: bool = False) -> None:
    """Fail before any work when the file `path` (given with `option`) cannot be written. With `suffixes` it is a
    video or picture that OpenCV writes, so its name must also be one OpenCV can take (opencv_path)."""
    if is_stream_path(path):
        if stream_ok:
            return
        raise UserError(f"{path}: {option} must be a regular file (the video container needs to seek)")
    if suffixes:
        opencv_path(path, option)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"{path}: {option} must end in one of {', '.join(suffixes)}")
    if path.is_dir():
        raise UserError(f"{path}: {option} is a folder; give a file name")
    reason = unwritable_reason(path.parent)
    if reason is not None:
        raise UserError(f"{path}: {option} cannot be written: {reason}; choose another path")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two paths name the same file or folder (after '..', symlinks and hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


PathsArg = str | os.PathLike | Iterable[str | os.PathLike] | None


def _as_paths(value: PathsArg) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


def check_distinct_paths(outputs: Mapping[str, PathsArg], inputs: Mapping[str, PathsArg] | None = None) -> None:
    """Fail before any work when an output would overwrite an input or another output.

    `outputs` / `inputs` map the option that names them (e.g. '--json') to a path, several, or None.
    Streams ('-', /dev/stdout) are never the same file as anything.
    """
    named_outputs = [(option, path) for option, value in outputs.items() for path in _as_paths(value)
                     if not is_stream_path(path)]
    for option, path in named_outputs:
        for other_option, other in named_outputs:
            if other_option != option and same_file(path, other):
                raise UserError(f"{path}: {option} and {other_option} name the same file; give each its own")
        for input_option, value in (inputs or {}).items():
            for source in _as_paths(value):
                if same_file(path, source):
                    raise UserError(f"{path}: {option} would overwrite {input_option} {source}, destroying the "
                                    f"input; choose another {option}")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null during the block: for a native library that prints on its own
    (TFLite's one 'INFO: Created TensorFlow Lite XNNPACK delegate' line). Use it only before any thread
    that reports to stderr has started. Python's own sys.stderr is flushed first and stays usable."""
    import sys

    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
