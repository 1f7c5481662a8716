"""The model fingerprint (stored with every chunk as its `model`) changes with any byte of the weights,
configs or tokenizer files, so stale vectors are never reused; per-file hashes are cached by (path, size,
mtime), so a second start-up reads no model file."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from transforms.model import model_fingerprint


@pytest.fixture
def model_copy(model_path: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_path, tmp_path / "model"))


def test_a_zeroed_weight_block_changes_the_fingerprint(model_copy: Path, tmp_path: Path):
    cache = tmp_path / "fingerprints.json"
    before = model_fingerprint(str(model_copy), cache)
    weights = model_copy / "model.safetensors"
    with weights.open("r+b") as fh:  # deep inside the file, far past the header
        fh.seek(weights.stat().st_size - (1 << 20))
        fh.write(bytes(4096))
    assert model_fingerprint(str(model_copy), cache) != before


def test_a_flipped_tokenizer_setting_changes_the_fingerprint(model_copy: Path, tmp_path: Path):
    cache = tmp_path / "fingerprints.json"
    before = model_fingerprint(str(model_copy), cache)
    config = model_copy / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "do_lower_case": not settings.get("do_lower_case", True)}))
    assert model_fingerprint(str(model_copy), cache) != before


def test_an_unchanged_model_keeps_its_fingerprint_and_is_not_read_again(model_copy: Path, tmp_path: Path):
    cache = tmp_path / "fingerprints.json"
    started = time.perf_counter()
    first = model_fingerprint(str(model_copy), cache)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    assert model_fingerprint(str(model_copy), cache) == first
    warm = time.perf_counter() - started
    assert warm < 0.05 and warm < cold / 3, f"cached call took {warm:.3f}s (first {cold:.3f}s)"
    # Proof that the bytes were not read: same size and mtime, other bytes → the cached hash is used.
    weights = model_copy / "model.safetensors"
    stat = weights.stat()
    with weights.open("r+b") as fh:
        fh.seek(stat.st_size // 2)
        fh.write(bytes(16))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert model_fingerprint(str(model_copy), cache) == first
    assert model_fingerprint(str(model_copy), tmp_path / "other-cache.json") != first


def test_documentation_files_do_not_change_the_fingerprint(model_copy: Path, tmp_path: Path):
    cache = tmp_path / "fingerprints.json"
    before = model_fingerprint(str(model_copy), cache)
    (model_copy / "README.md").write_text("Edited model card.")
    assert model_fingerprint(str(model_copy), cache) == before
