"""Split document text into overlapping chunks measured in the embedding model's own tokens.

Chunks never exceed the model's sequence length (so nothing is silently truncated at embedding time), break
between words rather than inside one where they can, and keep the original characters of the text.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from transforms.defaults import DEFAULT_CHUNK_OVERLAP
from transforms.ids import chunk_point_id, content_hash
from transforms.types import Chunk



class ChunkingError(ValueError):
    """The text cannot be chunked (for example it has no tokens at all)."""


@dataclass(frozen=True)
class TokenSpan:
    start: int  # first token (inclusive)
    end: int  # last token (exclusive)


def plan_spans(word_ids: Sequence[Optional[int]], chunk_size: int, overlap: int) -> list[TokenSpan]:
    """Windows of at most `chunk_size` tokens, each starting `overlap` tokens before the last one ended.

    A window end that would split a word moves back to the word's first token, unless the word alone is
    longer than a window; a window start moves back to the start of its word for the same reason.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if not 0 <= overlap < chunk_size:
        raise ValueError("chunk_overlap must be >= 0 and smaller than chunk_size")
    n = len(word_ids)
    spans: list[TokenSpan] = []
    start = 0
    while start < n:
        end = min(start + chunk_size, n)
        if end < n:
            boundary = end
            while boundary > start and word_ids[boundary] is not None and word_ids[boundary] == word_ids[boundary - 1]:
                boundary -= 1
            if boundary > start:
                end = boundary
        spans.append(TokenSpan(start, end))
        if end >= n:
            break
        next_start = max(end - overlap, start + 1)
        while next_start > start + 1 and word_ids[next_start] is not None and word_ids[next_start] == word_ids[next_start - 1]:
            next_start -= 1
        start = next_start
    return spans


class TokenChunker:
    """Chunks text with a Hugging Face fast tokenizer loaded from a local model folder (never from a hub)."""

    def __init__(self, tokenizer: Any, chunk_size: int, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> None:
        self._tokenizer = tokenizer
        # Whole documents are tokenized to find chunk boundaries: silence the "longer than the model's
        # maximum" warning, which is about feeding the model, not about chunking.
        tokenizer.model_max_length = 1 << 30
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        plan_spans([], chunk_size, chunk_overlap)  # validates the sizes up front

    @classmethod
    def from_model_path(cls, model_path: str | Path, chunk_size: Optional[int] = None,
                        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> "TokenChunker":
        """Load the tokenizer of the model at `model_path`; `chunk_size=None` fills the model's window."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True, use_fast=True)
        size = chunk_size or max_content_tokens(model_path, tokenizer)  # before the limit is lifted
        return cls(tokenizer, size, chunk_overlap)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def split(self, text: str) -> list[tuple[str, int]]:
        """`(chunk_text, token_count)` pairs, in order, covering the whole text."""
        encoding = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoding["offset_mapping"]
        if not offsets:
            raise ChunkingError("the text has no tokens to embed")
        spans = plan_spans(encoding.word_ids(), self.chunk_size, self.chunk_overlap)
        return [(text[offsets[s.start][0]:offsets[s.end - 1][1]], s.end - s.start) for s in spans]

    def chunks(self, doc_id: str, text: str, namespace: Optional[str] = None) -> tuple[Chunk, ...]:
        """The document's chunks with deterministic point IDs and content hashes."""
        return tuple(
            Chunk(
                point_id=chunk_point_id(doc_id, index, namespace),
                chunk_index=index,
                text=piece,
                content_hash=content_hash(piece),
                token_count=tokens,
            )
            for index, (piece, tokens) in enumerate(self.split(text))
        )


def max_content_tokens(model_path: str | Path, tokenizer: Any) -> int:
    """The model's max sequence length less its special tokens ([CLS], [SEP])."""
    import json

    config = Path(model_path) / "sentence_bert_config.json"
    max_seq = None
    if config.exists():
        max_seq = json.loads(config.read_text()).get("max_seq_length")
    if not max_seq:
        max_seq = min(getattr(tokenizer, "model_max_length", 512) or 512, 512)
    return int(max_seq) - tokenizer.num_special_tokens_to_add()
