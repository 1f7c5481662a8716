"""The embedding step: Beam RunInference with our sentence-transformers handler, fixed batch sizes,
offline loading only."""
from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from transforms.embedding import EmbedChunks, SentenceTransformerHandler
from transforms.model import ModelNotFoundError, model_fingerprint, resolve_model


class RecordingHandler(SentenceTransformerHandler):
    """Writes the size of every batch it is given to a file (the handler runs inside Beam's workers)."""

    def __init__(self, model_path: str, log: str, **kw) -> None:
        super().__init__(model_path, **kw)
        self._log = log

    def run_inference(self, batch, model, inference_args=None):
        with open(self._log, "a") as fh:
            fh.write(f"{len(batch)}\n")
        return super().run_inference(batch, model, inference_args)


class FailingHandler(SentenceTransformerHandler):
    def run_inference(self, batch, model, inference_args=None):
        raise RuntimeError("GPU fell off the bus")


def test_runinference_batches_have_the_requested_size_and_vectors_are_normalised(tmp_path: Path, model_path: str):
    log = tmp_path / "batches.txt"
    chunks = [((("", f"doc{i % 3}"), i), (f"chunk number {i} about pallets", 6)) for i in range(10)]
    out = tmp_path / "vectors"
    with beam.Pipeline() as p:
        embedded = (p | beam.Create(chunks) | EmbedChunks(RecordingHandler(model_path, str(log), batch_size=4)))
        _ = (embedded["vectors"]
             | beam.Map(lambda kv: json.dumps([kv[0][1], kv[1][0], float(np.linalg.norm(kv[1][1])), len(kv[1][1])]))
             | beam.io.WriteToText(str(out), shard_name_template="", num_shards=1))
        assert_that(embedded["failures"], equal_to([]), label="no failures")
    sizes = sorted(int(x) for x in log.read_text().split())
    assert sum(sizes) == 10 and sizes.count(4) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r[1] for r in rows) == list(range(10))
    assert all(abs(r[2] - 1.0) < 1e-4 and r[3] == 384 for r in rows)


def test_a_failing_batch_reports_every_chunk_of_it_by_document(model_path: str):
    chunks = [((("", "d1"), 0), ("one", 1)), ((("", "d2"), 0), ("two", 1))]
    with beam.Pipeline() as p:
        embedded = p | beam.Create(chunks) | EmbedChunks(FailingHandler(model_path, batch_size=8))
        assert_that(embedded["failures"] | beam.Map(lambda kv: (kv[0], "GPU fell off the bus" in kv[1])),
                    equal_to([(("", "d1"), True), (("", "d2"), True)]))


def test_handler_batches_exactly_batch_size():
    assert SentenceTransformerHandler("/nowhere", batch_size=32).batch_elements_kwargs() == {
        "min_batch_size": 32, "max_batch_size": 32}


def test_unknown_model_names_are_refused_instead_of_downloaded():
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        resolve_model("sentence-transformers/some-model-that-is-not-cached")


def test_model_fingerprint_is_stable_and_names_the_folder(model_path: str):
    assert model_fingerprint(model_path) == model_fingerprint(model_path)
    assert model_fingerprint(model_path).startswith("model@")
