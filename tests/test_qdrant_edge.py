"""The embedded store on Qdrant Edge: version-conditional writes (also on qdrant-client's local mode), one
writer per folder, a write killed mid-batch, and the way on from a folder written by qdrant-client's local
mode (the conversion command)."""
from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from connectors.qdrant import STATE_SUFFIX, QdrantConfig
from pipeline.main import StartupError, run
from tests.conftest import REPO, read_points, write_changelog
from transforms.ids import chunk_point_id, document_point_id
from transforms.types import ChangeEvent, ChunkRecord, DocumentWrite

SAMPLE = REPO / "pipeline" / "sample_data" / "changelog.jsonl"
SMALL = ["--chunk_size", "16", "--chunk_overlap", "4"]


def document(version: int, texts: list[str], doc_id: str = "d") -> DocumentWrite:
    event = ChangeEvent(doc_id=doc_id, op="upsert", version=version, text=" ".join(texts))
    records = tuple(ChunkRecord(point_id=chunk_point_id(doc_id, i), doc_id=doc_id, namespace=None, chunk_index=i,
                                chunk_count=len(texts), version=version, text=t, content_hash=f"h{version}-{i}",
                                model="m", metadata={}, vector=[1.0, float(i + version), 2.0])
                    for i, t in enumerate(texts))
    return DocumentWrite(event, records, ())


@pytest.mark.parametrize("embedded", ["edge", "client"])
def test_an_older_version_written_after_a_newer_one_leaves_the_newer_in_place(tmp_path: Path, embedded: str):
    """As a second pipeline writing late would: the store itself refuses to replace the newer chunk, and the
    extra chunk IDs the older version inserted beside it are swept."""
    store = QdrantConfig(path=str(tmp_path / "store"), embedded=embedded).create_store()
    try:
        store.ensure_ready(3)
        store.write_documents([document(2, ["newer text"])])
        store.write_documents([document(1, ["older text", "older second", "older third"])])
        points = {r.payload["chunk_index"]: (r.payload["version"], r.payload["text"]) for r in store.scroll_points()}
        assert points == {0: (2, "newer text")}
        (state,) = store.backend.retrieve("documents" + STATE_SUFFIX, [document_point_id("d")])
        assert (state.payload["version"], state.payload["op"]) == (2, "upsert")
        stored = store.read_documents([("", "d")])[("", "d")]
        assert stored.version == 2 and [c.version for c in stored.chunks] == [2]

        store.write_documents([document(2, ["same version, new model"])])  # a same-version rewrite applies
        assert [r.payload["text"] for r in store.scroll_points()] == ["same version, new model"]
    finally:
        store.close()


def test_versions_beyond_float_precision_keep_their_own_chunks(tmp_path: Path):
    """A folder's versions are mtimes in ns (> 2**53): range bounds are doubles, rounded the safe way."""
    store = QdrantConfig(path=str(tmp_path / "store")).create_store()
    try:
        store.ensure_ready(3)
        big = 1796101629501579144  # float(big) rounds up
        store.write_documents([document(big, ["one"], "a"), document(big, ["two"], "b")])
        assert store.count() == 2
    finally:
        store.close()


def test_a_second_process_gets_one_line_naming_the_folder_while_one_writes(tmp_path: Path):
    folder = tmp_path / "store"
    store = QdrantConfig(path=str(folder)).create_store()
    try:
        store.ensure_ready(384)
        for command in ([sys.executable, "-m", "pipeline.search", "forklifts", "--qdrant_path", str(folder)],
                        [sys.executable, "-m", "pipeline", "--input", str(SAMPLE), "--qdrant_path", str(folder)]):
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
            assert done.returncode == 2, done.stderr
            (line,) = done.stderr.strip().splitlines()
            assert str(folder) in line and "one writer per folder" in line and "--qdrant_url" in line
    finally:
        store.close()
    assert QdrantConfig(path=str(folder)).create_store().count() == 0  # closed, the folder opens again


def test_search_reads_the_edge_store_the_pipeline_wrote(tmp_path: Path):
    from pipeline.search import search

    run(["--input", str(SAMPLE), "--qdrant_path", str(tmp_path / "store"),
         "--dead_letters", str(tmp_path / "dead.jsonl")])
    hits = search("how do I set up the VPN", QdrantConfig(path=str(tmp_path / "store")), top_k=2)
    assert len(hits) == 2 and hits[0]["doc_id"] == "kb/vpn-setup.md" and hits[0]["score"] >= hits[1]["score"]


def test_remote_runners_refuse_the_embedded_store_with_the_alternative_named(tmp_path: Path):
    with pytest.raises(StartupError, match=r"FlinkRunner's workers cannot share it: use --qdrant_url \(a Qdrant server\)"):
        run(["--input", str(SAMPLE), "--qdrant_path", str(tmp_path / "store"), "--runner", "FlinkRunner"])


KILL_AT_SECOND_CHUNK_WRITE = """
import os, signal, sys
from connectors.qdrant.edge import EdgeBackend
from pipeline.main import main

original, calls = EdgeBackend.upsert, []
def upsert(self, name, points, condition=None):
    original(self, name, points, condition)
    if name == "documents":
        calls.append(name)
        if len(calls) == 2:  # chunks of the second batch stored, its stale deletes and versions not
            os.kill(os.getpid(), signal.SIGKILL)
EdgeBackend.upsert = upsert
sys.exit(main(sys.argv[1:]))
"""


def test_an_edge_write_killed_mid_batch_is_exact_after_a_rerun(tmp_path: Path):
    events = [{"doc_id": f"doc-{i}", "op": "upsert", "version": 1,
               "text": f"Document {i} describes how crate {i} is labelled, weighed and loaded at dock {i % 3}."}
              for i in range(8)]
    log = write_changelog(tmp_path / "log.jsonl", events)
    args = ["--input", str(log), "--dead_letters", str(tmp_path / "dead.jsonl"), "--write_batch_size", "4", *SMALL]
    killed = subprocess.run([sys.executable, "-c", KILL_AT_SECOND_CHUNK_WRITE, *args, "--qdrant_path",
                             str(tmp_path / "store")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert read_points(tmp_path / "store")  # something landed before the kill

    rerun = run([*args, "--qdrant_path", str(tmp_path / "store")])
    clean = run([*args, "--qdrant_path", str(tmp_path / "clean")])
    after, expected = read_points(tmp_path / "store"), read_points(tmp_path / "clean")
    assert rerun.accounted and clean.accounted and set(after) == set(expected)
    for point_id, p in expected.items():
        assert {k: v for k, v in after[point_id].items() if k != "vector"} == {
            k: v for k, v in p.items() if k != "vector"}
        assert np.allclose(after[point_id]["vector"], p["vector"], atol=1e-5)


def old_local_mode_store(tmp_path: Path) -> tuple[Path, Path]:
    """A store as qdrant-client's local mode wrote it before scheme 2: the pipeline's points under other IDs,
    and no scheme marker."""
    from qdrant_client import models

    from transforms.ids import SCHEME_MARKER_UUID

    folder, log = tmp_path / "old", write_changelog(tmp_path / "log.jsonl", [
        {"doc_id": "a", "op": "upsert", "version": 3, "text": "Alpha pallets are stacked three high. " * 6},
        {"doc_id": "b", "namespace": "tenant", "op": "upsert", "version": 1, "text": "Bravo forklift rules."},
        {"doc_id": "c", "op": "upsert", "version": 1, "text": "Charlie, soon deleted."},
        {"doc_id": "c", "op": "delete", "version": 2}])
    run(["--input", str(log), "--qdrant_path", str(folder), "--qdrant_embedded", "client", *SMALL])
    store = QdrantConfig(path=str(folder), embedded="client").create_store()
    try:
        for name in ("documents", "documents" + STATE_SUFFIX):
            records = list(store.backend.scroll(name, 1000, None, name == "documents")[0])
            store.backend.delete(name, [str(r.id) for r in records])
            store.backend.upsert(name, [models.PointStruct(id=str(uuid.uuid4()), vector=r.vector or {},
                                                           payload=r.payload) for r in records
                                        if str(r.id) != SCHEME_MARKER_UUID])
    finally:
        store.close()
    return folder, log


def test_a_folder_written_by_local_mode_is_refused_with_the_conversion_command(tmp_path: Path, capsys):
    from pipeline.main import main

    folder, log = old_local_mode_store(tmp_path)
    assert main(["--input", str(log), "--qdrant_path", str(folder)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{folder} was written by qdrant-client's local mode" in line
    assert f"python -m pipeline.convert_store {folder} NEW_FOLDER" in line and "--qdrant_embedded client" in line


def test_conversion_keeps_every_point_re_keyed_and_a_run_after_it_is_in_sync(tmp_path: Path):
    from pipeline.convert_store import main as convert_main

    folder, log = old_local_mode_store(tmp_path)
    before = read_points(folder, embedded="client")
    assert convert_main([str(folder), str(tmp_path / "new")]) == 0
    after = read_points(tmp_path / "new")
    assert len(after) == len(before) == 1 + sum(1 for p in before.values() if p["doc_id"] == "a") > 2
    by_chunk = {(p["doc_id"], p["chunk_index"]): p for p in before.values()}
    for point_id, p in after.items():
        assert point_id == chunk_point_id(p["doc_id"], p["chunk_index"], p["namespace"])  # re-keyed, scheme 2
        old = by_chunk[(p["doc_id"], p["chunk_index"])]
        assert {k: v for k, v in p.items() if k != "vector"} == {k: v for k, v in old.items() if k != "vector"}
        assert np.allclose(p["vector"], old["vector"], atol=1e-6)

    again = run(["--input", str(log), "--qdrant_path", str(tmp_path / "new"), *SMALL])
    assert (again.chunks_embedded, again.vectors_upserted, again.vectors_deleted) == (0, 0, 0)
    assert again.accounted and again.events_superseded + again.events_in_sync == 4
    assert read_points(tmp_path / "new") == after
