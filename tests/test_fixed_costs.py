"""Fixed costs: `--help` and usage errors import nothing heavy (no Beam, torch, sentence-transformers or
store client), checked with `python -X importtime` in a fresh process; a run with nothing to embed never
loads the model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "sentence_transformers", "transformers", "apache_beam", "qdrant_client", "qdrant_edge",
         "psycopg", "pymongo", "pinecone", "confluent_kafka", "redis", "google.cloud", "azure")


def _imported_modules(stderr: str) -> set[str]:
    """Module names from `-X importtime` lines (`import time: self | cumulative | name`)."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def _run_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VECTOR_SYNC_FINGERPRINT_CACHE": str(tmp_path / "cache" / "fingerprints.json")}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_help_imports_nothing_heavy(tmp_path: Path):
    result = _run_cli(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--qdrant_path" in result.stdout and "--follow" in result.stdout
    modules = _imported_modules(result.stderr)
    assert "pipeline.flags" in modules  # the check sees real importtime output
    assert _heavy(modules) == []


@pytest.mark.parametrize("args, message", [
    (["--batch_size", "many"], "argument --batch_size: invalid int value: 'many'"),
    (["--sink", "faiss"], "argument --sink: invalid choice: 'faiss'"),
])
def test_a_malformed_flag_is_a_usage_error_before_anything_heavy_is_imported(tmp_path: Path, args: list[str],
                                                                               message: str):
    result = _run_cli(args, tmp_path)
    assert result.returncode == 2 and message in result.stderr and "usage: python -m pipeline" in result.stderr
    assert _heavy(_imported_modules(result.stderr)) == []


def test_a_mistyped_flag_lists_beams_options_once_then_imports_nothing_heavy(tmp_path: Path):
    first = _run_cli(["--batch-size", "8"], tmp_path)
    assert first.returncode == 2 and "error: unknown option --batch-size: did you mean --batch_size?" in first.stderr
    assert list((tmp_path / "cache").glob("beam-options-*.json"))  # Beam's option names, listed once
    again = _run_cli(["--runer=DirectRunner"], tmp_path)
    assert again.returncode == 2 and "did you mean --runner?" in again.stderr
    assert _heavy(_imported_modules(again.stderr)) == []
