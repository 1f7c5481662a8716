"""Exact sync in true streaming: the shipped graph on the DirectRunner with `--streaming`, a TestStream in
place of the Kafka reader (records really produced to the broker; see tests/streaming_harness.py).

The schedule mixes what a streaming runner sees: an older version in a later window, two windows closing on
one watermark jump, records behind the watermark (late), duplicates across windows, a delete and an upsert
of the same version in different windows, and a malformed record. After the stream ends every sink holds
each document's highest (version, delete-over-upsert) event, every record is applied, superseded or
dead-lettered, and the offsets are committed to the end of what finished."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest

from tests.conftest import create_topic, read_dead_letters
from tests.sink_targets import MongoTarget, PgVectorTarget, PineconeTarget, QdrantTarget, State
from tests.streaming_harness import (Record, Watermark, committed, delete, end_offsets, read_topic,
                                     run_streaming, sink_flags, upsert)
from transforms.chunking import TokenChunker

LONG = " ".join(f"Section {i}: forklifts yield to pedestrians in aisle {i}." for i in range(6))


def model_state(steps: list[Any], chunker: TokenChunker) -> State:
    """The contract: per document the highest (version, delete over upsert) event; its chunks, or nothing."""
    best: dict[tuple[Optional[str], str], dict] = {}
    for step in steps:
        value = step.value if isinstance(step, Record) and isinstance(step.value, dict) else None
        if value is None or not isinstance(value.get("version"), int):
            continue
        key = (value.get("namespace"), value["doc_id"])
        rank = (value["version"], value["op"] == "delete")
        if key not in best or rank > (best[key]["version"], best[key]["op"] == "delete"):
            best[key] = value
    state: State = {}
    for (namespace, doc_id), value in best.items():
        if value["op"] == "upsert":
            for c in chunker.chunks(doc_id, value["text"], namespace):
                state[(doc_id, namespace, c.chunk_index)] = (value["version"], c.text)
    return state


SCHEDULE: list[Any] = [
    upsert("A", 1, "Alpha first draft about pallets.", 1),
    upsert("B", 1, "Bravo: the only version of bravo.", 2, partition=1),
    delete("F", 2, 3, partition=1),
    Watermark(10),
    upsert("A", 3, "Alpha third: " + LONG, 12),
    upsert("C", 2, "Charlie at version two.", 13, partition=1),
    Record("bad", b"{not json", 14),
    Watermark(20),
    delete("C", 2, 22, partition=1),  # same version as the upsert, in a later window: the delete wins
    upsert("D", 2, "Delta two is the newest delta.", 25),  # window [20,30)
    upsert("F", 2, "Foxtrot upsert at the deleted version.", 27, partition=1),  # loses to the earlier delete
    upsert("B", 1, "Bravo: the only version of bravo.", 33, partition=1),  # a duplicate, another window
    upsert("D", 1, "Delta one is older, in a later window.", 35),  # window [30,40): must not win
    Watermark(45),  # closes [20,30) and [30,40) at once
    upsert("A", 4, "Alpha fourth arrives late, behind the watermark.", 5),  # late
    upsert("E", 1, "Echo only ever arrives late.", 8, partition=1),  # late
    upsert("A", 2, "Alpha second, late and older.", 6),  # late and superseded
    Record("bad2", b"[1, 2]", 9, partition=1),  # late and malformed: dead-lettered, not dropped
    Watermark(60),
]


@pytest.fixture
def qdrant(tmp_path: Path) -> QdrantTarget:
    return QdrantTarget(tmp_path)


def test_streaming_qdrant_ends_exact_commits_offsets_and_dead_letters(
        tmp_path: Path, kafka_bootstrap: str, small_chunker: TokenChunker, qdrant: QdrantTarget):
    topic, dead_topic = create_topic(kafka_bootstrap, partitions=2), create_topic(kafka_bootstrap, partitions=1)
    run_streaming(kafka_bootstrap, topic, SCHEDULE, qdrant.args, tmp_path, "--dead_letter_topic", dead_topic)
    assert qdrant.state() == model_state(SCHEDULE, small_chunker)
    assert committed(kafka_bootstrap, topic, 2) == end_offsets(kafka_bootstrap, topic, 2)
    letters = read_dead_letters(tmp_path / "dead.jsonl")
    assert sorted((d["stage"], d["source"]["position"]["partition"], d["source"]["position"]["offset"])
                  for d in letters) == [("parse", 0, 2), ("parse", 1, 7)]
    assert sorted(m.key() for m in read_topic(kafka_bootstrap, dead_topic, 2)) == [b"bad", b"bad2"]


def test_streaming_every_sink_in_one_pipeline_ends_exact(
        tmp_path: Path, kafka_bootstrap: str, small_chunker: TokenChunker, pg_uri: str,
        mongo_server: tuple[str, str, str]):
    """Qdrant (Edge), pgvector, Pinecone (no conditional write: the keyed order is all there is) and MongoDB
    in one streaming pipeline: each ends with the model's state; settling waits for every sink."""
    targets = [QdrantTarget(tmp_path), PgVectorTarget(pg_uri), PineconeTarget(), MongoTarget(mongo_server)]
    try:
        topic = create_topic(kafka_bootstrap, partitions=2)
        run_streaming(kafka_bootstrap, topic, SCHEDULE, [a for t in targets for a in sink_flags(t)], tmp_path)
        expected = model_state(SCHEDULE, small_chunker)
        for target in targets:
            assert target.state() == expected, target.name
        assert committed(kafka_bootstrap, topic, 2) == end_offsets(kafka_bootstrap, topic, 2)
    finally:
        for target in targets:
            target.close()


def test_offsets_are_never_committed_past_a_record_whose_dead_letter_is_not_durable(
        tmp_path: Path, kafka_bootstrap: str, qdrant: QdrantTarget):
    """The dead-letter file cannot be written (its folder is a file): the malformed record at offset 2 is
    never finished, the run fails, and no commit passes it, although later records were applied."""
    topic = create_topic(kafka_bootstrap, partitions=1)
    (tmp_path / "not-a-folder").write_text("")
    steps = [upsert("A", 1, "Alpha one.", 1), upsert("B", 1, "Bravo one.", 2), Record("bad", b"{oops", 3),
             Watermark(10), upsert("C", 1, "Charlie one.", 12), upsert("D", 1, "Delta one.", 13), Watermark(30)]
    with pytest.raises(Exception, match="WriteDeadLetters"):
        run_streaming(kafka_bootstrap, topic, steps, qdrant.args, tmp_path,
                      "--dead_letters", str(tmp_path / "not-a-folder" / "dead.jsonl"))
    (offset,) = committed(kafka_bootstrap, topic, 1)
    assert offset <= 2, f"committed {offset}: past the record whose dead letter was never written"
    assert {doc for doc, _, _ in qdrant.state()} >= {"A", "B"}
