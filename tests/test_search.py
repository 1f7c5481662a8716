"""`python -m pipeline.search` and each store's `nearest()` on every sink the pipeline writes: Qdrant (Edge and
qdrant-client's local mode), pgvector (a real PostgreSQL), MongoDB (mongoeco's wire server: no vector search
there, so the exact scan) and Pinecone (the real SDK against tests/pinecone_fake.py). The store is written,
then updated with a shrunk and a deleted document: a search never returns a chunk the store no longer holds,
and the metadata and namespace filters hold."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connectors.base import StoreConfigError
from pipeline.main import run
from pipeline.options import parse_args
from pipeline.search import main as search_main
from pipeline.search import parse_filter, search
from tests.conftest import write_changelog
from tests.sink_targets import MongoTarget, PgVectorTarget, PineconeTarget, QdrantTarget

SMALL = ["--chunk_size", "16", "--chunk_overlap", "4"]
MANUAL = " ".join(f"Forklift rule {i}: pallets in aisle {i} are lifted with the forks level." for i in range(6))
FIRST = [
    {"doc_id": "manual", "op": "upsert", "version": 1, "text": MANUAL, "metadata": {"team": "ops", "year": 2024}},
    {"doc_id": "vpn", "op": "upsert", "version": 1, "text": "Install the VPN client and sign in with single sign-on.",
     "metadata": {"team": "it"}},
    {"doc_id": "payroll", "op": "upsert", "version": 1, "text": "Payroll runs on the 25th; submit bank details early.",
     "metadata": {"team": "hr"}},
    {"doc_id": "vpn", "op": "upsert", "version": 1, "namespace": "eu", "metadata": {"team": "it"},
     "text": "The European VPN gateway is in Frankfurt."},
]
SECOND = [
    {"doc_id": "manual", "op": "upsert", "version": 2, "text": "Forklifts charge at dock three overnight.",
     "metadata": {"team": "ops", "year": 2025}},   # shrinks to one chunk, metadata changed
    {"doc_id": "payroll", "op": "delete", "version": 2},
]


@pytest.fixture(params=["qdrant", "qdrant-client", "pgvector", "pinecone", "mongodb"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param.startswith("qdrant"):
        made: Any = QdrantTarget(tmp_path)
        if request.param == "qdrant-client":
            made.args = [*made.args, "--qdrant_embedded", "client"]
            made.embedded = "client"
    elif request.param == "pgvector":
        made = PgVectorTarget(request.getfixturevalue("pg_uri"))
    elif request.param == "pinecone":
        made = PineconeTarget()
    else:
        made = MongoTarget(request.getfixturevalue("mongo_server"))
    yield made
    made.close()


def write_and_update(target: Any, tmp_path: Path, *extra: str) -> None:
    for name, events in (("first", FIRST), ("second", SECOND)):
        summary = run(["--input", str(write_changelog(tmp_path / f"{name}.jsonl", events)), *target.args,
                       "--dead_letters", str(tmp_path / f"{name}.dead.jsonl"), *SMALL, *extra])
        assert summary.accounted and summary.events_dead_lettered == 0


def sink_of(target: Any, *extra: str) -> Any:
    config, _ = parse_args([*target.args, *extra])
    return config.sinks[0]


def held(target: Any) -> dict[tuple[str, Any, int], tuple[int, str]]:
    if getattr(target, "embedded", "edge") == "client":
        from tests.conftest import read_points

        return {(p["doc_id"], p["namespace"], p["chunk_index"]): (p["version"], p["text"])
                for p in read_points(target.path, embedded="client").values()}
    return target.state()


def found(hits: list[dict[str, Any]]) -> dict[tuple[str, Any, int], tuple[int, str]]:
    return {(h["doc_id"], h["namespace"], h["chunk_index"]): (h["version"], h["text"]) for h in hits}


def test_search_returns_only_what_the_store_holds_after_a_shrink_and_a_delete(target: Any, tmp_path: Path):
    write_and_update(target, tmp_path)
    sink = sink_of(target)
    state = held(target)
    assert ("payroll", None, 0) not in state and ("manual", None, 1) not in state  # the store itself is exact
    everything = search("payroll bank details forklift pallets", sink, top_k=50)
    scores = [h["score"] for h in everything]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0001 for s in scores)
    if target.name == "pinecone":  # per-event namespaces: one query reads one of them (the default here)
        expected = {k: v for k, v in state.items() if k[1] is None}
    else:
        expected = state
    assert found(everything) == expected
    assert {h["doc_id"] for h in everything} == {"manual", "vpn"}
    manual = [h for h in everything if h["doc_id"] == "manual"]
    assert [(h["version"], h["text"], h["metadata"]) for h in manual] == [
        (2, "Forklifts charge at dock three overnight.", {"team": "ops", "year": 2025})]

    best = search("where do forklifts charge", sink, top_k=1)
    assert [(h["doc_id"], h["chunk_index"]) for h in best] == [("manual", 0)]
    eu = search("VPN gateway", sink, top_k=10, namespace="eu")
    assert found(eu) == {("vpn", "eu", 0): (1, "The European VPN gateway is in Frankfurt.")}


def test_metadata_filters_on_each_sink(target: Any, tmp_path: Path):
    write_and_update(target, tmp_path)
    sink = sink_of(target)
    if target.name == "pinecone":  # native layout: the metadata is one JSON string there
        with pytest.raises(StoreConfigError, match="cannot filter on"):
            search("VPN", sink, top_k=10, metadata={"team": "it"})
        return
    it = search("forklifts", sink, top_k=10, metadata={"team": "it"})
    assert {(h["doc_id"], h["namespace"]) for h in it} == {("vpn", None), ("vpn", "eu")}
    assert search("payroll", sink, top_k=10, metadata={"team": "hr"}) == []  # deleted: nothing comes back
    ops = search("forklifts", sink, top_k=10, metadata={"team": "ops", "year": 2025})
    assert [(h["doc_id"], h["chunk_index"]) for h in ops] == [("manual", 0)]
    assert search("forklifts", sink, top_k=10, metadata={"team": "ops", "year": 2024}) == []  # the old version's


def test_the_cli_takes_the_pipeline_sink_options_and_filters(target: Any, tmp_path: Path, capsys: Any):
    write_and_update(target, tmp_path)
    capsys.readouterr()
    extra = [] if target.name == "pinecone" else ["--filter", "team=it"]
    assert search_main(["VPN sign-in", *target.args, "--top_k", "3", *extra]) == 0
    out = capsys.readouterr().out
    assert out.startswith("query: VPN sign-in\n1. score=")
    assert "doc_id=vpn " in out and "doc_id=payroll" not in out
    if extra:
        assert "doc_id=manual" not in out and "namespace=eu" in out


def test_cli_errors_are_one_line(tmp_path: Path, capsys: Any):
    assert search_main(["q", "--sink", "qdrant", "--sink", "pgvector", "--pg_dsn", "postgresql://x@127.0.0.1/db"]) == 2
    assert "2 sinks are configured (qdrant, pgvector): pick one with --sink" in capsys.readouterr().err
    assert search_main(["q", "--qdrant_path", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        search_main(["q", "--filter", "novalue"])


def test_cli_names_a_missing_pgvector_table_in_one_line(pg_uri: str, capsys: Any):
    assert search_main(["q", "--sink", "pgvector", "--pg_dsn", pg_uri, "--pg_table", "never_written"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: UndefinedTable") and "never_written" in line


def test_filter_values_are_json_scalars_or_text():
    assert parse_filter("team=hr") == ("team", "hr")
    assert parse_filter("year=2024") == ("year", 2024)
    assert parse_filter('year="2024"') == ("year", "2024")
    assert parse_filter("draft=false") == ("draft", False)
    assert parse_filter("path=a=b") == ("path", "a=b")
    assert parse_filter("tags=[1]") == ("tags", "[1]")


@pytest.mark.parametrize("layout", ["langchain", "llamaindex"])
def test_pinecone_layouts_make_metadata_fields_filterable(tmp_path: Path, layout: str):
    target = PineconeTarget()
    try:
        write_and_update(target, tmp_path, "--payload_layout", layout)
        sink = sink_of(target, "--payload_layout", layout)
        it = search("forklifts", sink, top_k=10, metadata={"team": "it"})
        assert [(h["doc_id"], h["metadata"]) for h in it] == [("vpn", {"team": "it"})]  # the default namespace's
        assert [h["doc_id"] for h in search("forklifts", sink, top_k=10, metadata={"year": 2025})] == ["manual"]
        assert search("payroll", sink, top_k=10, metadata={"team": "hr"}) == []
        stored = [m for _, m in target.index.vectors("").values()]
        assert all(m["team"] == json.loads(m["metadata_json"])["team"] for m in stored)
        with pytest.raises(StoreConfigError, match="not fields of their own"):
            search("x", sink, top_k=1, metadata={"version": 1})
        replay = run(["--input", str(write_changelog(tmp_path / "replay.jsonl", FIRST + SECOND)), *target.args,
                      "--payload_layout", layout, "--dead_letters", str(tmp_path / "r.dead.jsonl"), *SMALL])
        assert replay.vectors_upserted == 0 and replay.events_in_sync == 4
        native = run(["--input", str(tmp_path / "replay.jsonl"), *target.args,
                      "--dead_letters", str(tmp_path / "n.dead.jsonl"), *SMALL])
        assert native.chunks_embedded == 0 and native.vectors_upserted == 3  # a layout switch rewrites
        assert all("team" not in m and "_node_content" not in m for _, m in target.index.vectors("").values())
    finally:
        target.close()


def test_pinecone_llamaindex_layout_cuts_the_text_inside_the_node_to_fit_40_kb():
    from connectors.pinecone import METADATA_LIMIT_BYTES, PineconeConfig
    from transforms.types import ChunkRecord

    target = PineconeTarget()
    store = PineconeConfig(index_host=target.index.url, payload_layout="llamaindex").create_store()
    try:
        text = "é" * 30_000
        record = ChunkRecord(point_id="p", doc_id="big", namespace=None, chunk_index=0, chunk_count=1, version=1,
                             text=text, content_hash="h", model="m", metadata={"team": "it"}, vector=[0.1] * 384)
        metadata = store._vector(record)["metadata"]
        size = len(json.dumps(metadata, separators=(",", ":")).encode("utf-8"))
        node = json.loads(metadata["_node_content"])
        assert METADATA_LIMIT_BYTES - 200 < size <= METADATA_LIMIT_BYTES and metadata["text_truncated"] is True
        assert text.startswith(node["text"]) and 0 < len(node["text"]) < len(text) and "text" not in metadata
        assert (metadata["team"], metadata["ref_doc_id"], node["metadata"]) == ("it", "big", {"team": "it"})
    finally:
        store.close()
        target.close()
