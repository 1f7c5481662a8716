"""Batched embedding with Beam `RunInference` and a sentence-transformers `ModelHandler`.

One model per worker process (Beam's shared model handle): torch by default, or the int8 ONNX export
(`transforms/onnx_int8.py`); batches of exactly `batch_size` chunks except at
the end of a bundle; vectors are L2-normalised (cosine). A batch that fails to embed sends each of its
chunks to the `failures` output (keyed by document), so the document is dead-lettered, never half-written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from transforms import counters
from transforms.model import load_sentence_transformer
from transforms.types import DocKey

ChunkRef = tuple[DocKey, int]
"""`(document key, chunk index)`: the key RunInference carries through for each chunk."""
ChunkText = tuple[str, int]
"""`(text, token_count)`: what is embedded, with its length for padding accounting."""


class SentenceTransformerHandler(ModelHandler[ChunkText, np.ndarray, Any]):
    """Loads a local sentence-transformers model offline and embeds batches of `(text, token_count)`.

    Counts real and padded tokens per batch (metrics `vector_sync/tokens_in_batches` and
    `vector_sync/padded_tokens_in_batches`), so padding waste can be reported."""

    def __init__(self, model_path: str, *, batch_size: int = 64, device: str = "cpu",
                 normalize: bool = True, onnx_folder: Optional[str] = None) -> None:
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        self.model_path = model_path
        self.batch_size = batch_size
        self.device = device
        self.normalize = normalize
        self.onnx_folder = onnx_folder

    def load_model(self) -> Any:
        """The torch model on `device`, or the exported int8 ONNX model when `onnx_folder` is given."""
        if self.onnx_folder:
            from transforms.onnx_int8 import OnnxInt8Encoder

            return OnnxInt8Encoder(Path(self.onnx_folder))
        return load_sentence_transformer(self.model_path, self.device)

    def run_inference(self, batch: Sequence[ChunkText], model: Any,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        texts = [text for text, _ in batch]
        lengths = [tokens + 2 for _, tokens in batch]  # + [CLS] and [SEP]
        counters.counter(counters.BATCH_TOKENS).inc(sum(lengths))
        counters.counter(counters.BATCH_PADDED_TOKENS).inc(max(lengths) * len(lengths))
        vectors = model.encode(texts, batch_size=len(texts), normalize_embeddings=self.normalize,
                               convert_to_numpy=True, show_progress_bar=False)
        return [PredictionResult(text, vector) for text, vector in zip(texts, vectors)]

    def get_num_bytes(self, batch: Sequence[ChunkText]) -> int:
        return sum(len(text.encode("utf-8")) for text, _ in batch)

    def get_metrics_namespace(self) -> str:
        return "vector_sync_embed"


def _vector_of(item: tuple[ChunkRef, PredictionResult]) -> tuple[DocKey, tuple[int, list[float]]]:
    (doc_key, chunk_index), result = item
    return doc_key, (chunk_index, np.asarray(result.inference, dtype=np.float32).tolist())


def _failures_of(failed: Any) -> Iterable[tuple[DocKey, str]]:
    batch, error = failed
    message = f"{type(error).__name__}: {error}"
    for element in batch:
        (doc_key, _chunk_index), _text = element
        yield doc_key, message


class EmbedChunks(beam.PTransform):
    """`((doc_key, chunk_index), (text, token_count))` → tagged `vectors` `(doc_key, (chunk_index, vector))` and
    `failures` `(doc_key, error)`."""

    def __init__(self, handler: SentenceTransformerHandler) -> None:
        super().__init__()
        self._handler = handler

    def expand(self, chunks: beam.PCollection) -> dict[str, beam.PCollection]:
        results, errors = chunks | "RunInference" >> RunInference(
            KeyedModelHandler(self._handler)).with_exception_handling()
        return {
            "vectors": results | "ToVectors" >> beam.Map(_vector_of),
            "failures": errors.failed_inferences | "ToFailures" >> beam.FlatMap(_failures_of),
        }
