"""Payload layouts (transforms/layouts.py): each keeps the sync fields and reads the event metadata back
exactly, and the Qdrant sink plans and syncs the same in every layout (a replay is in sync, a layout switch
rewrites the chunks without embedding them again)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connectors.base import StoreConfigError
from connectors.qdrant import QdrantConfig
from pipeline.main import run
from pipeline.search import search
from tests.conftest import read_points, write_changelog
from tests.sink_targets import MongoTarget
from tests.test_search import FIRST, SECOND, SMALL, sink_of
from transforms.layouts import (LAYOUTS, OTHER_LAYOUT, SYNC_FIELDS, chunk_payload, event_metadata, layout_of,
                                metadata_path, payload_text)
from transforms.types import ChunkRecord


def record(metadata: dict) -> ChunkRecord:
    return ChunkRecord(point_id="p-1", doc_id="doc", namespace="ns", chunk_index=2, chunk_count=3, version=7,
                       text="Some text.", content_hash="h", model="m", metadata=metadata, vector=[0.1, 0.2])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("metadata", [{}, {"team": "hr", "n": 1.5, "tags": ["a"], "deep": {"x": None}},
                                      {"doc_id": "shadow", "version": "v", "_node_content": 1, "page_content": 2,
                                       "text": "t", "metadata": {"m": 1}}])
def test_every_layout_keeps_sync_fields_and_reads_event_metadata_back_exactly(layout: str, metadata: dict):
    payload = chunk_payload(record(metadata), layout)
    json.dumps(payload)  # storable as JSON
    assert {k: payload[k] for k in SYNC_FIELDS} == {"doc_id": "doc", "namespace": "ns", "chunk_index": 2,
                                                    "chunk_count": 3, "version": 7, "content_hash": "h", "model": "m"}
    assert layout_of(payload) == layout
    assert event_metadata(payload, layout) == metadata
    assert payload_text(payload) == "Some text."
    others = [o for o in LAYOUTS if o != layout]
    assert all(OTHER_LAYOUT in event_metadata(payload, o) for o in others)  # never equal to an event's


def test_langchain_metadata_holds_the_doc_id_and_the_sync_fields():
    payload = chunk_payload(record({"team": "hr", "doc_id": "shadow"}), "langchain")
    assert payload["page_content"] == "Some text."
    assert payload["metadata"] == {"team": "hr", "doc_id": "doc", "namespace": "ns", "chunk_index": 2,
                                   "chunk_count": 3, "version": 7}
    assert metadata_path("team", "langchain") == "metadata.team"
    with pytest.raises(ValueError, match="cannot be filtered"):
        metadata_path("doc_id", "langchain")


def test_llamaindex_node_content_is_a_text_node_with_the_doc_as_source():
    payload = chunk_payload(record({"team": "hr", "model": "mine"}), "llamaindex")
    node = json.loads(payload["_node_content"])
    assert (node["id_"], node["text"], node["metadata"]) == ("p-1", "Some text.", {"team": "hr", "model": "mine"})
    assert node["relationships"]["1"]["node_id"] == "doc" and payload["_node_type"] == "TextNode"
    assert payload["doc_id"] == payload["ref_doc_id"] == payload["document_id"] == "doc"
    assert payload["team"] == "hr" and payload["model"] == "m"  # a reserved key stays inside the node only
    assert metadata_path("team", "llamaindex") == "team"
    with pytest.raises(ValueError, match="cannot be filtered"):
        metadata_path("model", "llamaindex")


def sync(tmp_path: Path, name: str, events: list, *args: str):
    summary = run(["--input", str(write_changelog(tmp_path / f"{name}.jsonl", events)), "--dead_letters",
                   str(tmp_path / f"{name}.dead.jsonl"), *SMALL, *args])
    assert summary.accounted and summary.events_dead_lettered == 0
    return summary


@pytest.mark.parametrize("embedded", ["edge", "client"])
@pytest.mark.parametrize("layout", ["langchain", "llamaindex"])
def test_qdrant_syncs_exactly_in_each_layout_and_a_replay_is_in_sync(tmp_path: Path, layout: str, embedded: str):
    args = ["--qdrant_path", str(tmp_path / "store"), "--qdrant_embedded", embedded, "--payload_layout", layout]
    sync(tmp_path, "first", FIRST, *args)
    sync(tmp_path, "second", SECOND, *args)
    points = read_points(tmp_path / "store", embedded=embedded)
    held = {(p["doc_id"], p["namespace"], p["chunk_index"]): (p["version"], payload_text(p)) for p in points.values()}
    assert held == {("manual", None, 0): (2, "Forklifts charge at dock three overnight."),
                    ("vpn", None, 0): (1, "Install the VPN client and sign in with single sign-on."),
                    ("vpn", "eu", 0): (1, "The European VPN gateway is in Frankfurt.")}
    assert all(layout_of(p) == layout for p in points.values())
    sink = QdrantConfig(path=str(tmp_path / "store"), embedded=embedded, payload_layout=layout)
    it = search("forklifts", sink, top_k=10, metadata={"team": "it"})
    assert {(h["doc_id"], h["namespace"], h["metadata"]["team"]) for h in it} == {("vpn", None, "it"),
                                                                                ("vpn", "eu", "it")}
    assert [h["text"] for h in search("forklifts", sink, top_k=1, metadata={"year": 2025})] == [
        "Forklifts charge at dock three overnight."]
    with pytest.raises(StoreConfigError, match="cannot be filtered on"):
        search("forklifts", sink, top_k=1, metadata={"version": 2})
    replay = sync(tmp_path, "replay", FIRST + SECOND, *args)
    assert replay.vectors_upserted == 0 and replay.chunks_embedded == 0
    assert replay.events_in_sync == 4 and replay.events_superseded == 2  # the delete is in sync too


def test_switching_layout_rewrites_every_chunk_without_embedding_it_again(tmp_path: Path):
    args = ["--qdrant_path", str(tmp_path / "store")]
    sync(tmp_path, "native", FIRST, *args)
    before = read_points(tmp_path / "store")
    switched = sync(tmp_path, "langchain", FIRST, *args, "--payload_layout", "langchain")
    after = read_points(tmp_path / "store")
    assert switched.chunks_embedded == 0 and switched.vectors_upserted == len(before) == len(after)
    assert all(layout_of(p) == "native" for p in before.values())
    assert all(layout_of(p) == "langchain" for p in after.values())
    assert {k: p["vector"] for k, p in before.items()} == {k: p["vector"] for k, p in after.items()}


@pytest.mark.parametrize("layout", ["langchain", "llamaindex"])
def test_mongodb_syncs_exactly_in_each_layout_and_switching_rewrites(tmp_path: Path, mongo_server: Any, layout: str):
    target = MongoTarget(mongo_server)
    sync(tmp_path, "first", FIRST, *target.args, "--payload_layout", layout)
    sync(tmp_path, "second", SECOND, *target.args, "--payload_layout", layout)
    documents = {(d["doc_id"], d["namespace"]): d for d in target.collection().find()}
    assert set(documents) == {("manual", None), ("vpn", None), ("vpn", "eu")}
    manual = documents[("manual", None)]
    assert manual["text"] == "Forklifts charge at dock three overnight." and manual["version"] == 2
    if layout == "langchain":
        assert (manual["team"], manual["year"], manual["metadata"]) == ("ops", 2025, {"team": "ops", "year": 2025})
    else:
        assert manual["metadata"]["ref_doc_id"] == "manual" and manual["metadata"]["team"] == "ops"
        assert json.loads(manual["metadata"]["_node_content"])["metadata"] == {"team": "ops", "year": 2025}
    sink = sink_of(target, "--payload_layout", layout)
    assert [(h["doc_id"], h["metadata"]) for h in search("forklifts", sink, top_k=5, metadata={"year": 2025})] == [
        ("manual", {"team": "ops", "year": 2025})]
    replay = sync(tmp_path, "replay", FIRST + SECOND, *target.args, "--payload_layout", layout)
    assert replay.vectors_upserted == 0 and replay.events_in_sync == 4
    switched = sync(tmp_path, "native", FIRST + SECOND, *target.args)
    assert switched.chunks_embedded == 0 and switched.vectors_upserted == 3
    assert all("team" not in d and "_node_content" not in d["metadata"] for d in target.collection().find())


def test_a_layout_a_sink_cannot_write_is_a_start_up_error_naming_what_it_can():
    from pipeline.options import parse_args

    with pytest.raises(ValueError, match=r"--payload_layout langchain is not available for the pgvector sink "
                                         r"\(it writes: native, llamaindex\)"):
        parse_args(["--sink", "pgvector", "--pg_dsn", "postgresql://x@127.0.0.1/db", "--payload_layout", "langchain"])
    config, _ = parse_args(["--sink", "qdrant", "--sink", "mongodb", "--mongo_uri", "mongodb://127.0.0.1",
                            "--payload_layout", "llamaindex"])
    assert [s.payload_layout for s in config.sinks] == ["llamaindex", "llamaindex"]
