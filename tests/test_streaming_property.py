"""The sync contract in true streaming, as a property: for any schedule of change events (any arrival
order, duplicates, a delete and an upsert of the same version, records behind the watermark) and watermark
advances, the shipped streaming graph (TestStream in place of the Kafka reader, see
tests/streaming_harness.py) leaves every sink with exactly the model's state, and commits every partition
to its end offset. Sinks: the embedded Qdrant store, pgvector, Pinecone (fake index, no conditional write)
and MongoDB (mongoeco), all four in one pipeline."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import create_topic
from tests.sink_targets import MongoTarget, PgVectorTarget, PineconeTarget, QdrantTarget, State
from tests.streaming_harness import Record, Watermark, committed_to_end, run_streaming, sink_flags
from tests.test_sync_property import PROPERTY_SETTINGS, WORDS, event_for, examples
from transforms.chunking import TokenChunker

DOC_IDS = ("alpha", "beta", "gamma")


@st.composite
def schedules(draw: Callable) -> list[Any]:
    """Events of up to three documents (unique versions per upsert; a delete may share an upsert's version;
    a few exact duplicates), shuffled, each at a random event time on one of two partitions, with watermark
    advances between them: events after an advance past their time are late."""
    events: list[dict] = []
    for doc_id in draw(st.lists(st.sampled_from(DOC_IDS), min_size=1, max_size=3, unique=True)):
        namespace = draw(st.sampled_from([None, "tenant-1"]))
        for version in draw(st.lists(st.integers(1, 9), min_size=1, max_size=3, unique=True)):
            kind = draw(st.sampled_from(["upsert", "delete", "both"]))
            if kind in ("upsert", "both"):
                events.append(event_for(doc_id, version, draw(st.lists(st.sampled_from(WORDS), min_size=1,
                                                                         max_size=40)), namespace))
            if kind in ("delete", "both"):
                events.append(event_for(doc_id, version, None, namespace))
    events += draw(st.lists(st.sampled_from(events), max_size=2))
    steps: list[Any] = []
    watermark = 0
    for event in draw(st.permutations(events)):
        if draw(st.booleans()):
            watermark += draw(st.integers(1, 25))
            steps.append(Watermark(watermark))
        steps.append(Record(event["doc_id"], event, draw(st.integers(0, 60)), draw(st.integers(0, 1))))
    return steps


def model(steps: list[Any], chunker: TokenChunker) -> State:
    """Per document the event of highest (version, delete over upsert, raw payload); its chunks or nothing."""
    best: dict[tuple[Optional[str], str], tuple[tuple, dict]] = {}
    for step in steps:
        if isinstance(step, Record):
            e = step.value
            rank = (e["version"], e["op"] == "delete", json.dumps(e).encode())
            key = (e.get("namespace"), e["doc_id"])
            if key not in best or rank > best[key][0]:
                best[key] = (rank, e)
    state: State = {}
    for (namespace, doc_id), (_, e) in best.items():
        if e["op"] == "upsert":
            for c in chunker.chunks(doc_id, e["text"], namespace):
                state[(doc_id, namespace, c.chunk_index)] = (e["version"], c.text)
    return state


@pytest.mark.slow
@settings(max_examples=examples(4), **PROPERTY_SETTINGS)
@given(steps=schedules())
def test_streaming_sinks_match_the_model_for_any_schedule(
        steps: list[Any], tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, pg_uri: str,
        mongo_server: tuple[str, str, str], small_chunker: TokenChunker):
    work: Path = tmp_path_factory.mktemp("stream")
    targets = [QdrantTarget(work), PgVectorTarget(pg_uri), PineconeTarget(), MongoTarget(mongo_server)]
    try:
        topic = create_topic(kafka_bootstrap, partitions=2)
        run_streaming(kafka_bootstrap, topic, steps, [a for t in targets for a in sink_flags(t)], work)
        expected = model(steps, small_chunker)
        for target in targets:
            assert target.state() == expected, target.name
        assert committed_to_end(kafka_bootstrap, topic, 2)
    finally:
        for target in targets:
            target.close()
