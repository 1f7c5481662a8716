"""Chaos: a Kafka sync SIGKILLed at random points, several times, while new changes keep arriving, then run
to completion, leaves the store exactly in sync (every document's chunks are those of its latest version,
none after a delete) and the group's offsets at the end of every partition."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.main import run
from tests.conftest import REPO, create_topic, produce, read_points
from tests.test_kafka_source import committed, end_offsets, kafka_args
from transforms.chunking import TokenChunker

WORDS = "pallet aisle forklift battery dock shelf label scanner crate order invoice route".split()


def history(rng: random.Random, documents: int, start_version: int) -> list[tuple[str, object]]:
    """Upserts of random length and some deletes, shuffled (out of order per document)."""
    records: list[tuple[str, object]] = []
    for i in range(documents):
        doc = f"doc-{i}"
        versions = list(range(start_version, start_version + rng.randint(1, 3)))
        rng.shuffle(versions)
        for v in versions:
            if rng.random() < 0.15:
                records.append((doc, {"doc_id": doc, "op": "delete", "version": v}))
            else:
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60)))
                records.append((doc, {"doc_id": doc, "op": "upsert", "version": v, "text": f"{doc} v{v}: {text}"}))
    rng.shuffle(records)
    return records


def expected_store(records: list[tuple[str, object]], chunker: TokenChunker) -> dict[str, tuple[str, int, str]]:
    latest: dict[str, dict] = {}
    for _, value in records:
        current = latest.get(value["doc_id"])
        key = (value["version"], value["op"] == "delete")
        if current is None or key > (current["version"], current["op"] == "delete"):
            latest[value["doc_id"]] = value
    out = {}
    for doc, value in latest.items():
        if value["op"] == "upsert":
            for chunk in chunker.chunks(doc, value["text"]):
                out[chunk.point_id] = (doc, value["version"], chunk.text)
    return out


@pytest.mark.slow
def test_kafka_runs_killed_at_random_points_then_completed_leave_the_store_exact(
        tmp_path: Path, kafka_bootstrap: str, small_chunker: TokenChunker):
    rng = random.Random(20261201)
    topic = create_topic(kafka_bootstrap)
    produced: list[tuple[str, object]] = []
    for round_ in range(3):
        batch = history(rng, documents=25, start_version=1 + 10 * round_)
        produce(kafka_bootstrap, topic, batch)
        produced += batch
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *kafka_args(kafka_bootstrap, topic, tmp_path)],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(3.0, 14.0))  # start-up, reading, embedding or writing
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = run(kafka_args(kafka_bootstrap, topic, tmp_path))
    assert final.accounted
    stored = {pid: (p["doc_id"], p["version"], p["text"]) for pid, p in read_points(tmp_path / "store").items()}
    assert stored == expected_store(produced, small_chunker)
    assert committed(kafka_bootstrap, topic) == end_offsets(kafka_bootstrap, topic)
