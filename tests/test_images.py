"""The worker image, the flex-template launcher image and the template metadata, checked as files (no
Docker engine here: `make images` prints the build commands)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

from pipeline.flex_template import metadata
from tests.conftest import REPO


def test_the_worker_image_is_beams_sdk_image_with_its_boot_entrypoint() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["apache/beam_python3.11_sdk:2.77.0"]
    assert re.findall(r"^ENTRYPOINT (.+)$", text, re.M) == ['["/opt/apache/beam/boot"]']
    assert "torch==2.13.0" in text and "whl/cpu" in text
    assert "beam_vector_sync-0.1.0-py3-none-any.whl" in text  # the project from its wheel, not the checkout


def test_the_launcher_image_is_googles_flex_template_base() -> None:
    text = (REPO / "Dockerfile.launcher").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["gcr.io/dataflow-templates-base/python311-template-launcher-base"]
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=${WORKDIR}/pipeline/__main__.py" in text
    assert "FLEX_TEMPLATE_PYTHON_SETUP_FILE=${WORKDIR}/setup.py" in text


def test_metadata_lists_every_flag_of_help_with_label_help_and_validation() -> None:
    committed = json.loads((REPO / "metadata.json").read_text())
    assert committed == metadata(), "metadata.json is stale: python -m pipeline.flex_template > metadata.json"
    shown = subprocess.run([sys.executable, "-m", "pipeline", "--help"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout
    flags = set(re.findall(r"^\s+--([a-z0-9_]+)", shown, re.M)) - {"help"}
    names = {p["name"] for p in committed["parameters"]}
    assert flags and flags == names
    for parameter in committed["parameters"]:
        assert parameter["label"] and parameter["helpText"]
    numeric = {p["name"]: p.get("regexes") for p in committed["parameters"]}
    assert numeric["batch_size"] == [r"^-?[0-9]+$"] and numeric["sink"]


def test_make_images_prints_the_build_commands() -> None:
    shown = subprocess.run(["make", "-s", "-n", "images"], cwd=REPO, capture_output=True, text=True).stdout
    done = subprocess.run(["make", "-s", "images"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + shown
    assert "docker build -t" in done.stdout and "gcloud dataflow flex-template build" in done.stdout
    assert "--sdk-container-image" in done.stdout or "sdk_container_image" in done.stdout
