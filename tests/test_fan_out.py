"""Several sinks in one graph, and the `--config` file that lists them."""
from __future__ import annotations

from pathlib import Path

import pytest

from connectors.mongodb import MongoConfig
from connectors.pgvector import PgVectorConfig
from connectors.pinecone import PineconeConfig
from connectors.qdrant import QdrantConfig
from pipeline.main import StartupError, run
from pipeline.options import parse_args
from tests.conftest import read_dead_letters, write_changelog
from tests.sink_targets import PineconeTarget, QdrantTarget

EVENTS = [{"doc_id": "a", "op": "upsert", "version": 1, "text": "Alpha is the first letter."},
          {"doc_id": "b", "op": "upsert", "version": 1, "text": "Bravo follows it."}]


def test_a_failing_sink_dead_letters_for_itself_only_and_a_replay_heals_it(tmp_path: Path):
    qdrant, pinecone = QdrantTarget(tmp_path), PineconeTarget()
    args = ["--input", str(write_changelog(tmp_path / "log.jsonl", EVENTS)), "--sink", "qdrant", *qdrant.args,
            *pinecone.args, "--dead_letters", str(tmp_path / "dead.jsonl")]
    try:
        pinecone.prepare()
        pinecone.index.fail_next("/vectors/upsert", 400, times=3)  # the batch, then each half of it
        first = run([*args, "--write_batch_size", "1000"])
        assert {d for d, _, _ in qdrant.state()} == {"a", "b"} and pinecone.state() == {}
        letters = read_dead_letters(tmp_path / "dead.jsonl")
        assert sorted((d["doc_id"], d["stage"]) for d in letters) == [("a", "sink:pinecone"), ("b", "sink:pinecone")]
        assert (first.events_applied, first.events_dead_lettered, first.dead_letters) == (0, 2, 2)
        assert first.accounted and first.sinks["qdrant"].vectors_upserted == 2

        second = run(args)  # the same log again: Qdrant is in sync, Pinecone gets what it missed
        assert pinecone.state() == qdrant.state()
        assert second.sinks["qdrant"].vectors_upserted == 0 and second.sinks["pinecone"].vectors_upserted == 2
        assert second.chunks_embedded == 0, "vectors already in Qdrant are reused for Pinecone"
        assert (second.events_applied, second.events_dead_lettered) == (2, 0)
        assert "pinecone" in second.render() and "qdrant" in second.render()
    finally:
        pinecone.close()


def test_config_file_lists_sinks_and_flags_override_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PG_DSN", raising=False)
    config_file = tmp_path / "sync.yaml"
    config_file.write_text(
        "input: changes.jsonl\n"
        "batch_size: 32\n"
        "sinks:\n"
        "  - {type: qdrant, path: ./store, collection: from_file}\n"
        "  - {type: pgvector, dsn: 'postgresql://u@h/db', table: chunks, batch_size: 50}\n"
        "  - {type: pinecone, index_host: 'http://127.0.0.1:1', namespace: prod}\n"
        "  - {type: mongodb, name: atlas, uri: 'mongodb://h', database: rag}\n")
    config, _ = parse_args(["--config", str(config_file), "--batch_size", "8", "--collection", "from_flag"])
    qdrant, pg, pinecone, mongo = config.stores
    assert config.input == "changes.jsonl" and config.batch_size == 8
    assert isinstance(qdrant, QdrantConfig) and (qdrant.path, qdrant.collection) == ("./store", "from_flag")
    assert isinstance(pg, PgVectorConfig) and (pg.table, pg.batch_size) == ("chunks", 50)
    assert isinstance(pinecone, PineconeConfig) and pinecone.namespace == "prod"
    assert isinstance(mongo, MongoConfig) and (mongo.sink_name, mongo.database) == ("atlas", "rag")
    assert "postgresql" not in repr(config) and "mongodb://h" not in repr(config), "secrets must not show"

    only, _ = parse_args(["--config", str(config_file), "--sink", "pgvector"])  # --sink replaces the list
    assert [s.sink_name for s in only.stores] == ["pgvector"] and only.stores[0].table == "chunks"

    json_file = tmp_path / "sync.json"
    json_file.write_text('{"sinks": [{"type": "qdrant"}, {"type": "qdrant", "name": "second", "path": "./b"}]}')
    two, _ = parse_args(["--config", str(json_file)])
    assert [s.sink_name for s in two.stores] == ["qdrant", "second"]


def test_bad_config_fails_at_start_with_one_clear_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sinks:\n  - {type: qdrant}\n  - {type: qdrant}\n")
    with pytest.raises(StartupError, match="sink names must be unique"):
        run(["--config", str(bad)])
    bad.write_text("sinks:\n  - {type: weaviate}\n")
    with pytest.raises(StartupError, match="weaviate"):
        run(["--config", str(bad)])
    with pytest.raises(StartupError, match="needs --pinecone_index_host"):
        run(["--sink", "pinecone"])
