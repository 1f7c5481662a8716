"""Installable package (`pip install .`, the sdist, the wheel): what Flink and Dataflow workers get, from a
worker image or from `--setup_file ./setup.py`.

Dependencies are the pins of requirements.txt (shipped in the sdist, see MANIFEST.in) plus torch, pinned:
an unpinned torch pulls the multi-GB CUDA build; install the CPU build first, or add
`--extra-index-url https://download.pytorch.org/whl/cpu`. ONNX Runtime and the ONNX exporter are the
`onnx` extra; `gcp` and `aws` add Beam's Google Cloud (Dataflow, `gs://`, Pub/Sub) and AWS (`s3://`) I/O."""
from pathlib import Path

from setuptools import find_packages, setup

TORCH = "torch==2.13.0"
BEAM = "apache-beam==2.77.0"
OPTIONAL = {"onnx": ("onnx", "onnxruntime")}
"""Packages of requirements.txt that go to an extra instead of `install_requires`."""


def _pins() -> list[str]:
    lines = Path(__file__).with_name("requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _name(pin: str) -> str:
    return pin.split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()


pins = _pins()
optional = {name for names in OPTIONAL.values() for name in names}
extras = {extra: [p for p in pins if _name(p) in names] for extra, names in OPTIONAL.items()}
extras["gcp"] = [BEAM.replace("apache-beam", "apache-beam[gcp]")]
extras["aws"] = [BEAM.replace("apache-beam", "apache-beam[aws]")]

setup(
    name="beam-vector-sync",
    version="0.1.0",
    description="Apache Beam pipeline that keeps vector stores exactly in sync with changing documents",
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*", "connectors",
                                    "connectors.*"]),
    package_data={"pipeline": ["sample_data/*"]},
    include_package_data=True,
    install_requires=[TORCH, *(p for p in pins if _name(p) not in optional)],
    extras_require=extras,
    entry_points={"console_scripts": ["beam-vector-sync=pipeline.cli:main"]},
)
