"""A new user sees no noise: Beam's import-time warnings about optional file systems are hidden, other
warnings are not, and `--help` prints nothing on stderr."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline  # noqa: F401 - installs the filter

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("logger, message", [
    ("apache_beam.io.filesystems", "Failed to import GCSFileSystem; loading of this filesystem will be skipped."),
    ("", "apitools not found, and bigquery client libraries are not available despite the import not raising."),
])
def test_beams_optional_import_warnings_are_hidden(logger: str, message: str, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        logging.getLogger(logger).warning(message)
        logging.getLogger(logger).warning("a warning that matters")
    assert [r.getMessage() for r in caplog.records] == ["a warning that matters"]


def test_help_prints_usage_and_nothing_on_stderr():
    done = subprocess.run([sys.executable, "-m", "pipeline", "--help"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0 and "--metrics_port" in done.stdout
    assert done.stderr == ""
