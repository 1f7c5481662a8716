"""MongoDB read through Atlas-style `$vectorSearch`, by `python -m pipeline.search` and by the frameworks' own
stores (langchain-mongodb, llama-index-vector-stores-mongodb, in `.venv-readers`), after the pipeline wrote
and updated the collection (a shrunk and a deleted document). The server is mongoeco's wire server started
with `--search-indexes`: its wire protocol has no `createSearchIndexes`, so the test creates the sink's
vectorSearch index through mongoeco's own API (the index the sink defines, less the `filter` fields mongoeco
does not take). mongoeco reports `vectorSearchScore` as the raw cosine where Atlas reports (1 + cosine) / 2,
so scores are compared by order only."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.search import search
from tests.conftest import MONGOECO_PYTHON, REPO, stop_process_group
from tests.sink_targets import MongoTarget
from tests.test_readers_other import DEFAULT_NAMESPACE, EVERYTHING, read_through
from tests.test_search import sink_of, write_and_update


@pytest.fixture(scope="module")
def searchable_mongo():
    """`(uri, make_index)`: a mongoeco server whose collections can get search indexes."""
    if not MONGOECO_PYTHON.exists():
        pytest.skip("mongoeco's venv is missing (make test makes .venv-mongoeco with Python 3.13)")
    proc = subprocess.Popen([str(MONGOECO_PYTHON), str(REPO / "tests" / "mongoeco_server.py"), "--search-indexes"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)

    def make_index(database: str, collection: str, definition: dict[str, Any]) -> None:
        proc.stdin.write(f"SEARCH_INDEX {database} {collection} {json.dumps(definition)}\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "OK"

    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield f"mongodb://127.0.0.1:{int(line.split()[1])}", make_index
    finally:
        stop_process_group(proc)


def written(searchable_mongo: Any, tmp_path: Path, layout: str) -> MongoTarget:
    uri, make_index = searchable_mongo
    target = MongoTarget((uri, "pymongo:MongoClient", "mongoeco"))
    write_and_update(target, tmp_path, "--payload_layout", layout)
    store = sink_of(target, "--payload_layout", layout).create_store()
    try:
        make_index(target.database, "documents", store.search_index_definition(384))
    finally:
        store.close()
    return target


def test_search_cli_uses_vector_search_and_finds_the_same_as_the_exact_scan(searchable_mongo: Any, tmp_path: Path,
                                                                             caplog: Any):
    uri, _ = searchable_mongo
    target = MongoTarget((uri, "pymongo:MongoClient", "mongoeco"))
    write_and_update(target, tmp_path)
    sink = sink_of(target)
    scanned = search(EVERYTHING, sink, top_k=20)
    assert "scanning every matching chunk" in caplog.text
    caplog.clear()
    store = sink.create_store()
    try:
        searchable_mongo[1](target.database, "documents", store.search_index_definition(384))
    finally:
        store.close()
    indexed = search(EVERYTHING, sink, top_k=20)
    assert "scanning" not in caplog.text
    key = [(h["doc_id"], h["namespace"], h["chunk_index"], h["version"], h["text"]) for h in indexed]
    assert key == [(h["doc_id"], h["namespace"], h["chunk_index"], h["version"], h["text"]) for h in scanned]
    assert {h["doc_id"] for h in indexed} == {"manual", "vpn"} and len(indexed) == 3
    it = search("forklifts", sink, top_k=10, metadata={"team": "it"})
    assert sorted((h["doc_id"], h["namespace"] or "") for h in it) == [("vpn", ""), ("vpn", "eu")]
    assert search("payroll", sink, top_k=10, metadata={"team": "hr"}) == []


@pytest.mark.parametrize("layout", ["langchain", "native"])
def test_langchain_mongodb_reads_the_langchain_and_the_native_layout(searchable_mongo: Any, tmp_path: Path,
                                                                     layout: str):
    target = written(searchable_mongo, tmp_path, layout)
    store = {"uri": target.uri, "database": target.database, "collection": "documents"}
    team = "team" if layout == "langchain" else "metadata.team"  # native: the event metadata stays nested
    everything, it = read_through("langchain-mongodb", store, [
        {"text": EVERYTHING, "k": 20}, {"text": "forklifts", "k": 20, "filter": {team: {"$eq": "it"}}}])
    assert sorted((d["metadata"]["doc_id"], d["metadata"]["namespace"] or "", d["text"]) for d in everything) == sorted(
        [(doc_id, "", text) for text, doc_id in DEFAULT_NAMESPACE.items()]
        + [("vpn", "eu", "The European VPN gateway is in Frankfurt.")])
    manual = next(d["metadata"] for d in everything if d["metadata"]["doc_id"] == "manual")
    assert (manual["metadata"], manual["version"], manual["chunk_index"]) == ({"team": "ops", "year": 2025}, 2, 0)
    assert (manual.get("team"), manual.get("year")) == (("ops", 2025) if layout == "langchain" else (None, None))
    assert sorted(d["metadata"]["namespace"] or "" for d in it) == ["", "eu"]
    assert all(d["metadata"]["metadata"]["team"] == "it" for d in it)


def test_llamaindex_mongodb_reads_the_llamaindex_layout_and_deletes_by_ref_doc_id(searchable_mongo: Any,
                                                                                   tmp_path: Path):
    target = written(searchable_mongo, tmp_path, "llamaindex")
    store = {"uri": target.uri, "database": target.database, "collection": "documents"}
    everything, it = read_through("llamaindex-mongodb", store, [
        {"text": EVERYTHING, "k": 20}, {"text": "forklifts", "k": 20, "filter": {"team": "it"}}])
    assert sorted((n["ref_doc_id"], n["text"]) for n in everything) == sorted(
        [(doc_id, text) for text, doc_id in DEFAULT_NAMESPACE.items()]
        + [("vpn", "The European VPN gateway is in Frankfurt.")])
    manual = next(n for n in everything if n["ref_doc_id"] == "manual")
    assert manual["metadata"] == {"team": "ops", "year": 2025}
    assert sorted(n["text"] for n in it) == ["Install the VPN client and sign in with single sign-on.",
                                             "The European VPN gateway is in Frankfurt."]
    (left,) = read_through("llamaindex-mongodb", {**store, "delete_ref_doc_id": "manual"},
                           [{"text": EVERYTHING, "k": 20}])
    assert {n["ref_doc_id"] for n in left} == {"vpn"}
