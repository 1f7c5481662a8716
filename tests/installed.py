"""The project as a user gets it: an sdist and a wheel built from a copy of the checkout, installed into a
fresh venv (not editable) whose third-party dependencies come from this test venv's site-packages through
a plain path in a `.pth` file: that path's own `.pth` files (among them this checkout's editable install)
are not processed, so only the installed wheel provides the project's packages."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ("pipeline", "transforms", "connectors", "setup.py", "MANIFEST.in", "requirements.txt", "README.md")


def build_dists(out: Path) -> tuple[Path, Path]:
    """`(sdist, wheel)`: the sdist from a copy of the shipped files, the wheel built from that sdist."""
    source = out / "source"
    for name in SHIPPED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, source / name)
    _run([sys.executable, "setup.py", "-q", "sdist", "-d", str(out / "dist")], cwd=source)
    sdist = next((out / "dist").glob("*.tar.gz"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(out / "dist"), str(sdist)], cwd=out)
    return sdist, next((out / "dist").glob("*.whl"))


def venv_with_dependencies(path: Path) -> Path:
    """A new venv (no pip) that sees this venv's third-party packages; returns its python."""
    _run([sys._base_executable, "-m", "venv", "--without-pip", str(path)], cwd=path.parent)
    python = path / "bin" / "python"
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    (site / "_dependencies.pth").write_text(os.path.realpath(sysconfig.get_paths()["purelib"]) + "\n")
    return python


def install(python: Path, dist: Path) -> None:
    """`pip install --no-deps` of a wheel or an sdist into the venv of `python`."""
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
          "--no-build-isolation", "--no-index", str(dist)], cwd=dist.parent)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without PYTHONPATH (nothing of the checkout leaks in), offline for Hugging Face."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}, **extra)
    return env


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True)
    if done.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
