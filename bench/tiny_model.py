"""A near-free sentence-transformer for benchmarks: a 1-layer BERT with hidden size 32 and random weights
(fixed seed), with the bundled all-MiniLM-L6-v2 tokenizer, mean pooling and normalisation. Built locally,
offline, once per folder. Its vectors mean nothing; next to it the pipeline's own cost shows, as it would
next to a GPU."""
from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def build_tiny_model(folder: Path, hidden: int = 32, layers: int = 1, seed: int = 0) -> Path:
    """The tiny model saved in `folder` (reused when it is already there)."""
    if (folder / "modules.json").exists():
        return folder
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    from transforms.model import default_model_path

    bundled = default_model_path()
    torch.manual_seed(seed)
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "bert").mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy(bundled / name, staging / "bert" / name)
    vocab_size = sum(1 for _ in (bundled / "vocab.txt").open(encoding="utf-8"))
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=hidden * 2, max_position_embeddings=512)
    BertModel(config).save_pretrained(staging / "bert")
    transformer = models.Transformer(str(staging / "bert"), max_seq_length=256)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(str(folder))
    shutil.rmtree(staging, ignore_errors=True)
    return folder
