"""The int8 ONNX backend: exported once from the local model, within 1% of the torch vectors (mean cosine),
and used end to end by the pipeline with its own model id (vectors of the two backends are never mixed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.main import run
from tests.conftest import REPO, read_points
from transforms.model import load_sentence_transformer
from transforms.onnx_int8 import OnnxInt8Encoder, ensure_int8_model

TEXTS = [f"Paragraph {i} explains how pallets are stacked in aisle {i} near dock {i * 3}. " * (1 + i % 5)
         for i in range(40)] + ["Short.", "How long does the Widget X battery last?", "Rückgabe innerhalb 30 Tagen."]


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> Path:
    return ensure_int8_model(model_path, tmp_path_factory.mktemp("onnx"))


def test_int8_vectors_stay_within_one_percent_of_fp32(onnx_folder: Path, model_path: str):
    reference = load_sentence_transformer(model_path).encode(TEXTS, normalize_embeddings=True)
    vectors = OnnxInt8Encoder(onnx_folder).encode(TEXTS)
    cosines = np.sum(reference * vectors, axis=1)
    assert vectors.shape == reference.shape and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.97, (cosines.mean(), cosines.min())


def test_the_export_is_cached(onnx_folder: Path, model_path: str):
    before = (onnx_folder / "model.onnx").stat().st_mtime_ns
    assert ensure_int8_model(model_path, onnx_folder.parent) == onnx_folder
    assert (onnx_folder / "model.onnx").stat().st_mtime_ns == before


def test_the_pipeline_runs_on_the_onnx_backend(tmp_path: Path, onnx_folder: Path):
    summary = run(["--input", str(REPO / "pipeline" / "sample_data" / "changelog.jsonl"), "--backend", "onnx-int8",
                   "--onnx_cache", str(onnx_folder.parent), "--qdrant_path", str(tmp_path / "store"),
                   "--dead_letters", str(tmp_path / "dead.jsonl")])
    points = read_points(tmp_path / "store")
    assert summary.accounted and summary.events_applied == 6 and len(points) == summary.chunks_embedded == 5
    assert {p["model"].rsplit("+", 1)[-1] for p in points.values()} == {"onnx-int8"}
