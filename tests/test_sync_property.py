"""The sync contract as a property: whatever the events, their order and duplication, the store ends with
exactly the chunks of each document's highest version (nothing after a delete), a replay changes nothing,
and a later change-log run in a fresh pipeline removes stale chunks and never resurrects old versions."""
from __future__ import annotations

import json
import os
from pathlib import Path
import uuid
from typing import Any, Callable, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.main import run
from tests.conftest import write_changelog
from tests.sink_targets import MongoTarget, PgVectorTarget, PineconeTarget, QdrantTarget, State
from transforms.chunking import TokenChunker

WORDS = ("pallet forklift invoice customs freight dock aisle shelf barcode scanner driver route depot "
         "container battery refund warranty policy badge laptop").split()
DOC_IDS = ("alpha", "beta", "gamma", "delta")
CHUNKING = ("--chunk_size", "16", "--chunk_overlap", "4")


def event_for(doc_id: str, version: int, words: list[str] | None, namespace: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"doc_id": doc_id, "version": version, "op": "delete" if words is None else "upsert"}
    if words is not None:
        event.update(text=" ".join(words), metadata={"v": version})
    if namespace:
        event["namespace"] = namespace
    return event


@st.composite
def histories(draw: Callable) -> tuple[list[dict], list[dict]]:
    """Two change-logs over the same documents. The second brings newer versions (which grow, shrink or
    delete documents) and late older ones; versions are unique per document; a few duplicates; any order."""
    first: list[dict] = []
    second: list[dict] = []
    texts = st.one_of(st.none(), st.lists(st.sampled_from(WORDS), min_size=1, max_size=45))
    for doc_id in draw(st.lists(st.sampled_from(DOC_IDS), min_size=1, max_size=4, unique=True)):
        namespace = draw(st.sampled_from([None, None, "tenant-1"]))
        early = draw(st.lists(st.integers(10, 30), min_size=1, max_size=4, unique=True))
        newer = draw(st.lists(st.integers(31, 60), max_size=2, unique=True))
        late = draw(st.lists(st.integers(0, 9), max_size=1))
        first += [event_for(doc_id, v, draw(texts), namespace) for v in early]
        second += [event_for(doc_id, v, draw(texts), namespace) for v in newer + late]
    duplicates = draw(st.lists(st.sampled_from(first), max_size=3))
    return draw(st.permutations(first + duplicates)), draw(st.permutations(second))


def expected_store(events: list[dict], chunker: TokenChunker) -> State:
    latest: dict[tuple, dict] = {}
    for e in events:
        key = (e.get("namespace"), e["doc_id"])
        if key not in latest or e["version"] > latest[key]["version"]:
            latest[key] = e
    expected = {}
    for (namespace, doc_id), e in latest.items():
        if e["op"] == "upsert":
            for c in chunker.chunks(doc_id, e["text"], namespace):
                expected[(doc_id, namespace, c.chunk_index)] = (e["version"], c.text)
    return expected


class FanOutTarget:
    """Several sinks in one pipeline: each must hold exactly the model's state."""

    def __init__(self, targets: list[Any]) -> None:
        self.targets = targets
        self.args = [a for t in targets for a in (t.args if t.args[:1] == ["--sink"] else ["--sink", "qdrant", *t.args])]

    def state(self) -> State:
        states = [t.state() for t in self.targets]
        for target, state in zip(self.targets[1:], states[1:]):
            assert state == states[0], f"{target.name} differs from {self.targets[0].name}"
        return states[0]

    def snapshot(self) -> Any:
        return [t.snapshot() for t in self.targets]

    def close(self) -> None:
        for t in self.targets:
            t.close()


def via_changelog(work: Path) -> Callable[[str, list], list[str]]:
    """Delivers events as a change-log file; returns the arguments that read it."""
    def deliver(name: str, events: list) -> list[str]:
        return ["--input", str(write_changelog(work / f"{name}.jsonl", events))]
    return deliver


def via_redis(redis_url: str) -> Callable[[str, list], list[str]]:
    """Delivers events into a fresh Redis stream (each run reads what was added since the last one)."""
    import redis

    client, stream = redis.Redis.from_url(redis_url), f"prop-{uuid.uuid4().hex[:8]}"

    def deliver(name: str, events: list) -> list[str]:
        for e in events:
            client.xadd(stream, {"data": json.dumps(e)})
        return ["--source", "redis", "--redis_url", redis_url, "--redis_stream", stream, "--redis_group", "g",
                "--redis_consumer", "c"]
    return deliver


def via_kafka(bootstrap: str) -> Callable[[str, list], list[str]]:
    """Produces events (keyed by doc_id) to a fresh 3-partition topic; each run reads to the end offsets."""
    from tests.conftest import create_topic, produce

    topic = create_topic(bootstrap)

    def deliver(name: str, events: list) -> list[str]:
        produce(bootstrap, topic, [(e["doc_id"], e) for e in events])
        return ["--source", "kafka", "--kafka_bootstrap", bootstrap, "--kafka_topic", topic, "--kafka_group", "g",
                "--kafka_stop_at_end"]
    return deliver


def check_sync_contract(target: Any, work: Path, chunker: TokenChunker, first: list, second: list,
                        deliver: Optional[Callable[[str, list], list[str]]] = None) -> None:
    deliver = deliver or via_changelog(work)
    common = [*target.args, "--dead_letters", str(work / "dead.jsonl"), *CHUNKING]
    one = run([*deliver("one", first), *common])
    assert target.state() == expected_store(first, chunker)
    assert one.accounted and one.records_read == len(first) and one.dead_letters == 0

    snapshot = target.snapshot()
    replay = run([*deliver("one", first), *common])
    assert target.snapshot() == snapshot, "replaying the same events changed the store"
    assert replay.chunks_embedded == 0 and replay.accounted

    two = run([*deliver("two", second), *common])
    assert target.state() == expected_store(first + second, chunker)
    assert two.accounted and two.records_read == len(second)


PROPERTY_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])


def examples(default: int) -> int:
    return int(os.environ.get("SYNC_PROPERTY_EXAMPLES", str(default)))


def checked(make_target: Callable[[Path], Any], work: Path, chunker: TokenChunker, logs: tuple[list, list],
            deliver: Optional[Callable[[str, list], list[str]]] = None) -> None:
    target = make_target(work)
    try:
        check_sync_contract(target, work, chunker, *logs, deliver=deliver)
    finally:
        target.close()


@pytest.mark.slow
@settings(max_examples=examples(12), **PROPERTY_SETTINGS)
@given(logs=histories())
def test_qdrant_matches_latest_versions_for_any_order_duplicates_and_restarts(
        tmp_path_factory: pytest.TempPathFactory, small_chunker: TokenChunker, logs: tuple[list, list]):
    checked(QdrantTarget, tmp_path_factory.mktemp("sync"), small_chunker, logs)


@pytest.mark.slow
@settings(max_examples=examples(10), **PROPERTY_SETTINGS)
@given(logs=histories())
def test_pgvector_matches_latest_versions_for_any_order_duplicates_and_restarts(
        tmp_path_factory: pytest.TempPathFactory, small_chunker: TokenChunker, pg_uri: str, logs: tuple[list, list]):
    checked(lambda _: PgVectorTarget(pg_uri), tmp_path_factory.mktemp("sync"), small_chunker, logs)


@pytest.mark.slow
@settings(max_examples=examples(8), **PROPERTY_SETTINGS)
@given(logs=histories())
def test_pinecone_matches_latest_versions_for_any_order_duplicates_and_restarts(
        tmp_path_factory: pytest.TempPathFactory, small_chunker: TokenChunker, logs: tuple[list, list]):
    checked(lambda _: PineconeTarget(), tmp_path_factory.mktemp("sync"), small_chunker, logs)


@pytest.mark.slow
@settings(max_examples=examples(10), **PROPERTY_SETTINGS)
@given(logs=histories())
def test_mongodb_matches_latest_versions_for_any_order_duplicates_and_restarts(
        tmp_path_factory: pytest.TempPathFactory, small_chunker: TokenChunker, mongo_server: tuple,
        logs: tuple[list, list]):
    checked(lambda _: MongoTarget(mongo_server), tmp_path_factory.mktemp("sync"), small_chunker, logs)


@pytest.mark.slow
@settings(max_examples=examples(6), **PROPERTY_SETTINGS)
@given(logs=histories())
def test_fan_out_keeps_every_sink_equal_to_the_latest_versions(
        tmp_path_factory: pytest.TempPathFactory, small_chunker: TokenChunker, pg_uri: str, mongo_server: tuple,
        logs: tuple[list, list]):
    checked(lambda work: FanOutTarget([QdrantTarget(work), PgVectorTarget(pg_uri), PineconeTarget(),
                                       MongoTarget(mongo_server)]),
            tmp_path_factory.mktemp("sync"), small_chunker, logs)


@pytest.mark.slow
@settings(max_examples=examples(5), **PROPERTY_SETTINGS)
@given(logs=histories())
def test_events_through_redis_streams_end_exactly_in_sync(
        tmp_path_factory: pytest.TempPathFactory, small_chunker: TokenChunker, redis_url: str,
        logs: tuple[list, list]):
    checked(QdrantTarget, tmp_path_factory.mktemp("sync"), small_chunker, logs, deliver=via_redis(redis_url))


@pytest.mark.slow
@settings(max_examples=examples(5), **PROPERTY_SETTINGS)
@given(logs=histories())
def test_events_through_kafka_end_exactly_in_sync(
        tmp_path_factory: pytest.TempPathFactory, small_chunker: TokenChunker, kafka_bootstrap: str,
        logs: tuple[list, list]):
    checked(QdrantTarget, tmp_path_factory.mktemp("sync"), small_chunker, logs, deliver=via_kafka(kafka_bootstrap))


def test_expected_store_model_keeps_only_the_highest_version(small_chunker: TokenChunker):
    events = [event_for("a", 2, ["pallet"], None), event_for("a", 5, None, None), event_for("a", 3, ["dock"], None),
              event_for("b", 1, ["refund", "policy"], "t")]
    expected = expected_store(events, small_chunker)
    assert list(expected) == [("b", "t", 0)] and expected[("b", "t", 0)][0] == 1
    assert json.dumps(events)  # the generated events are plain JSON
