"""`python -m bench.local_store_writes [--points N]`: store writes per second of the two embedded engines side
by side (Qdrant Edge, the default, and qdrant-client's local mode), each with both `local_durability`
settings. Two measures per engine on a fresh folder: raw upserts of N chunk-sized points (384-d vector,
800-character text) in batches of 64, and the sink's own writes (`QdrantStore.write_documents`: widened
bound, conditional chunk upsert, stale deletes, recorded versions) of N/3 three-chunk documents, 64 chunks a
batch, written once and then again as version 2."""
from __future__ import annotations

import argparse
import tempfile
import time
import uuid

import numpy as np

from connectors.qdrant import QdrantConfig
from transforms.ids import chunk_point_id
from transforms.types import ChangeEvent, ChunkRecord, DocumentWrite

ENGINES = (("edge", "fast"), ("edge", "full"), ("client", "fast"), ("client", "full"))


def raw_upserts_per_second(embedded: str, durability: str, points: int) -> float:
    from qdrant_client import models

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        store = QdrantConfig(path=folder, embedded=embedded, local_durability=durability).create_store()
        try:
            store.ensure_ready(384)
            batch = [models.PointStruct(id=str(uuid.UUID(int=i)), vector=rng.random(384).tolist(),
                                        payload={"text": "x" * 800, "doc_id": str(i // 3), "version": 1})
                     for i in range(points)]
            started = time.perf_counter()
            for start in range(0, points, 64):
                store.backend.upsert("documents", batch[start:start + 64])
                store.backend.make_durable()
            return points / (time.perf_counter() - started)
        finally:
            store.close()


def sink_writes_per_second(embedded: str, durability: str, points: int) -> float:
    rng = np.random.default_rng(1)
    documents = points // 3

    def writes(version: int) -> list[DocumentWrite]:
        out = []
        for d in range(documents):
            doc_id = f"doc-{d}"
            records = tuple(ChunkRecord(
                point_id=chunk_point_id(doc_id, i), doc_id=doc_id, namespace=None, chunk_index=i, chunk_count=3,
                version=version, text="x" * 800, content_hash=f"{version}-{i}", model="m", metadata={},
                vector=rng.random(384).tolist()) for i in range(3))
            out.append(DocumentWrite(ChangeEvent(doc_id=doc_id, op="upsert", version=version, text="x"), records, ()))
        return out

    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        store = QdrantConfig(path=folder, embedded=embedded, local_durability=durability).create_store()
        try:
            store.ensure_ready(384)
            rounds = [writes(1), writes(2)]
            started = time.perf_counter()
            for batch in rounds:
                for start in range(0, len(batch), 64 // 3):
                    store.write_documents(batch[start:start + 64 // 3])
            return 2 * 3 * documents / (time.perf_counter() - started)
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=2161)
    args = parser.parse_args()
    print(f"{'engine':<8} {'durability':<10} {'raw upserts/s':>14} {'sink chunk writes/s':>20}  ({args.points} points)")
    for embedded, durability in ENGINES:
        raw = raw_upserts_per_second(embedded, durability, args.points)
        sink = sink_writes_per_second(embedded, durability, args.points)
        print(f"{embedded:<8} {durability:<10} {raw:>14,.0f} {sink:>20,.0f}", flush=True)


if __name__ == "__main__":
    main()
