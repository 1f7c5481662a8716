"""`python -m pipeline.convert_store OLD_FOLDER NEW_FOLDER`: copy an embedded store written by qdrant-client's
local mode (the embedded store before Qdrant Edge) into a new Qdrant Edge store, every collection with its
points, vectors, payloads and sync state, so a streaming source that cannot be replayed loses nothing.

Points are re-keyed to ID scheme 2 from their payloads (a chunk's `namespace`, `doc_id` and `chunk_index`, a
sync-state point's `namespace` and `doc_id`), so a store written before scheme 2 converts too; the new store
records scheme 2. A chunk point without those payload fields keeps its ID. A document with chunks but no
sync-state point gets one (its highest chunk version, op `upsert`). NEW_FOLDER must not exist or be empty.
Exit status 2 with one line when a folder is not what is expected.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from connectors.base import StoreConfigError
from connectors.qdrant import STATE_SUFFIX
from connectors.qdrant.backends import ClientBackend, QdrantBackend, is_client_local_folder
from connectors.qdrant.edge import EdgeBackend
from transforms.ids import ID_SCHEME, SCHEME_MARKER_UUID, chunk_point_id, document_point_id

PAGE = 1000


def _pages(backend: QdrantBackend, name: str, with_vectors: bool) -> Any:
    offset = None
    while True:
        records, offset = backend.scroll(name, PAGE, offset, with_vectors)
        yield records
        if offset is None:
            return


def _chunk_id(record: Any) -> str:
    p = record.payload or {}
    if "doc_id" in p and "chunk_index" in p:
        return chunk_point_id(p["doc_id"], int(p["chunk_index"]), p.get("namespace") or None)
    return str(record.id)


def convert_collection(old: QdrantBackend, new: QdrantBackend, name: str) -> dict[str, int]:
    """Copies chunk collection `name` and its sync state; returns how many points each got."""
    from qdrant_client import models

    size, _ = old.vector_params(name)
    new.create(name, size)
    bounds: dict[tuple[str, str], tuple[int, int]] = {}  # (namespace, doc_id) -> (chunk bound, highest version)
    chunks = 0
    for records in _pages(old, name, with_vectors=True):
        new.upsert(name, [models.PointStruct(id=_chunk_id(r), vector=list(r.vector), payload=r.payload or {})
                          for r in records])
        chunks += len(records)
        for r in records:
            p = r.payload or {}
            if "doc_id" in p and "chunk_index" in p:
                key = (p.get("namespace") or "", p["doc_id"])
                bound, version = bounds.get(key, (0, -1))
                bounds[key] = (max(bound, int(p["chunk_index"]) + 1), max(version, int(p.get("version", -1))))
    state = name + STATE_SUFFIX
    new.create(state, None)
    states = 0
    if old.exists(state):
        for records in _pages(old, state, with_vectors=False):
            points = []
            for r in records:
                p = dict(r.payload or {})
                if str(r.id) == SCHEME_MARKER_UUID or "doc_id" not in p:
                    continue
                key = (p.get("namespace") or "", p["doc_id"])
                bound, _ = bounds.pop(key, (0, -1))
                p["chunk_bound"] = max(int(p.get("chunk_bound", 0)), bound)
                points.append(models.PointStruct(id=document_point_id(p["doc_id"], p.get("namespace") or None),
                                                 vector={}, payload=p))
            new.upsert(state, points)
            states += len(points)
    orphans = [models.PointStruct(id=document_point_id(doc_id, namespace or None), vector={}, payload={
        "doc_id": doc_id, "namespace": namespace or None, "chunk_bound": bound, "version": version, "op": "upsert"})
        for (namespace, doc_id), (bound, version) in bounds.items()]
    if orphans:
        new.upsert(state, orphans)
    new.upsert(state, [models.PointStruct(id=SCHEME_MARKER_UUID, vector={}, payload={"id_scheme": ID_SCHEME})])
    return {"chunks": chunks, "states": states + len(orphans)}


def convert(old_path: str, new_path: str, collections: Optional[Sequence[str]] = None) -> dict[str, dict[str, int]]:
    """Converts every chunk collection of the old store (or those named); `StoreConfigError` when OLD is not a
    qdrant-client local-mode folder or NEW is not empty."""
    if not is_client_local_folder(old_path):
        raise StoreConfigError(f"{old_path} is not a store written by qdrant-client's local mode "
                               "(no meta.json beside a collection/ folder)")
    if Path(new_path).exists() and any(Path(new_path).iterdir()):
        raise StoreConfigError(f"{new_path} is not empty: give a new folder for the converted store")
    names = collections or sorted(p.name for p in (Path(old_path) / "collection").iterdir()
                                  if p.is_dir() and not p.name.endswith(STATE_SUFFIX))
    old = ClientBackend(path=old_path, fast_commits=False)
    try:
        Path(new_path).mkdir(parents=True, exist_ok=True)
        new = EdgeBackend(new_path, flush_each_batch=True)
        try:
            report = {name: convert_collection(old, new, name) for name in names}
            for name, counts in report.items():
                if new.count(name) != old.count(name):
                    raise RuntimeError(f"collection {name!r}: {old.count(name)} points before, "
                                       f"{new.count(name)} after (two old points mapped to one new ID)")
            new.make_durable()
            return report
        finally:
            new.close()
    finally:
        old.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.convert_store", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old_folder", help="store written by qdrant-client's local mode (read, never changed)")
    parser.add_argument("new_folder", help="new Qdrant Edge store (created)")
    parser.add_argument("--collection", action="append", help="convert only this collection (repeatable)")
    args = parser.parse_args(argv)
    try:
        report = convert(args.old_folder, args.new_folder, args.collection)
    except StoreConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, counts in report.items():
        print(f"collection {name!r}: {counts['chunks']} chunk points and {counts['states']} sync states copied "
              f"into {args.new_folder}")
    print(f"run the pipeline with --qdrant_path {args.new_folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
