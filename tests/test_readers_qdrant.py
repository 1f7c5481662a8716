"""A RAG app reads what the pipeline wrote through the real framework packages, without glue: LangChain's
`QdrantVectorStore` (langchain-qdrant) on `--payload_layout langchain`, LlamaIndex's `QdrantVectorStore`
(llama-index-vector-stores-qdrant) on `--payload_layout llamaindex`. The store is written, then updated with a
shrunk and a deleted document; the similarity search returns the right documents with their doc_id, the event
metadata, and nothing stale. The frameworks open the folder in qdrant-client's local mode
(`--qdrant_embedded client`): Qdrant Edge's folders are read by Edge alone."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.main import run
from tests.conftest import write_changelog
from tests.readers import langchain_embeddings, llamaindex_embedding
from tests.test_search import FIRST, SECOND, SMALL

CURRENT = {("manual", None): "Forklifts charge at dock three overnight.",
           ("vpn", None): "Install the VPN client and sign in with single sign-on.",
           ("vpn", "eu"): "The European VPN gateway is in Frankfurt."}


def write_and_update(folder: Path, layout: str, tmp_path: Path) -> None:
    for name, events in (("first", FIRST), ("second", SECOND)):
        summary = run(["--input", str(write_changelog(tmp_path / f"{name}.jsonl", events)), "--qdrant_path",
                       str(folder), "--qdrant_embedded", "client", "--payload_layout", layout,
                       "--dead_letters", str(tmp_path / f"{name}.dead.jsonl"), *SMALL])
        assert summary.accounted and summary.events_dead_lettered == 0


@pytest.fixture
def client_on(tmp_path: Path):
    from qdrant_client import QdrantClient

    opened: list[Any] = []

    def open_folder(folder: Path) -> Any:
        opened.append(QdrantClient(path=str(folder)))
        return opened[-1]

    yield open_folder
    for client in opened:
        client.close()


def test_langchain_qdrant_reads_the_langchain_layout(tmp_path: Path, client_on: Any):
    from langchain_qdrant import QdrantVectorStore
    from qdrant_client import models

    folder = tmp_path / "store"
    write_and_update(folder, "langchain", tmp_path)
    store = QdrantVectorStore(client=client_on(folder), collection_name="documents",
                              embedding=langchain_embeddings())
    docs = store.similarity_search("payroll bank details, forklift aisles and pallets", k=20)
    assert {(d.metadata["doc_id"], d.metadata["namespace"]): d.page_content for d in docs} == CURRENT
    assert len(docs) == len(CURRENT)  # the shrunk document's old chunks and the deleted one are gone
    manual = next(d for d in docs if d.metadata["doc_id"] == "manual")
    assert {k: manual.metadata[k] for k in ("team", "year", "chunk_index", "chunk_count", "version")} == {
        "team": "ops", "year": 2025, "chunk_index": 0, "chunk_count": 1, "version": 2}

    best = store.similarity_search_with_score("where do forklifts charge overnight?", k=1)
    assert [(d.metadata["doc_id"], round(score, 3) > 0.5) for d, score in best] == [("manual", True)]
    team_it = models.Filter(must=[models.FieldCondition(key="metadata.team", match=models.MatchValue(value="it"))])
    it = store.similarity_search("forklifts", k=10, filter=team_it)
    assert sorted((d.metadata["doc_id"], d.metadata["namespace"] or "") for d in it) == [("vpn", ""), ("vpn", "eu")]
    retriever = store.as_retriever(search_kwargs={"k": 1})
    assert retriever.invoke("European gateway city")[0].metadata["namespace"] == "eu"


def test_llamaindex_qdrant_reads_the_llamaindex_layout(tmp_path: Path, client_on: Any):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.vector_stores import ExactMatchFilter, MetadataFilters
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    folder = tmp_path / "store"
    write_and_update(folder, "llamaindex", tmp_path)
    client = client_on(folder)
    vector_store = QdrantVectorStore(client=client, collection_name="documents")
    index = VectorStoreIndex.from_vector_store(vector_store, embed_model=llamaindex_embedding())
    found = index.as_retriever(similarity_top_k=20).retrieve("payroll bank details, forklift aisles and pallets")
    assert sorted((n.node.ref_doc_id, n.node.get_content()) for n in found) == sorted(
        (doc_id, text) for (doc_id, _), text in CURRENT.items())
    by_text = {n.node.get_content(): n.node for n in found}
    assert set(by_text) == set(CURRENT.values()) and len(found) == len(CURRENT)
    manual = by_text[CURRENT[("manual", None)]]
    assert manual.ref_doc_id == "manual" and manual.metadata == {"team": "ops", "year": 2025}

    best = index.as_retriever(similarity_top_k=1).retrieve("where do forklifts charge overnight?")
    assert [(n.node.ref_doc_id, n.score > 0.5) for n in best] == [("manual", True)]
    it = index.as_retriever(similarity_top_k=10, filters=MetadataFilters(
        filters=[ExactMatchFilter(key="team", value="it")])).retrieve("forklifts")
    assert sorted(n.node.get_content() for n in it) == sorted([CURRENT[("vpn", None)], CURRENT[("vpn", "eu")]])
    assert {n.node.ref_doc_id for n in it} == {"vpn"}

    vector_store.delete(ref_doc_id="manual")  # LlamaIndex deletes by the doc_id the layout stores
    left = index.as_retriever(similarity_top_k=20).retrieve("forklifts")
    assert {n.node.ref_doc_id for n in left} == {"vpn"}
