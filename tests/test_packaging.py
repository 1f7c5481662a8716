"""The sdist and the wheel install into a clean venv (not editable) and the launcher runs from there."""
from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.installed import build_dists, clean_env, install, venv_with_dependencies


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_dists(tmp_path_factory.mktemp("dists"))


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installs_into_a_clean_venv_and_runs(kind: str, dists: tuple[Path, Path], tmp_path: Path) -> None:
    sdist, wheel = dists
    python = venv_with_dependencies(tmp_path / "venv")
    install(python, wheel if kind == "wheel" else sdist)
    env = clean_env()
    shown = subprocess.run([str(python), "-m", "pipeline", "--help"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "--sink" in shown.stdout
    where = subprocess.run([str(python), "-c", "import pipeline, connectors.changelog as c; "
                            "print(pipeline.__file__); print(c.SAMPLE_CHANGELOG.is_file())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    module_file, sample_found = where.stdout.split()
    assert Path(module_file).is_relative_to(tmp_path / "venv"), "the project came from the checkout"
    assert sample_found == "True", "the sample change-log is not package data"


def test_wheel_declares_pinned_dependencies_and_extras(dists: tuple[Path, Path]) -> None:
    _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert "torch==2.13.0" in requires  # an unpinned torch pulls the CUDA build
    assert "apache-beam==2.77.0" in requires
    assert 'apache-beam[gcp]==2.77.0; extra == "gcp"' in requires
    assert 'apache-beam[aws]==2.77.0; extra == "aws"' in requires
    assert any(r.startswith("onnxruntime==") and 'extra == "onnx"' in r for r in requires)
    unpinned = [r for r in requires if "==" not in r]
    assert not unpinned
