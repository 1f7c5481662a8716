"""Remote workers, simulated: Beam's portable runner (in-process job service) hands the work to an EXTERNAL
worker pool started from a second venv where the project is installed from its built wheel, inside a mount
namespace where this checkout and the main checkout's sources are hidden (tmpfs over them). The workers
then see what a Flink or Dataflow worker sees: the installed package and its dependencies, nothing of the
launcher's paths (model folder, sample data, ONNX export, folder listing)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import REPO, free_port, read_dead_letters, read_rows, stop_process_group, write_changelog
from tests.installed import build_dists, clean_env, install, venv_with_dependencies

pytestmark = pytest.mark.slow  # a wheel, a worker pool, and whole pipelines with the model loaded on workers

SOURCES = ("pipeline", "transforms", "connectors", "tests", "bench", "fuzz")
HIDDEN = sorted({root / d for root in (REPO, Path("/work/main")) for d in SOURCES})
"""Project sources a worker must not see: this checkout's, and those of the main checkout the editable install
maps. The virtual environment stays visible: its third-party packages stand for the worker image's."""

BIND_LOOPBACK = """
import sys, grpc
from apache_beam.runners.worker import worker_pool_main
_server = grpc.server
def server(*args, **kwargs):  # worker_pool_main binds [::]: keep it on 127.0.0.1
    made = _server(*args, **kwargs)
    add = made.add_insecure_port
    made.add_insecure_port = lambda address: add(address.replace("[::]", "127.0.0.1"))
    return made
grpc.server = server
worker_pool_main.main(sys.argv)
"""


def _unshare_works() -> str:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return "needs root and unshare(1) to hide the checkout from the workers in a mount namespace"
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return "" if done.returncode == 0 else f"unshare -m is not permitted here: {done.stderr.decode().strip()}"


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory: pytest.TempPathFactory, pg_uri: str) -> Iterator[str]:
    """`127.0.0.1:PORT` of an EXTERNAL worker pool running the wheel-installed project with the checkout hidden."""
    reason = _unshare_works()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("remote")
    _, wheel = build_dists(work)
    python = venv_with_dependencies(work / "worker-venv")
    install(python, wheel)
    port = free_port()
    mounts = " && ".join(f"{{ [ ! -d {d} ] || mount -t tmpfs none {d}; }}" for d in HIDDEN)
    script = (f"{mounts} && [ ! -e {REPO / 'pipeline' / '__init__.py'} ] || exit 97; "
              f"exec {python} -c '{BIND_LOOPBACK}' --service_port={port}")
    env = clean_env(PATH=f"{python.parent}:{os.environ['PATH']}", HOME=str(work / "home"), PG_DSN=pg_uri)
    log = (work / "pool.log").open("wb")
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=work, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the worker pool did not start: {(work / 'pool.log').read_text(errors='replace')}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process_group(proc)
        log.close()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def sync_remotely(pool: str, pg_uri: str, table: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The launcher, from this checkout, submitting to the worker pool."""
    env = clean_env(PYTHONPATH=str(REPO), PG_DSN=pg_uri)
    return subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "pipeline", "--runner=PortableRunner",
                           "--job_endpoint=embed", "--environment_type=EXTERNAL", f"--environment_config={pool}",
                           "--sink", "pgvector", "--pg_dsn", "env:PG_DSN", "--pg_table", table, *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def shuffled_changelog(path: Path) -> tuple[Path, dict[str, Any]]:
    """Updates, deletes, duplicates and bad lines, shuffled; returns the log and each document's final state
    (`None`: deleted)."""
    import random

    events: list[Any] = []
    final: dict[str, Any] = {}
    for i in range(8):
        doc = f"doc-{i}"
        events.append({"doc_id": doc, "op": "upsert", "version": 1, "text": f"First text of document {i}."})
        final[doc] = (1, f"First text of document {i}.")
        if i % 2 == 0:
            text = f"Second text of document {i}, about widgets and batteries."
            events += [{"doc_id": doc, "op": "upsert", "version": 2, "text": text}] * 2  # a duplicate
            final[doc] = (2, text)
        if i % 3 == 0:
            events.append({"doc_id": doc, "op": "delete", "version": 3})
            final[doc] = None
    events += ["not json at all", json.dumps({"doc_id": "bad", "version": 1})]
    random.Random(13).shuffle(events)
    return write_changelog(path, events), final


def assert_exact(rows: dict[str, tuple], final: dict[str, Any]) -> None:
    by_doc: dict[str, list[tuple]] = {}
    for doc_id, _ns, index, version, text in rows.values():
        by_doc.setdefault(doc_id, []).append((index, version, text))
    assert set(by_doc) == {d for d, state in final.items() if state is not None}
    for doc_id, chunks in by_doc.items():
        version, text = final[doc_id]
        assert sorted(i for i, _, _ in chunks) == list(range(len(chunks)))
        assert {v for _, v, _ in chunks} == {version}
        assert "".join(t for _, _, t in sorted(chunks)).replace(" ", "") == text.replace(" ", "")


def test_a_shuffled_changelog_lands_exactly_through_remote_workers(worker_pool: str, pg_uri: str, table: str,
                                                                  tmp_path: Path) -> None:
    log, final = shuffled_changelog(tmp_path / "changes.jsonl")
    dead = tmp_path / "dead.jsonl"
    done = sync_remotely(worker_pool, pg_uri, table, "--input", str(log), "--dead_letters", str(dead))
    assert done.returncode == 0, done.stderr[-4000:]
    assert_exact(read_rows(pg_uri, table), final)
    assert len(read_dead_letters(dead)) == 2
    again = sync_remotely(worker_pool, pg_uri, table, "--input", str(log), "--dead_letters", str(dead))
    assert again.returncode == 0, again.stderr[-4000:]
    assert_exact(read_rows(pg_uri, table), final)


def test_a_folder_input_is_listed_and_read_on_the_workers(worker_pool: str, pg_uri: str, table: str,
                                                          tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("Alpha document about batteries.")
    (folder / "sub" / "b.txt").write_text("Bravo document about widgets.")
    (folder / ".hidden").write_text("never read")
    done = sync_remotely(worker_pool, pg_uri, table, "--input", str(folder), "--dead_letters",
                         str(tmp_path / "dead.jsonl"))
    assert done.returncode == 0, done.stderr[-4000:]
    rows = read_rows(pg_uri, table)
    assert {(r[0], r[4]) for r in rows.values()} == {("a.md", "Alpha document about batteries."),
                                                     ("sub/b.txt", "Bravo document about widgets.")}
    assert {r[3] for r in rows.values() if r[0] == "a.md"} == {(folder / "a.md").stat().st_mtime_ns}
    assert not read_dead_letters(tmp_path / "dead.jsonl")


def test_the_onnx_int8_backend_is_exported_and_run_on_the_workers(worker_pool: str, pg_uri: str, table: str,
                                                                  tmp_path: Path) -> None:
    log, final = shuffled_changelog(tmp_path / "changes.jsonl")
    done = sync_remotely(worker_pool, pg_uri, table, "--input", str(log), "--backend", "onnx-int8",
                         "--onnx_cache", str(tmp_path / "onnx"), "--dead_letters", str(tmp_path / "dead.jsonl"))
    assert done.returncode == 0, done.stderr[-4000:]
    assert list((tmp_path / "onnx").glob("*-onnx-int8/meta.json")), "no export (the launcher makes none here)"
    assert_exact(read_rows(pg_uri, table), final)


def test_the_default_sample_is_read_from_the_workers_installed_package(worker_pool: str, pg_uri: str, table: str,
                                                                       tmp_path: Path) -> None:
    done = sync_remotely(worker_pool, pg_uri, table, "--dead_letters", str(tmp_path / "dead.jsonl"))
    assert done.returncode == 0, done.stderr[-4000:]
    assert read_rows(pg_uri, table)
