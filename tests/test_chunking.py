from __future__ import annotations

import pytest

from transforms.chunking import ChunkingError, TokenChunker, plan_spans
from transforms.ids import chunk_point_id, content_hash

TEXT = ("Unbelievably, the quick brown fox jumps over the lazy dog. Tokenization of supercalifragilistic words "
        "is tricky! Another sentence follows here with more words to make several chunks appear.")


def test_spans_cover_everything_with_the_requested_overlap():
    word_ids = list(range(50))  # one token per word
    spans = plan_spans(word_ids, chunk_size=10, overlap=3)
    assert spans[0].start == 0 and spans[-1].end == 50
    for a, b in zip(spans, spans[1:]):
        assert b.start == a.end - 3
    assert all(s.end - s.start <= 10 for s in spans)


def test_span_end_moves_back_rather_than_splitting_a_word():
    word_ids = [0, 1, 1, 1, 2, 3, 3, 4]  # word 1 and 3 have several sub-word tokens
    spans = plan_spans(word_ids, chunk_size=3, overlap=0)
    for s in spans[:-1]:
        assert word_ids[s.end] != word_ids[s.end - 1] or s.end - s.start == 3


@pytest.mark.parametrize("size, overlap", [(0, 0), (5, 5), (5, -1)])
def test_bad_sizes_are_rejected(size: int, overlap: int):
    with pytest.raises(ValueError):
        plan_spans([0, 1, 2], size, overlap)


def test_chunks_stay_within_the_token_budget_and_keep_original_text(small_chunker: TokenChunker):
    chunks = small_chunker.chunks("doc-1", TEXT)
    assert len(chunks) > 2
    for chunk in chunks:
        assert chunk.token_count <= 16
        assert small_chunker.count_tokens(chunk.text) <= 16
        assert chunk.text in TEXT
    assert TEXT.startswith(chunks[0].text) and TEXT.endswith(chunks[-1].text)


def test_chunk_ids_and_hashes_are_deterministic(small_chunker: TokenChunker):
    first, second = small_chunker.chunks("doc-1", TEXT), small_chunker.chunks("doc-1", TEXT)
    assert first == second
    assert first[1].point_id == chunk_point_id("doc-1", 1)
    assert first[1].content_hash == content_hash(first[1].text)
    assert small_chunker.chunks("doc-1", TEXT, namespace="t")[0].point_id != first[0].point_id


def test_default_chunk_size_fills_the_model_window(model_path: str):
    assert TokenChunker.from_model_path(model_path).chunk_size == 254  # 256 less [CLS] and [SEP]


def test_text_without_tokens_cannot_be_chunked(small_chunker: TokenChunker):
    with pytest.raises(ChunkingError):
        small_chunker.split("\u200b\u200b")
