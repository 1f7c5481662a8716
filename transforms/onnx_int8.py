"""The optional faster embedding backend (`--backend onnx-int8`): the model's transformer exported to ONNX
and dynamically quantized to int8 (MatMul weights, per channel; embeddings and norms stay fp32), run with
ONNX Runtime and the model's own fast tokenizer, then mean pooling and L2 normalisation as in the
sentence-transformers model. Exported once per model into a cache folder (from the local model: nothing is
downloaded) and loaded by each worker. Only mean-pooled models are supported (the default MiniLM is one).

Its vectors differ slightly from fp32 ones (mean cosine ≥ 0.99 measured, see bench/RESULTS.md), so the
stored model id gets the suffix `+onnx-int8`: vectors of the two backends are never mixed or reused for
each other.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transforms.model import load_sentence_transformer, model_fingerprint

BACKEND = "onnx-int8"
DEFAULT_CACHE = Path(os.environ.get("VECTOR_SYNC_ONNX_CACHE", Path.home() / ".cache" / "beam-vector-sync" / "onnx"))
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class UnsupportedModelError(RuntimeError):
    """The model cannot run on the ONNX backend (not mean-pooled, or no fast tokenizer)."""


def int8_model_dir(model_path: str, cache: Path = DEFAULT_CACHE) -> Path:
    return Path(cache) / f"{model_fingerprint(model_path)}-{BACKEND}"


def ensure_int8_model(model_path: str, cache: Path = DEFAULT_CACHE) -> Path:
    """The folder with `model.onnx`, `tokenizer.json` and `meta.json`, exported now if not cached."""
    target = int8_model_dir(model_path, cache)
    if (target / "meta.json").exists():
        return target
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")  # worker processes export side by side
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _export(model_path, staging)
    if target.exists() and not (target / "meta.json").exists():  # left half-made by an older version
        shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:  # another process finished first: keep its export
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _export(model_path: str, out: Path) -> None:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = load_sentence_transformer(model_path, "cpu")
    modules = [type(m).__name__ for m in model]
    pooling = next((m for m in model if type(m).__name__ == "Pooling"), None)
    mode = getattr(pooling, "pooling_mode", None)
    if pooling is None or (mode != "mean" and not getattr(pooling, "pooling_mode_mean_tokens", False)):
        raise UnsupportedModelError(f"the ONNX backend needs a mean-pooled model; this one has {modules} "
                                    f"(pooling {mode!r})")
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise UnsupportedModelError("the ONNX backend needs a fast (tokenizers) tokenizer")
    transformer = model[0].auto_model.eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    sample = tokenizer(["an example", "a second, longer example sentence"], padding=True, return_tensors="pt")
    if "token_type_ids" not in sample:
        sample["token_type_ids"] = torch.zeros_like(sample["input_ids"])
    axes = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")}
    with torch.no_grad():
        torch.onnx.export(LastHiddenState(), tuple(sample[n] for n in _INPUTS), str(out / "model_fp32.onnx"),
                          input_names=list(_INPUTS), output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    quantize_dynamic(str(out / "model_fp32.onnx"), str(out / "model.onnx"), weight_type=QuantType.QInt8,
                     per_channel=True, op_types_to_quantize=["MatMul"])
    (out / "model_fp32.onnx").unlink()
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    normalize = any(type(m).__name__ == "Normalize" for m in model)
    (out / "meta.json").write_text(json.dumps({
        "source_model": model_fingerprint(model_path), "max_seq_length": int(model.max_seq_length),
        "normalize": normalize, "pad_id": int(tokenizer.pad_token_id or 0),
        "quantization": "dynamic int8, MatMul weights per channel"}))


class OnnxInt8Encoder:
    """`encode(texts)` like a SentenceTransformer, on the exported int8 model."""

    def __init__(self, folder: Path, threads: int = 0) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        meta = json.loads((Path(folder) / "meta.json").read_text())
        self._tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self._tokenizer.enable_truncation(int(meta["max_seq_length"]))
        self._tokenizer.enable_padding(pad_id=int(meta["pad_id"]))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(Path(folder) / "model.onnx"), options,
                                             providers=["CPUExecutionProvider"])

    def encode(self, texts: Sequence[str], normalize_embeddings: bool = True, **_: Any) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.asarray([e.type_ids for e in encodings], dtype=np.int64)
        hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
        weights = mask[..., None].astype(np.float32)
        vectors = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        if normalize_embeddings:
            vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return vectors.astype(np.float32)
