"""`python -m bench.local_store_writes [--points N]`: seconds to upsert N chunk-sized points (384-d vector,
800-character text) into a fresh embedded Qdrant store in batches of 64, with each `local_durability`."""
from __future__ import annotations

import argparse
import tempfile
import time
import uuid

import numpy as np

from connectors.qdrant import QdrantConfig


def upsert_seconds(durability: str, points: int) -> float:
    from qdrant_client import models

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        store = QdrantConfig(path=folder, local_durability=durability).create_store()
        try:
            store.ensure_ready(384)
            batch = [models.PointStruct(id=str(uuid.UUID(int=i)), vector=rng.random(384).tolist(),
                                        payload={"text": "x" * 800, "doc_id": str(i // 3), "version": 1})
                     for i in range(points)]
            started = time.perf_counter()
            for start in range(0, points, 64):
                store.client.upsert("documents", points=batch[start:start + 64])
            return time.perf_counter() - started
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=2161)
    args = parser.parse_args()
    for durability in ("full", "fast"):
        print(f"local_durability={durability}: {upsert_seconds(durability, args.points):.2f} s "
              f"for {args.points} points")


if __name__ == "__main__":
    main()
