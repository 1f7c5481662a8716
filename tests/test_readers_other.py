"""Reader tests for the frameworks whose pins clash with ours (langchain-pinecone wants pinecone 7,
llama-index-vector-stores-postgres pgvector 0.3): the pipeline writes and updates a store here, then
`tests/reader_search.py` searches it through the framework's own vector store in `.venv-readers` (made by
`make readers-venv`), with query vectors embedded here by the same model. The right documents come back, with
their doc_id, and nothing stale (the shrunk document's old chunks, the deleted document)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.readers import encode
from tests.sink_targets import API_KEY, PgVectorTarget, PineconeTarget
from tests.test_search import write_and_update

READERS_PYTHON = REPO / ".venv-readers" / "bin" / "python"
DEFAULT_NAMESPACE = {"Forklifts charge at dock three overnight.": "manual",
                     "Install the VPN client and sign in with single sign-on.": "vpn"}
EVERYTHING = "payroll bank details, forklift aisles and pallets"


def read_through(reader: str, store: dict[str, Any], queries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    if not READERS_PYTHON.exists():
        pytest.skip("the readers' venv is missing: make readers-venv")
    request = {"reader": reader, "store": store,
               "queries": [{**q, "vector": encode([q.pop("text")])[0]} for q in queries]}
    done = subprocess.run([str(READERS_PYTHON), str(REPO / "tests" / "reader_search.py")], input=json.dumps(request),
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def pinecone_written(tmp_path: Path, layout: str) -> Any:
    target = PineconeTarget()
    write_and_update(target, tmp_path, "--payload_layout", layout)
    return target


@pytest.fixture
def pinecone(tmp_path: Path):
    target = pinecone_written(tmp_path, "langchain")
    yield {"host": target.index.url, "api_key": API_KEY, "namespace": ""}
    target.close()


def test_langchain_pinecone_reads_the_langchain_layout(pinecone: dict[str, Any]):
    everything, it, best = read_through("langchain-pinecone", pinecone, [
        {"text": EVERYTHING, "k": 20}, {"text": "forklifts", "k": 20, "filter": {"team": "it"}},
        {"text": "where do forklifts charge overnight?", "k": 1}])
    assert {d["text"]: d["metadata"]["doc_id"] for d in everything} == DEFAULT_NAMESPACE
    manual = next(d["metadata"] for d in everything if d["metadata"]["doc_id"] == "manual")
    assert (manual["team"], manual["year"], manual["version"], manual["chunk_index"]) == ("ops", 2025, 2, 0)
    assert [(d["metadata"]["doc_id"], d["metadata"]["team"]) for d in it] == [("vpn", "it")]
    assert [d["metadata"]["doc_id"] for d in best] == ["manual"] and best[0]["score"] > 0.5


def test_llamaindex_pinecone_reads_the_text_key_with_the_doc_id_in_the_metadata(pinecone: dict[str, Any]):
    everything, it = read_through("llamaindex-pinecone", pinecone, [
        {"text": EVERYTHING, "k": 20}, {"text": "forklifts", "k": 20, "filter": {"team": "it"}}])
    assert {n["text"]: n["metadata"]["doc_id"] for n in everything} == DEFAULT_NAMESPACE
    assert [n["metadata"]["doc_id"] for n in it] == ["vpn"]


def test_llamaindex_pinecone_reads_the_llamaindex_layout_and_deletes_by_ref_doc_id(tmp_path: Path):
    target = pinecone_written(tmp_path, "llamaindex")
    store = {"host": target.index.url, "api_key": API_KEY, "namespace": ""}
    try:
        everything, it = read_through("llamaindex-pinecone", store, [
            {"text": EVERYTHING, "k": 20}, {"text": "forklifts", "k": 20, "filter": {"team": "it"}}])
        assert {n["text"]: n["ref_doc_id"] for n in everything} == DEFAULT_NAMESPACE
        manual = next(n for n in everything if n["ref_doc_id"] == "manual")
        assert manual["metadata"] == {"team": "ops", "year": 2025}
        assert [n["ref_doc_id"] for n in it] == ["vpn"]
        (left,) = read_through("llamaindex-pinecone", {**store, "delete_ref_doc_id": "manual"},
                               [{"text": EVERYTHING, "k": 20}])
        assert {n["ref_doc_id"] for n in left} == {"vpn"}
    finally:
        target.close()


def test_langchain_postgres_reads_the_pgvector_table_by_naming_its_columns(pg_uri: str, tmp_path: Path):
    target = PgVectorTarget(pg_uri)
    write_and_update(target, tmp_path)
    url = pg_uri.replace("postgresql://", "postgresql+psycopg://", 1)
    everything, vpn, best = read_through("langchain-postgres", {"url": url, "table": target.table}, [
        {"text": EVERYTHING, "k": 20}, {"text": "forklifts", "k": 20, "filter": {"doc_id": {"$eq": "vpn"}}},
        {"text": "where do forklifts charge overnight?", "k": 1}])
    assert sorted((d["metadata"]["doc_id"], d["metadata"]["namespace"], d["text"]) for d in everything) == sorted([
        ("manual", "", "Forklifts charge at dock three overnight."),
        ("vpn", "", "Install the VPN client and sign in with single sign-on."),
        ("vpn", "eu", "The European VPN gateway is in Frankfurt.")])
    manual = next(d["metadata"] for d in everything if d["metadata"]["doc_id"] == "manual")
    assert (manual["team"], manual["year"], manual["version"]) == ("ops", 2025, 2)
    assert sorted(d["metadata"]["namespace"] for d in vpn) == ["", "eu"]
    assert [d["metadata"]["doc_id"] for d in best] == ["manual"]


def test_llamaindex_postgres_reads_the_view_the_llamaindex_layout_keeps(pg_uri: str, tmp_path: Path):
    target = PgVectorTarget(pg_uri)
    write_and_update(target, tmp_path, "--payload_layout", "llamaindex")
    everything, it = read_through("llamaindex-postgres", {"url": pg_uri, "table": target.table}, [
        {"text": EVERYTHING, "k": 20}, {"text": "forklifts", "k": 20, "filter": {"team": "it"}}])
    assert sorted((n["ref_doc_id"], n["text"]) for n in everything) == sorted(
        [(doc_id, text) for text, doc_id in DEFAULT_NAMESPACE.items()]
        + [("vpn", "The European VPN gateway is in Frankfurt.")])
    manual = next(n for n in everything if n["ref_doc_id"] == "manual")
    assert manual["metadata"] == {"team": "ops", "year": 2025}
    assert sorted(n["text"] for n in it) == ["Install the VPN client and sign in with single sign-on.",
                                             "The European VPN gateway is in Frankfurt."]
    assert [n["score"] > 0.5 for n in read_through("llamaindex-postgres", {"url": pg_uri, "table": target.table}, [
        {"text": "where do forklifts charge overnight?", "k": 1}])[0]] == [True]
