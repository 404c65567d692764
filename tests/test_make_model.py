"""`make model`: checksum-pinned download, idempotent export, clear errors."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import export_inference_graph
from scripts import fetch_pretrained
from utils.common import config
from utils.export.pretrained import tarball_name


@pytest.fixture(scope="module")
def cached_tarball():
    path = config.HANDTRACKJS_CACHE / tarball_name()
    if not path.exists():
        pytest.skip(f"{path} not found: run `make model` first")
    return path


def test_second_make_model_rebuilds_nothing(model_dir):
    files = [p for d in (model_dir, config.GESTURE_MODEL_DIR) for p in d.rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    result = subprocess.run(["make", "-s", "model", "MODEL=handtrackjs", f"MODEL_DIR={model_dir}",
                             f"GESTURE_DIR={config.GESTURE_MODEL_DIR}"],
                            cwd=config.ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_make_model_names_the_models_it_knows(tmp_path):
    result = subprocess.run(["make", "-s", "model", "MODEL=nosuch", f"MODEL_DIR={tmp_path / 'm'}",
                             f"GESTURE_DIR={config.GESTURE_MODEL_DIR}"],
                            cwd=config.ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "model-checkpoint/shipped/nosuch/weights.npz not found" in result.stderr
    assert "MODEL is handtrackjs or a folder of model-checkpoint/shipped/" in result.stderr
    assert not (tmp_path / "m").exists()


def test_tampered_tarball_is_refused_and_deleted(tmp_path, cached_tarball, capsys):
    tampered = tmp_path / cached_tarball.name
    shutil.copy(cached_tarball, tampered)
    with open(tampered, "r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert fetch_pretrained.main(["--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not match the pinned" in err and str(tampered) in err and err.count("\n") == 1
    assert not tampered.exists()
    assert not (tmp_path / tampered.stem).exists(), "nothing may be extracted from a refused tarball"


def test_without_npm_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert fetch_pretrained.main(["--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "npm: not found" in err and "apt-get install npm" in err


def test_cached_tarball_is_verified_and_reused(tmp_path, cached_tarball, capsys):
    os.link(cached_tarball, tmp_path / cached_tarball.name)
    assert fetch_pretrained.main(["--cache-dir", str(tmp_path)]) == 0
    model_dir, gesture_dir = capsys.readouterr().out.strip().splitlines()
    assert model_dir.endswith(config.HANDTRACKJS_MODEL_SUBDIR)
    assert sorted(os.listdir(model_dir))[-2:] == ["tensorflowjs_model.pb", "weights_manifest.json"]
    assert gesture_dir.endswith(config.GESTURE_TFJS_SUBDIR) and "model.json" in os.listdir(gesture_dir)


@pytest.mark.parametrize("damage, problem", [
    (lambda d: (d / "weights_manifest.json").unlink(), "cannot read the TF.js weights manifest"),
    (lambda d: (d / "group1-shard5of5.bin").write_bytes(b"short"), "truncated"),
    (lambda d: (d / "tensorflowjs_model.pb").write_bytes(b"\xff\xff\xff"), "not a readable TF.js GraphDef"),
])
def test_broken_tfjs_model_gives_one_clear_error(tmp_path, damage, problem, capsys):
    if not config.HANDTRACKJS_MODEL_DIR.exists():
        pytest.skip(f"{config.HANDTRACKJS_MODEL_DIR} not found: run `make model` first")
    tfjs = tmp_path / "tfjs"
    shutil.copytree(config.HANDTRACKJS_MODEL_DIR, tfjs)
    damage(tfjs)
    out = tmp_path / "out"
    code = export_inference_graph.main(["--from-tfjs", str(tfjs), "--output_directory", str(out), "--no-int8"])
    err = capsys.readouterr().err
    assert code == 2 and problem in err and err.count("\n") == 1
    assert not (out / config.MANIFEST_NAME).exists()
