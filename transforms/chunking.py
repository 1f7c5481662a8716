"""Split document text into overlapping chunks measured in the embedding model's own tokens.

Chunks never exceed the model's sequence length (so nothing is silently truncated at embedding time), break
between words rather than inside one where they can, and keep the original characters of the text.
"""
from __future__ import annotations

import json
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
    """Chunks text with a Hugging Face fast tokenizer (the `tokenizers` library's) of a local model folder
    (never from a hub); no truncation, no padding, no special tokens."""

    def __init__(self, tokenizer: Any, chunk_size: int, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> None:
        # Whole documents are tokenized to find chunk boundaries: no truncation to the model's window.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        plan_spans([], chunk_size, chunk_overlap)  # validates the sizes up front

    @classmethod
    def from_model_path(cls, model_path: str | Path, chunk_size: Optional[int] = None,
                        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP, tokenizer_file: bool = False) -> "TokenChunker":
        """The tokenizer of the model at `model_path`; `chunk_size=None` fills the model's window.
        `tokenizer_file`: the folder's `tokenizer.json` is loaded with the `tokenizers` library alone (in
        milliseconds; give it only where `tokenizer_file_is_exact` holds), else through transformers (which
        imports torch: seconds)."""
        if tokenizer_file:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
            max_length = _configured_max_length(model_path)
        else:
            loaded = _transformers_tokenizer(model_path)
            tokenizer, max_length = loaded.backend_tokenizer, loaded.model_max_length
        size = chunk_size or max_content_tokens(model_path, max_length, tokenizer.num_special_tokens_to_add(False))
        return cls(tokenizer, size, chunk_overlap)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def split(self, text: str) -> list[tuple[str, int]]:
        """`(chunk_text, token_count)` pairs, in order, covering the whole text."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        offsets = encoding.offsets
        if not offsets:
            raise ChunkingError("the text has no tokens to embed")
        spans = plan_spans(encoding.word_ids, self.chunk_size, self.chunk_overlap)
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


def max_content_tokens(model_path: str | Path, model_max_length: Optional[int], special_tokens: int) -> int:
    """The model's max sequence length (sentence-transformers' setting, else the tokenizer's, at most 512) less
    its special tokens ([CLS], [SEP])."""
    config = Path(model_path) / "sentence_bert_config.json"
    max_seq = None
    if config.exists():
        max_seq = json.loads(config.read_text()).get("max_seq_length")
    if not max_seq:
        max_seq = min(model_max_length or 512, 512)
    return int(max_seq) - special_tokens


def _transformers_tokenizer(model_path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path), local_files_only=True, use_fast=True)


def _configured_max_length(model_path: str | Path) -> Optional[int]:
    """`model_max_length` of the folder's tokenizer_config.json, as transformers reads it (None when absent)."""
    config = Path(model_path) / "tokenizer_config.json"
    value = json.loads(config.read_text()).get("model_max_length") if config.exists() else None
    return int(value) if value else None


def _pipeline_of(tokenizer: Any) -> dict[str, Any]:
    """A tokenizer's whole definition (vocabulary, normaliser, pre-tokenizer, ...) less truncation and padding."""
    definition = json.loads(tokenizer.to_str())
    definition.pop("truncation", None)
    definition.pop("padding", None)
    return definition


def tokenizer_file_is_exact(model_path: str | Path) -> bool:
    """Whether the folder's `tokenizer.json`, loaded alone, is the very tokenizer transformers builds from the
    folder (whose tokenizer_config.json may change the normaliser, say), with the same window: then
    `TokenChunker.from_model_path(..., tokenizer_file=True)` chunks exactly alike. Imports transformers."""
    file = Path(model_path) / "tokenizer.json"
    if not file.exists():
        return False
    from tokenizers import Tokenizer

    loaded = _transformers_tokenizer(model_path)
    alone = Tokenizer.from_file(str(file))
    return (_pipeline_of(alone) == _pipeline_of(loaded.backend_tokenizer)
            and min(_configured_max_length(model_path) or 512, 512) == min(loaded.model_max_length or 512, 512))
