"""The embedding objects a RAG app hands LangChain and LlamaIndex, wrapping the bundled all-MiniLM-L6-v2 (no
hub access): the same vectors the pipeline wrote, so a framework's similarity search is comparable."""
from __future__ import annotations

from typing import Any

from transforms.model import default_model_path, load_sentence_transformer

_model: Any = None


def encode(texts: list[str]) -> list[list[float]]:
    global _model
    if _model is None:
        _model = load_sentence_transformer(str(default_model_path()))
    return [v.tolist() for v in _model.encode(texts, normalize_embeddings=True, show_progress_bar=False)]


def langchain_embeddings() -> Any:
    from langchain_core.embeddings import Embeddings

    class MiniLM(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return encode(list(texts))

        def embed_query(self, text: str) -> list[float]:
            return encode([text])[0]

    return MiniLM()


def llamaindex_embedding() -> Any:
    from llama_index.core.embeddings import BaseEmbedding

    class MiniLM(BaseEmbedding):
        def _get_query_embedding(self, query: str) -> list[float]:
            return encode([query])[0]

        def _get_text_embedding(self, text: str) -> list[float]:
            return encode([text])[0]

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

    return MiniLM(model_name="all-MiniLM-L6-v2")
