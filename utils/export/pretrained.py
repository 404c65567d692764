"""Fetch the pretrained EgoHands model from the npm package handtrackjs, checksum-pinned."""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from utils.common import config
from utils.common.errors import UserError
from utils.common.fileio import sha256_of

PACKAGE_METADATA = ("package/package.json", "package/LICENSE")


class PretrainedFetchError(UserError):
    """npm missing, the download failing, or a tarball that is not the pinned one."""


def tarball_name(package: str = config.HANDTRACKJS_PACKAGE, version: str = config.HANDTRACKJS_VERSION) -> str:
    return f"{package}-{version}.tgz"


def verify_tarball(path: Path, expected_sha256: str) -> None:
    """Refuse (and delete) a tarball whose sha256 is not the pinned one."""
    actual = sha256_of(path)
    if actual != expected_sha256:
        path.unlink()
        raise PretrainedFetchError(
            f"{path}: sha256 {actual} does not match the pinned {expected_sha256}; the download was "
            f"deleted. Run `make model` again; if it persists the npm package changed: do not trust it")


def npm_pack(cache_dir: Path, package: str = config.HANDTRACKJS_PACKAGE,
             version: str = config.HANDTRACKJS_VERSION) -> Path:
    """`npm pack package@version` into cache_dir (skipped when the tarball is already there)."""
    tarball = cache_dir / tarball_name(package, version)
    if tarball.exists():
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise PretrainedFetchError("npm: not found; install Node.js and npm (Debian: `apt-get install npm`), "
                                   "then run `make model` again")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".npm-pack.") as tmp_dir:
        result = subprocess.run([npm, "pack", f"{package}@{version}", "--pack-destination", tmp_dir],
                                capture_output=True, text=True)
        packed = Path(tmp_dir) / tarball.name
        if result.returncode != 0 or not packed.exists():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise PretrainedFetchError(f"npm pack {package}@{version} failed: {last}")
        os.replace(packed, tarball)
    return tarball


def extract_model(tarball: Path, dest: Path, member_dir: str = config.HANDTRACKJS_MODEL_SUBDIR,
                  extra_files: tuple[str, ...] = PACKAGE_METADATA) -> Path:
    """Extract one model folder of the package (plus `extra_files`) into dest; returns the model folder.

    Each piece is unpacked beside dest and renamed into place, so a second model is added to a
    dest that already holds the first, and an interrupted run leaves nothing half-written.
    """
    model_dir = dest / member_dir
    wanted = [member_dir, *extra_files]
    if all((dest / rel).exists() for rel in wanted):
        return model_dir
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.extract.") as tmp:
        with tarfile.open(tarball, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and (
                m.name.startswith(member_dir + "/") or m.name in extra_files)]
            if not any(m.name.startswith(member_dir + "/") for m in members):
                raise PretrainedFetchError(f"{tarball}: has no {member_dir}/ folder")
            tar.extractall(tmp, members=members, filter="data")
        for rel in wanted:
            source, target = Path(tmp) / rel, dest / rel
            if source.exists() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
    return model_dir


def verify_model_folder(model_dir: Path, expected_sha256: str) -> None:
    """Refuse an extracted model folder whose files are not the pinned ones."""
    from utils.export.exporter import folder_fingerprint

    actual = folder_fingerprint(model_dir)
    if actual != expected_sha256:
        raise PretrainedFetchError(
            f"{model_dir}: files hash to {actual}, not the pinned {expected_sha256}; delete the folder "
            f"and run `make model` again")


def fetch_handtrackjs_model(cache_dir: Path = config.HANDTRACKJS_CACHE,
                            expected_sha256: str = config.HANDTRACKJS_SHA256) -> Path:
    """Download (once), verify and extract handtrack.js's SSDLite model; returns its folder."""
    tarball = npm_pack(cache_dir)
    verify_tarball(tarball, expected_sha256)
    return extract_model(tarball, cache_dir / tarball.stem)


def fetch_gesture_model(cache_dir: Path = config.HANDTRACKJS_CACHE,
                        expected_sha256: str = config.HANDTRACKJS_SHA256,
                        model_sha256: str = config.GESTURE_TFJS_SHA256) -> Path:
    """The same package's gesture/face model (TF.js graph model) and its src/index.js (the label
    order), extracted beside the hand model and checksum-verified; returns the model folder."""
    tarball = npm_pack(cache_dir)
    verify_tarball(tarball, expected_sha256)
    model_dir = extract_model(tarball, cache_dir / tarball.stem, config.GESTURE_TFJS_SUBDIR,
                              PACKAGE_METADATA + (config.HANDTRACKJS_INDEX_JS,))
    verify_model_folder(model_dir, model_sha256)
    return model_dir
