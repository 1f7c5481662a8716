"""Installable package, so Flink and Dataflow workers get the code with `--setup_file ./setup.py`."""
from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.strip() for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="beam-vector-sync",
    version="0.1.0",
    description="Apache Beam pipeline that keeps vector stores exactly in sync with changing documents",
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*", "connectors",
                                    "connectors.*"]),
    package_data={"pipeline": ["sample_data/*"]},
    install_requires=requirements,
    entry_points={"console_scripts": ["beam-vector-sync=pipeline.main:main"]},
)
