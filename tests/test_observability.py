"""What an operator sees while a sync runs: `/metrics` (Prometheus text) and `/ready` during a `--follow`
run, the source backlog (Kafka lag, Redis pending), and the progress line on a terminal."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from connectors.kafka import KafkaConfig
from connectors.metrics_http import MetricsEndpoint, render
from connectors.redis_streams import RedisStreamConfig
from pipeline.progress import Progress, expected_records, progress_line
from tests.conftest import create_topic, free_port, produce, stop_process_group
from transforms import counters

REPO = Path(__file__).resolve().parents[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_live_counters_render_as_prometheus_text_with_sink_labels_latency_and_backlog():
    counters.counter(counters.RECORDS_READ).inc(3)
    counters.sink_counter('pg "main"', counters.VECTORS_UPSERTED).inc(5)
    counters.sink_latency("pgvector").update(12)
    counters.skipped_counter("unsupported .svg").inc(2)
    text = render({(("topic", "docs"), ("partition", "0")): 7})
    assert "# TYPE vector_sync_records_read_total counter" in text
    assert metric(text, "vector_sync_records_read_total") >= 3
    assert metric(text, "vector_sync_vectors_upserted_total", '{sink="pg \\"main\\""}') >= 5
    assert metric(text, "vector_sync_sink_write_latency_ms_count", '{sink="pgvector"}') >= 1
    assert metric(text, "vector_sync_source_backlog", '{topic="docs",partition="0"}') == 7
    assert metric(text, "vector_sync_inputs_skipped_total", '{reason="unsupported .svg"}') >= 2


def test_ready_is_503_with_the_reason_until_the_run_reached_its_sinks_and_source():
    endpoint = MetricsEndpoint(0)
    try:
        base = f"http://127.0.0.1:{endpoint.port}"
        status, body = get(base + "/ready")
        assert status == 503 and "not ready: starting" in body
        endpoint.set_ready(True)
        assert get(base + "/ready") == (200, "ready\n")
        endpoint.set_ready(False, "follow run 3 failed; retrying")
        assert get(base + "/ready") == (503, "not ready: follow run 3 failed; retrying\n")
        assert get(base + "/nothing")[0] == 404
        assert get(base + "/metrics")[0] == 200
    finally:
        endpoint.close()


def test_a_failing_backlog_question_never_fails_the_scrape():
    def broken() -> dict:
        raise ConnectionError("broker down")

    endpoint = MetricsEndpoint(0, backlog=broken)
    try:
        status, text = get(f"http://127.0.0.1:{endpoint.port}/metrics")
        assert status == 200 and "source_backlog" not in text
    finally:
        endpoint.close()


def test_kafka_backlog_is_the_end_offset_less_the_committed_one(kafka_bootstrap: str, tmp_path: Path):
    from pipeline.main import run

    topic = create_topic(kafka_bootstrap, partitions=2)
    produce(kafka_bootstrap, topic, [(f"d{i}", {"op": "upsert", "version": 1, "text": f"text {i}"})
                                     for i in range(6)])
    config = KafkaConfig(bootstrap=kafka_bootstrap, topics=(topic,), group="lag")
    before = config.backlog()
    assert set(before) == {(("topic", topic), ("partition", "0")), (("topic", topic), ("partition", "1"))}
    assert sum(before.values()) == 6
    run(["--source", "kafka", "--kafka_bootstrap", kafka_bootstrap, "--kafka_topic", topic, "--kafka_group", "lag",
         "--kafka_stop_at_end", "--qdrant_path", str(tmp_path / "store"), "--dead_letters", str(tmp_path / "d.jsonl")])
    assert sum(config.backlog().values()) == 0


def test_redis_backlog_counts_pending_and_undelivered_entries(redis_url: str):
    import redis

    client = redis.Redis.from_url(redis_url)
    stream = f"lag-{os.getpid()}-{time.monotonic_ns()}"
    for i in range(5):
        client.xadd(stream, {"data": json.dumps({"doc_id": f"d{i}", "op": "delete", "version": 1})})
    client.xgroup_create(stream, "g", id="0")
    client.xreadgroup("g", "c", {stream: ">"}, count=2)
    backlog = RedisStreamConfig(url=redis_url, stream=stream, group="g").backlog()
    assert backlog[(("stream", stream), ("state", "pending"))] == 2
    assert backlog.get((("stream", stream), ("state", "undelivered")), 3) == 3  # lag: Redis 7+ only


def test_progress_shows_records_of_the_expected_total_rate_and_time_left():
    line = progress_line({counters.RECORDS_READ: 60, counters.EVENTS_APPLIED: 40, counters.EVENTS_DEAD_LETTERED: 10,
                          counters.CHUNKS_EMBEDDED: 500},
                         {counters.RECORDS_READ: 10}, elapsed=10.0, expected=100)
    assert line == "records 50/100 · applied 40 · dead letters 10 · chunks 500 (50/s) · 0:10 · about 0:10 left"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_and_clears_its_line_but_stays_quiet_elsewhere():
    screen = Terminal()
    progress = Progress(expected=10, stream=screen, every_s=0.05)
    counters.counter(counters.RECORDS_READ).inc(4)
    time.sleep(0.3)
    progress.stop()
    assert "records 4/10" in screen.getvalue() and screen.getvalue().endswith("\r")
    piped = io.StringIO()
    Progress(stream=piped, every_s=0.05).stop()
    assert piped.getvalue() == ""


def test_expected_records_are_the_lines_of_a_local_changelog_or_the_files_of_a_folder(tmp_path: Path):
    (tmp_path / "a.jsonl").write_text("{}\n{}\n{}")  # the last line has no newline
    (tmp_path / "b.jsonl").write_text("{}\n")
    assert expected_records(str(tmp_path / "*.jsonl"), is_folder=False) == 4
    assert expected_records(str(tmp_path), is_folder=True) == 2
    assert expected_records("gs://bucket/changes.jsonl", is_folder=False) is None


def test_metrics_and_ready_move_during_a_follow_run(tmp_path: Path):
    changelog = tmp_path / "changes.jsonl"
    changelog.write_text("".join(json.dumps({"doc_id": f"d{i}", "op": "upsert", "version": 1, "text": f"doc {i}"})
                                 + "\n" for i in range(3)))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--input", str(changelog), "--qdrant_path",
                             str(tmp_path / "store"), "--dead_letters", str(tmp_path / "dead.jsonl"),
                             "--follow", "0.5", "--metrics_port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        readiness, scrapes = [], []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                readiness.append(get(base + "/ready")[0])
                scrapes.append(get(base + "/metrics")[1])
            except (urllib.error.URLError, ConnectionError):
                pass
            applied = metric(scrapes[-1], "vector_sync_events_applied_total") if scrapes else 0
            if applied >= 3 and len(changelog.read_text().splitlines()) == 3:
                with changelog.open("a") as fh:  # new work for the next follow run
                    fh.write(json.dumps({"doc_id": "d9", "op": "upsert", "version": 1, "text": "late doc"}) + "\n")
            if applied >= 4 and metric(scrapes[-1], "vector_sync_records_read_total") >= 8:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        assert readiness and readiness[0] == 503 and readiness[-1] == 200
        read = [metric(s, "vector_sync_records_read_total") for s in scrapes]
        assert read == sorted(read) and read[-1] >= 8  # 3 records, then 3 + 1 + ... across the follow runs
        assert metric(scrapes[-1], "vector_sync_events_applied_total") >= 4
        assert metric(scrapes[-1], "vector_sync_chunks_embedded_total") >= 4
        assert metric(scrapes[-1], "vector_sync_sink_write_latency_ms_count", '{sink="qdrant"}') >= 1
    finally:
        stop_process_group(proc)


def test_a_metrics_port_in_use_is_a_one_line_start_up_error(capsys: pytest.CaptureFixture[str]):
    from pipeline.main import main

    endpoint = MetricsEndpoint(0)
    try:
        assert main(["--metrics_port", str(endpoint.port)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --metrics_port {endpoint.port}") and err.count("\n") == 1
    finally:
        endpoint.close()


def test_azure_queue_backlog_is_its_approximate_message_count(azurite: str, monkeypatch: pytest.MonkeyPatch):
    from azure.storage.queue import QueueClient

    from connectors.azure_queue import AzureQueueConfig
    from connectors.secrets import SecretRef

    name = f"lag{time.monotonic_ns()}"
    queue = QueueClient.from_connection_string(azurite, name)
    queue.create_queue()
    for i in range(3):
        queue.send_message(json.dumps({"doc_id": f"d{i}"}))
    monkeypatch.setenv("BVS_TEST_AZURITE", azurite)
    config = AzureQueueConfig(queue=name, connection_string=SecretRef.model_validate("env:BVS_TEST_AZURITE"))
    assert config.backlog() == {(("queue", name),): 3}
