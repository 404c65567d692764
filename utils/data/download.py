"""Resumable download with size and sha256 checks (stdlib urllib: no extra dependency).

Bytes go to `<dest>.part`; an interrupted run resumes it with an HTTP Range request. The file is
renamed to `dest` only once its size (and sha256, when one is given) match, so `dest` is always whole.
"""
from __future__ import annotations

import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from utils.common.errors import UserError
from utils.common.fileio import sha256_of

_CHUNK = 1 << 20
# Leading bytes of the archive formats a user may hand one importer instead of another's.
_ARCHIVE_MAGIC = ((b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"),
                  (b"\xfd7zXZ\x00", "xz"), (b"7z\xbc\xaf\x27\x1c", "7z"), (b"Rar!", "rar"))


def archive_kind(path: str | os.PathLike) -> str | None:
    """'zip', 'gzip', 'tar', 'bzip2', 'xz', '7z' or 'rar' from the file's first bytes; None when unreadable
    or none of them (then a truncated or corrupt download is the likely story)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return None
    kind = next((name for magic, name in _ARCHIVE_MAGIC if head.startswith(magic)), None)
    return kind or ("tar" if head[257:262] == b"ustar" else None)


class DownloadError(UserError):
    """A download that failed or does not verify; the message says whether a re-run resumes it."""

_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def part_path(dest: str | Path) -> Path:
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def verify_file(path: Path, expected_size: int | None, sha256: str | None) -> str:
    """Raise DownloadError when size or sha256 differ; return the sha256 (computed only when asked)."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DownloadError(f"{path}: {size} bytes, expected {expected_size}; delete it and download "
                            "again, or pass --expected-size 0 if the file is known to be good")
    if sha256 is None:
        return ""
    actual = sha256_of(path)
    if actual != sha256.lower():
        raise DownloadError(f"{path}: sha256 {actual} differs from the expected {sha256}; the file is "
                            "corrupt or a different version: delete it and download again")
    return actual


def download(url: str, dest: str | Path, expected_size: int | None = None, sha256: str | None = None,
             progress: bool | None = None, timeout: float = 60.0, local_flag: str = "--zip") -> Path:
    """Download `url` to `dest`, resuming `dest.part` if present; skip when `dest` already verifies.

    `local_flag` is the script's flag for a local copy, named in the error messages.
    A size or checksum mismatch removes the partial file (it cannot be resumed into a good one) and
    raises DownloadError; a network error keeps it for the next run to resume.
    """
    from tqdm import tqdm

    dest = Path(dest)
    if dest.exists():
        verify_file(dest, expected_size, sha256)
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{dest.parent}: cannot create the download folder ({exc.strerror or exc}); "
                            "choose another --download-to") from exc
    part = part_path(dest)
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()  # longer than the real file: not a prefix of it
        offset = 0
    if expected_size is None or offset < expected_size:
        _fetch(url, part, offset, expected_size, timeout, tqdm, progress, local_flag)
    try:
        verify_file(part, expected_size, sha256)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    if sha256 is None:  # nothing pinned: show the checksum so it can be pinned with --sha256
        print(f"{dest}: sha256 {sha256_of(part)} (not checked; pass --sha256 to pin it)", file=sys.stderr)
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, offset: int, expected_size: int | None, timeout: float, tqdm,
           progress: bool | None, local_flag: str) -> None:
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left past our offset: the part is already whole
            return
        raise DownloadError(f"{url}: download failed (HTTP {exc.code} {exc.reason}); check --url "
                            f"(mirror: see --help) or download it yourself and pass {local_flag}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: download failed ({getattr(exc, 'reason', exc)}); re-run to resume, "
                            f"or download it yourself and pass {local_flag}") from exc
    with response:
        mode = "ab"
        if offset and response.status == 206:
            match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                raise DownloadError(f"{url}: server answered range {offset}- with "
                                    f"{response.headers.get('Content-Range')!r}; delete {part} and re-run")
        else:
            mode, offset = "wb", 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else expected_size
        received = 0
        try:
            with open(part, mode) as out, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                               unit_divisor=1024, desc=part.name,
                                               disable=None if progress is None else not progress) as bar:
                while block := response.read(_CHUNK):
                    out.write(block)
                    bar.update(len(block))
                    received += len(block)
        except (OSError, http.client.HTTPException) as exc:  # dropped connection, full disk: keep what came
            raise DownloadError(f"{url}: download interrupted ({exc}); re-run to resume into {part}") from exc
        if length and received < int(length):  # http.client reports an early close as a short read
            raise DownloadError(f"{url}: download interrupted after {offset + received} bytes; re-run to "
                                f"resume into {part}")
