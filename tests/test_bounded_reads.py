"""A bounded run of Redis Streams, Pub/Sub or an Azure queue ends under steady traffic (`--max_read_seconds`,
`--max_records`; both on by default) and acknowledges what it read; the rest waits for the next run."""
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import redis

from connectors.azure_queue import AzureQueueConfig
from connectors.pubsub import PubSubConfig
from connectors.redis_streams import RedisStreamConfig
from pipeline.main import run
from tests.conftest import read_points
from tests.test_azure_blob_sync import Account, sync
from tests.test_pubsub_source import make_subscription, pubsub_args, publish
from tests.test_redis_source import add, stream_args


@pytest.mark.parametrize("config", [RedisStreamConfig(url="redis://h", stream="s", group="g"),
                                    PubSubConfig(subscription="projects/p/subscriptions/s"),
                                    AzureQueueConfig(queue="q")])
def test_bounded_reads_have_default_caps_on_records_and_time(config):
    assert (config.max_records, config.max_read_seconds, config.max_delivery_attempts) == (10_000, 300, 5)


class SteadyProducer:
    """Calls `send(i)` every `every_s` seconds, from a thread, until stopped (at most `limit_s`)."""

    def __init__(self, send: Callable[[int], None], every_s: float = 0.05, limit_s: float = 60) -> None:
        self.sent = 0
        self._send, self._every, self._limit = send, every_s, limit_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - started < self._limit:
            self._send(self.sent)
            self.sent += 1
            self._stop.wait(self._every)

    def __enter__(self) -> "SteadyProducer":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def doc(i: int) -> dict:
    return {"doc_id": f"d{i}", "op": "upsert", "version": 1, "text": f"Document {i}."}


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_redis_run_under_steady_traffic_ends_and_acknowledges_what_it_read(tmp_path: Path, redis_url: str):
    client, stream = redis.Redis.from_url(redis_url), f"changes-{uuid.uuid4().hex[:6]}"
    add(client, stream, doc(-1))
    with SteadyProducer(lambda i: add(redis.Redis.from_url(redis_url), stream, doc(i))) as producer:
        summary, seconds = timed(lambda: run(stream_args(redis_url, stream, tmp_path, "--max_read_seconds", "2")))
    assert seconds < 40 and producer.sent > summary.records_read > 0
    assert summary.records_acknowledged == summary.records_read and summary.accounted
    assert len({p["doc_id"] for p in read_points(tmp_path / "store").values()}) == summary.records_read
    assert client.xpending(stream, "sync")["pending"] == 0


def test_a_pubsub_run_under_steady_traffic_ends_and_acknowledges_what_it_read(tmp_path: Path, pubsub_emulator: str):
    topic, subscription = make_subscription()
    with SteadyProducer(lambda i: publish(topic, doc(i))) as producer:
        summary, seconds = timed(lambda: run([*pubsub_args(subscription, tmp_path), "--max_read_seconds", "3"]))
    assert seconds < 40 and producer.sent > summary.records_read > 0
    assert summary.records_acknowledged == summary.records_read and summary.accounted
    assert len({p["doc_id"] for p in read_points(tmp_path / "store").values()}) == summary.records_read


def test_an_azure_run_under_steady_traffic_ends_and_acknowledges_what_it_read(tmp_path: Path, azurite: str):
    account = Account(azurite)
    with SteadyProducer(lambda i: account.send(account.upload(f"doc-{i}.txt", f"Document {i}.".encode())),
                        every_s=0.02) as producer:
        summary, seconds = timed(lambda: sync(azurite, account, tmp_path, "--max_read_seconds", "2"))
    assert seconds < 40 and producer.sent > summary.records_read > 0
    assert summary.records_acknowledged == summary.records_read and summary.accounted
    assert account.queue.get_queue_properties().approximate_message_count == producer.sent - summary.records_read
