"""Redis Streams source against a real redis-server: entries are XACKed only once applied (or superseded,
or dead-lettered), a consumer's own unfinished entries and a dead consumer's pending entries are read again,
and the store ends exactly in sync."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis

from pipeline.main import StartupError, run
from tests.conftest import read_dead_letters, read_points


def stream_args(redis_url: str, stream: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["--source", "redis", "--redis_url", redis_url, "--redis_stream", stream, "--redis_group", "sync",
            "--redis_consumer", "worker-1", "--qdrant_path", str(tmp_path / "store"),
            "--dead_letters", str(tmp_path / "dead.jsonl"), "--chunk_size", "16", "--chunk_overlap", "4", *extra]


def add(client: redis.Redis, stream: str, *events: object) -> None:
    for e in events:
        client.xadd(stream, {"data": e if isinstance(e, (bytes, str)) else json.dumps(e)})


def stored(tmp_path: Path) -> dict[str, set[tuple[int, str]]]:
    out: dict[str, set[tuple[int, str]]] = {}
    for p in read_points(tmp_path / "store").values():
        out.setdefault(p["doc_id"], set()).add((p["version"], p["text"]))
    return out


def test_entries_are_applied_then_acknowledged_and_a_second_run_reads_only_new_ones(tmp_path: Path, redis_url: str):
    client, stream = redis.Redis.from_url(redis_url), f"changes-{uuid.uuid4().hex[:6]}"
    add(client, stream,
        {"doc_id": "a", "op": "upsert", "version": 1, "text": "Alpha."},
        {"doc_id": "a", "op": "upsert", "version": 2, "text": "Alpha, second."},
        {"doc_id": "b", "op": "upsert", "version": 1, "text": "Bravo."},
        "not json")
    client.xadd(stream, {"other": "no data field"})
    first = run(stream_args(redis_url, stream, tmp_path))
    assert stored(tmp_path) == {"a": {(2, "Alpha, second.")}, "b": {(1, "Bravo.")}}
    assert (first.records_read, first.events_applied, first.events_superseded, first.events_dead_lettered) == (5, 2, 1, 2)
    assert first.accounted and first.records_acknowledged == 5
    assert client.xpending(stream, "sync")["pending"] == 0
    assert sorted(d["stage"] for d in read_dead_letters(tmp_path / "dead.jsonl")) == ["parse", "read"]

    add(client, stream, {"doc_id": "b", "op": "delete", "version": 2}, {"doc_id": "a", "op": "upsert", "version": 1,
                                                                       "text": "late"})
    second = run(stream_args(redis_url, stream, tmp_path))
    assert second.records_read == 2 and second.events_superseded == 1
    assert stored(tmp_path) == {"a": {(2, "Alpha, second.")}}
    assert client.xpending(stream, "sync")["pending"] == 0


def test_pending_entries_of_a_dead_consumer_and_of_an_unfinished_run_are_read_again(tmp_path: Path, redis_url: str):
    client, stream = redis.Redis.from_url(redis_url), f"changes-{uuid.uuid4().hex[:6]}"
    client.xgroup_create(stream, "sync", id="0", mkstream=True)
    add(client, stream, {"doc_id": "dead", "op": "upsert", "version": 1, "text": "Read by a consumer that died."})
    client.xreadgroup("sync", "crashed-worker", {stream: ">"})  # delivered, never acknowledged
    add(client, stream, {"doc_id": "mine", "op": "upsert", "version": 1, "text": "Read by me, run cut short."})
    client.xreadgroup("sync", "worker-1", {stream: ">"})  # this consumer's own earlier delivery
    add(client, stream, {"doc_id": "new", "op": "upsert", "version": 1, "text": "Never delivered."})

    summary = run(stream_args(redis_url, stream, tmp_path, "--redis_claim_idle_ms", "0"))
    assert set(stored(tmp_path)) == {"dead", "mine", "new"}
    assert summary.records_read == 3 and summary.records_acknowledged == 3
    assert client.xpending(stream, "sync")["pending"] == 0


def test_max_records_bounds_a_run_and_the_rest_waits_for_the_next(tmp_path: Path, redis_url: str):
    client, stream = redis.Redis.from_url(redis_url), f"changes-{uuid.uuid4().hex[:6]}"
    add(client, stream, *[{"doc_id": f"d{i}", "op": "upsert", "version": 1, "text": f"Doc {i}."} for i in range(5)])
    first = run(stream_args(redis_url, stream, tmp_path, "--max_records", "3"))
    assert first.records_read == 3 and len(stored(tmp_path)) == 3
    second = run(stream_args(redis_url, stream, tmp_path))
    assert second.records_read == 2 and len(stored(tmp_path)) == 5


def test_an_unreachable_redis_fails_at_start(tmp_path: Path):
    with pytest.raises(StartupError, match="Redis stream"):
        run(stream_args("redis://127.0.0.1:1/0", "s", tmp_path))


def test_pending_entries_trimmed_from_the_stream_are_dead_lettered_not_dropped(tmp_path: Path, redis_url: str):
    client, stream = redis.Redis.from_url(redis_url), f"changes-{uuid.uuid4().hex[:6]}"
    client.xgroup_create(stream, "sync", id="0", mkstream=True)
    add(client, stream, {"doc_id": "gone-own", "op": "upsert", "version": 1, "text": "Mine, then deleted."})
    ((_, [(own_id, _)]),) = client.xreadgroup("sync", "worker-1", {stream: ">"})
    add(client, stream, {"doc_id": "gone-dead", "op": "upsert", "version": 1, "text": "A dead consumer's."})
    ((_, [(dead_id, _)]),) = client.xreadgroup("sync", "crashed-worker", {stream: ">"})
    add(client, stream, {"doc_id": "kept", "op": "upsert", "version": 1, "text": "Still in the stream."})
    client.xdel(stream, own_id, dead_id)

    summary = run(stream_args(redis_url, stream, tmp_path, "--redis_claim_idle_ms", "0"))
    assert set(stored(tmp_path)) == {"kept"}
    assert (summary.records_read, summary.events_applied, summary.events_dead_lettered) == (3, 1, 2)
    assert summary.accounted and summary.records_acknowledged == 3
    letters = read_dead_letters(tmp_path / "dead.jsonl")
    assert sorted(d["source"]["position"]["id"] for d in letters) == sorted([own_id.decode(), dead_id.decode()])
    assert {(d["stage"], d["error_type"]) for d in letters} == {("read", "EntryTrimmed")}
    assert client.xpending(stream, "sync")["pending"] == 0
