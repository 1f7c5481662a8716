"""The embedding step: batches of our sentence-transformers handler (model loaded on the first batch), fixed batch sizes,
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


def _cost(groups, lengths, call_cost):
    return sum(call_cost + len(g) * max(lengths[i] for i in g) for g in groups)


def _cheapest_cut_by_brute_force(lengths, call_cost):
    ordered = sorted(lengths)
    best = None
    for mask in range(1 << (len(ordered) - 1)):  # every way to cut the sorted list
        groups, start = [], 0
        for k in range(1, len(ordered)):
            if mask >> (k - 1) & 1:
                groups.append(ordered[start:k])
                start = k
        groups.append(ordered[start:])
        cost = sum(call_cost + len(g) * g[-1] for g in groups)
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_padding_aware_groups_are_the_cheapest_cut_and_cover_every_item_once(seed: int):
    import random

    from transforms.embedding import padding_aware_groups

    rng = random.Random(seed)
    lengths = [rng.choice((rng.randint(5, 40), rng.randint(200, 256))) for _ in range(rng.randint(1, 11))]
    call_cost = rng.choice((0, 64, 512, 10_000))
    groups = padding_aware_groups(lengths, call_cost)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert _cost(groups, lengths, call_cost) == _cheapest_cut_by_brute_force(lengths, call_cost)


def test_a_mixed_batch_is_split_by_length_and_an_even_one_is_not():
    from transforms.embedding import padding_aware_groups

    mixed = [20] * 40 + [250] * 24
    assert sorted(len(g) for g in padding_aware_groups(mixed, 512)) == [24, 40]
    assert len(padding_aware_groups(mixed, 1_000_000)) == 1
    assert len(padding_aware_groups([100, 101, 102, 103] * 16, 512)) == 1


class CountingModel:
    """Wraps the real model and records the size of every call it gets."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, []

    def encode(self, texts, **kw):
        self.calls.append(len(texts))
        return self.model.encode(texts, **kw)


def test_split_calls_return_each_chunks_own_vector_in_batch_order(model_path: str):
    from transforms.model import load_sentence_transformer

    handler = SentenceTransformerHandler(model_path, batch_size=8)
    model = CountingModel(load_sentence_transformer(model_path))
    long_text = " ".join(["warehouse pallets are stacked in aisles"] * 30)
    batch = [("short one", 2), (long_text, 180), ("another short", 2), (long_text + " end", 181), ("tiny", 1)]
    results = handler.run_inference(batch, model)
    assert sorted(model.calls) == [2, 3]  # the three short chunks and the two long ones, padded apart
    expected = model.model.encode([t for t, _ in batch], normalize_embeddings=True)
    for result, (text, _), vector in zip(results, batch, expected):
        assert result.example == text
        assert np.allclose(result.inference, vector, atol=1e-5)
