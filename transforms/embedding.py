"""Batched embedding: Beam's `BatchElements` and one DoFn holding a sentence-transformers model.

The model is loaded when the first batch arrives, once per worker process (Beam's `Shared` handle), so a run
with nothing to embed never loads it, nor imports torch (counter `vector_sync/model_loads`; Beam's
`RunInference` is not used because importing it imports torch): torch by default, or the int8 ONNX export
(`transforms/onnx_int8.py`). Batches hold exactly `batch_size` chunks except at the end of a bundle, and
each batch is run as one or more model calls of similar lengths (`padding_aware_groups`), so a batch that
mixes short and long chunks does not pad every short one to the longest; vectors are L2-normalised
(cosine). Python's cyclic garbage collector is paused during each model call. A batch that fails to embed
sends each of its chunks to the `failures` output (keyed by document), so the document is dead-lettered,
never half-written; a model that cannot be loaded (or whose fingerprint differs) fails the job.
"""
from __future__ import annotations

import contextlib
import gc
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Optional, Sequence, Union

import apache_beam as beam
import numpy as np
from apache_beam.utils.shared import Shared

from transforms import counters
from transforms.defaults import DEFAULT_CALL_COST_TOKENS
from transforms.model import ModelRef, load_sentence_transformer, local_model_path
from transforms.types import DocKey

ChunkRef = tuple[DocKey, int]
"""`(document key, chunk index)`: the key each chunk carries through embedding."""
ChunkText = tuple[str, int]
"""`(text, token_count)`: what is embedded, with its length for padding accounting."""


def padding_aware_groups(lengths: Sequence[int], call_cost_tokens: int = DEFAULT_CALL_COST_TOKENS) -> list[list[int]]:
    """Indexes into `lengths`, sorted by length and cut into consecutive groups that minimise
    `sum(call_cost_tokens + len(group) * longest(group))`: the padded token slots of one model call per group,
    plus a fixed cost per call (exact, by dynamic programming over the sorted lengths)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if len(order) <= 1:
        return [order] if order else []
    ordered = np.asarray([lengths[i] for i in order], dtype=np.int64)
    best = np.zeros(len(order) + 1, dtype=np.int64)  # best[j]: cheapest cut of the first j items
    cut_at = np.zeros(len(order) + 1, dtype=np.int64)
    for j in range(1, len(order) + 1):
        starts = np.arange(j)
        costs = best[:j] + call_cost_tokens + (j - starts) * ordered[j - 1]
        cut_at[j] = int(np.argmin(costs))
        best[j] = costs[cut_at[j]]
    groups, end = [], len(order)
    while end > 0:
        start = int(cut_at[end])
        groups.append(order[start:end])
        end = start
    return groups[::-1]


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (a model call allocates many short-lived objects, and
    each collection would walk every object the worker holds); reference counting still frees memory."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class PredictionResult(NamedTuple):
    """One embedded chunk: what was embedded and its vector (the fields of Beam's `PredictionResult`)."""

    example: str
    inference: Any


class SentenceTransformerHandler:
    """Loads a local sentence-transformers model offline and embeds batches of `(text, token_count)`.

    Counts real and padded tokens per model call (metrics `vector_sync/tokens_in_batches` and
    `vector_sync/padded_tokens_in_batches`), so padding waste can be reported."""

    def __init__(self, model_path: Union[ModelRef, str], *, batch_size: int = 64, device: str = "cpu",
                 normalize: bool = True, onnx_folder: Optional[str] = None,
                 call_cost_tokens: int = DEFAULT_CALL_COST_TOKENS) -> None:
        self.model_path = model_path
        self.batch_size = batch_size
        self.device = device
        self.normalize = normalize
        self.onnx_folder = onnx_folder
        self.call_cost_tokens = call_cost_tokens

    def load_model(self) -> Any:
        """On the worker: the torch model on `device`, or the int8 ONNX model (`onnx_folder`, or the export a
        `ModelRef` with backend `onnx-int8` makes or finds here); a `ModelRef` is resolved here and refused
        if its fingerprint is not the launcher's (`ModelMismatchError` fails the job)."""
        onnx_folder = self.onnx_folder
        if onnx_folder is None and isinstance(self.model_path, ModelRef):
            onnx_folder = self.model_path.onnx_folder()
        if onnx_folder:
            from transforms.onnx_int8 import OnnxInt8Encoder

            return OnnxInt8Encoder(Path(onnx_folder))
        return load_sentence_transformer(local_model_path(self.model_path), self.device)

    def run_inference(self, batch: Sequence[ChunkText], model: Any,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        lengths = [tokens + 2 for _, tokens in batch]  # + [CLS] and [SEP]
        vectors: list[Any] = [None] * len(batch)
        for group in padding_aware_groups(lengths, self.call_cost_tokens):
            counters.counter(counters.BATCH_TOKENS).inc(sum(lengths[i] for i in group))
            counters.counter(counters.BATCH_PADDED_TOKENS).inc(max(lengths[i] for i in group) * len(group))
            with cyclic_gc_paused():
                encoded = model.encode([batch[i][0] for i in group], batch_size=len(group),
                                       normalize_embeddings=self.normalize, convert_to_numpy=True,
                                       show_progress_bar=False)
            for i, vector in zip(group, encoded):
                vectors[i] = vector
        return [PredictionResult(text, vector) for (text, _), vector in zip(batch, vectors)]

    def batch_elements_kwargs(self) -> dict[str, int]:
        """Every batch holds exactly `batch_size` chunks, except the last of a bundle."""
        return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}


FAILURES = "failures"


class _EmbedBatches(beam.DoFn):
    """A batch of `((doc_key, chunk_index), (text, token_count))` → `(doc_key, (chunk_index, vector))` each, or
    every chunk's `(doc_key, error)` on the `failures` output when the batch fails to embed. The model is
    loaded on the first batch, once per process (shared by every instance), never when no batch comes."""

    def __init__(self, handler: SentenceTransformerHandler) -> None:
        self._handler = handler
        self._shared = Shared()
        self._loads = counters.counter(counters.MODEL_LOADS)

    def setup(self) -> None:
        self._model: Any = None

    def _load(self) -> Any:
        self._loads.inc()
        return self._handler.load_model()

    def process(self, batch: list[tuple[ChunkRef, ChunkText]]) -> Iterator[Any]:
        if self._model is None:
            self._model = self._shared.acquire(self._load)  # a load failure fails the job
        try:
            results = self._handler.run_inference([chunk for _, chunk in batch], self._model)
        except Exception as exc:  # noqa: BLE001 - the batch's documents are dead-lettered, the run goes on
            message = f"{type(exc).__name__}: {exc}"
            for (doc_key, _chunk_index), _chunk in batch:
                yield beam.pvalue.TaggedOutput(FAILURES, (doc_key, message))
            return
        for ((doc_key, chunk_index), _chunk), result in zip(batch, results):
            yield doc_key, (chunk_index, np.asarray(result.inference, dtype=np.float32).tolist())


class EmbedChunks(beam.PTransform):
    """`((doc_key, chunk_index), (text, token_count))` → tagged `vectors` `(doc_key, (chunk_index, vector))` and
    `failures` `(doc_key, error)`."""

    def __init__(self, handler: SentenceTransformerHandler) -> None:
        super().__init__()
        self._handler = handler

    def expand(self, chunks: beam.PCollection) -> dict[str, beam.PCollection]:
        embedded = (chunks
                    | "Batch" >> beam.BatchElements(**self._handler.batch_elements_kwargs())
                    | "EmbedBatches" >> beam.ParDo(_EmbedBatches(self._handler)).with_outputs(FAILURES, main="vectors"))
        return {"vectors": embedded.vectors, "failures": embedded[FAILURES]}
