"""Hostile input is one dead letter, never a crash, a blocked stream or a lost record: strings no store can
hold, JSON nested 1,000 levels deep, records holding no event, oversize records and texts, a parser that
raises anything; dead letters are appended across runs (never erased) and carry the doc_id when known."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.changelog import bounded_lines
from pipeline.main import follow_delay, run
from tests.conftest import read_dead_letters, read_points, write_changelog
from transforms.notifications import NotificationParser
from transforms.parse import parse_or_dead_letter
from transforms.stages import _ParseRecords
from transforms.types import ChangeEvent, DeadLetter, RawRecord, SourceRef

SOURCE = SourceRef(system="test", position={"line": 1})
DEEP = b'{"doc_id": "deep", "op": "upsert", "version": 1, "text": "x", "metadata": ' + b"[" * 1000 + b"]" * 1000 + b"}"


def parsed(payload: bytes, parser=parse_or_dead_letter, max_bytes=None) -> list:
    return [getattr(o, "value", o) for o in _ParseRecords(parser, max_bytes).process(RawRecord(payload, SOURCE))]


def event(**fields) -> bytes:
    return json.dumps({"doc_id": "d", "op": "upsert", "version": 1, "text": "hello", **fields}).encode()


@pytest.mark.parametrize("payload, reason", [
    (event(doc_id="a\udc80b"), "unicode string"),
    (event(text="x\ud800y"), "lone surrogate"),
    (event(doc_id="a\x00b"), "NUL"),
    (event(namespace="t\x00"), "NUL"),
    (event(version=2**63), "less than or equal"),
    (event(version=-1), "greater than or equal"),
    (b'{"doc_id": "d", "op": "upsert", "version": 1, "text": "x", "metadata": {"score": NaN}}', "NaN"),
    (b'{"doc_id": "d", "op": "upsert", "version": 1, "text": "x", "metadata": {"s": -Infinity}}', "-Infinity"),
    (event(metadata={"big": 2**64}), "outside signed 64 bits"),
    (event(metadata={"k\x00": 1}), "NUL"),
    (DEEP, "nested more than"),
])
def test_values_no_store_can_hold_are_dead_lettered_at_parse(payload: bytes, reason: str):
    (out,) = parsed(payload)
    assert isinstance(out, DeadLetter) and out.stage == "parse", out
    assert reason in out.error


def test_a_parse_dead_letter_of_valid_json_names_its_doc_id():
    (out,) = parsed(event(doc_id="known", version="one"))
    assert isinstance(out, DeadLetter) and out.doc_id == "known"


@pytest.mark.parametrize("fmt", ["auto", "s3", "eventgrid"])
def test_notifications_nested_1000_levels_deep_or_holding_no_event_are_one_dead_letter(fmt: str):
    for payload in (b"[" * 1000 + b"]" * 1000, b'{"Records": []}', b"[]"):
        (out,) = parsed(payload, NotificationParser(fmt))
        assert isinstance(out, DeadLetter) and out.stage == "parse"


def test_a_parser_that_raises_anything_gives_that_record_one_dead_letter():
    def exploding(payload: bytes, source: SourceRef):
        yield ChangeEvent(doc_id="first", op="delete", version=1)
        raise RecursionError("deep inside a parser")

    (out,) = parsed(b"{}", exploding)
    assert isinstance(out, DeadLetter) and out.error_type == "RecursionError"


def test_a_text_over_max_document_bytes_is_dead_lettered_with_its_size_and_a_bounded_payload():
    (out,) = parsed(event(text="x" * 5000), max_bytes=1000)
    assert isinstance(out, DeadLetter) and out.error_type == "DocumentTooLarge" and "5000 bytes" in out.error
    huge = event(text="y" * 200_000)
    (out,) = parsed(huge, max_bytes=1000)
    assert out.error_type == "DocumentTooLarge" and len(out.original_payload()) == 64 * 1024


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8), st.integers(1, 30),
       st.sampled_from([b"\n", b"\r\n"]))
@settings(max_examples=200, deadline=None)
def test_bounded_lines_cut_long_lines_and_report_their_true_size(lines, limit, end):
    data = end.join(lines) + (end if lines else b"")
    got = list(bounded_lines(io.BytesIO(data), limit))
    assert got == [(line[:limit].rstrip(b"\r"), len(line) + (1 if end == b"\r\n" else 0)) for line in lines] or (
        not lines and got == [])


def test_follow_backs_off_after_failures_up_to_a_cap():
    assert follow_delay(2.0, 0) == 2.0
    assert follow_delay(2.0, 1) == 4.0 and follow_delay(2.0, 3) == 16.0
    assert follow_delay(0.5, 1) == 2.0
    assert follow_delay(2.0, 30) == 300.0


# --- whole runs ------------------------------------------------------------------------------------------------

def sync(tmp_path: Path, log: Path, *extra: str):
    return run(["--input", str(log), "--qdrant_path", str(tmp_path / "store"),
                "--dead_letters", str(tmp_path / "dead.jsonl"), *extra])


def test_a_run_with_poison_records_applies_the_good_ones_and_dead_letters_each_bad_one(tmp_path: Path):
    log = write_changelog(tmp_path / "log.jsonl", [
        {"doc_id": "good", "op": "upsert", "version": 1, "text": "Forklifts yield to pedestrians."},
        DEEP,
        event(doc_id="nul\x00id").decode(),
        '{"doc_id": "nan", "op": "upsert", "version": 1, "text": "x", "metadata": {"s": NaN}}',
        {"doc_id": "big", "op": "upsert", "version": 1, "text": "z" * 3000},
        '{"doc_id": "huge", "op": "upsert", "version": 1, "text": "' + "w" * 80_000 + '"}',
        {"doc_id": "good2", "op": "upsert", "version": 1, "text": "Pallets are stacked three high."},
    ])
    summary = sync(tmp_path, log, "--max_document_bytes", "2000")
    assert {p["doc_id"] for p in read_points(tmp_path / "store").values()} == {"good", "good2"}
    assert (summary.records_read, summary.events_applied, summary.events_dead_lettered) == (7, 2, 5)
    assert summary.accounted
    letters = read_dead_letters(tmp_path / "dead.jsonl")
    assert sorted((d["stage"], d["error_type"]) for d in letters) == [
        ("parse", "DocumentTooLarge"), ("parse", "RecordError"), ("parse", "RecordError"),
        ("parse", "RecordError"), ("read", "DocumentTooLarge")]
    assert {d["doc_id"] for d in letters} >= {"big"}


def test_dead_letters_of_earlier_runs_are_kept(tmp_path: Path):
    first = write_changelog(tmp_path / "first.jsonl", ["{not json"])
    second = write_changelog(tmp_path / "second.jsonl", ['{"doc_id": 1}'])
    sync(tmp_path, first)
    sync(tmp_path, second)
    letters = read_dead_letters(tmp_path / "dead.jsonl")
    assert [Path(d["source"]["position"]["file"]).name for d in letters] == ["first.jsonl", "second.jsonl"]


def test_a_notification_holding_no_event_is_dead_lettered_and_one_holding_two_is_accounted_once_each(tmp_path: Path):
    record = {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "b"},
                                                          "object": {"key": "k", "sequencer": "0A"}}}
    log = write_changelog(tmp_path / "log.jsonl", [
        {"Records": []},
        {"Records": [record, {**record, "s3": {**record["s3"], "object": {"key": "k2", "sequencer": "0B"}}}]},
    ])
    summary = sync(tmp_path, log, "--notifications", "s3")
    assert summary.records_read == 2 and summary.events_dead_lettered == 1 and summary.accounted
    (letter,) = read_dead_letters(tmp_path / "dead.jsonl")
    assert letter["error_type"] == "NoEvents"


# --- on a stream: the partition always advances, and --follow keeps every dead letter --------------------------

def test_kafka_poison_records_are_dead_lettered_and_the_offsets_reach_the_end(tmp_path: Path, kafka_bootstrap: str):
    from tests.conftest import create_topic, produce
    from tests.test_kafka_source import committed, end_offsets, kafka_args

    topic = create_topic(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, [("deep", DEEP), ("empty", b'{"Records": []}'),
                                     ("ok", {"doc_id": "ok", "op": "upsert", "version": 1, "text": "Fine."})])
    summary = run(kafka_args(kafka_bootstrap, topic, tmp_path))
    assert (summary.records_read, summary.events_applied, summary.events_dead_lettered) == (3, 1, 2)
    assert committed(kafka_bootstrap, topic, 1) == end_offsets(kafka_bootstrap, topic, 1)
    assert run(kafka_args(kafka_bootstrap, topic, tmp_path)).records_read == 0


def test_follow_over_a_stream_with_a_malformed_record_keeps_its_dead_letter(tmp_path: Path, kafka_bootstrap: str):
    import subprocess
    import sys
    import time

    from tests.conftest import REPO, create_topic, produce, stop_process_group
    from tests.test_kafka_source import kafka_args

    topic = create_topic(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, [("bad", b"{not json"),
                                     ("ok", {"doc_id": "ok", "op": "upsert", "version": 1, "text": "Fine."})])
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--follow", "0.2",
                             *kafka_args(kafka_bootstrap, topic, tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        runs, deadline = 0, time.monotonic() + 240
        while runs < 3 and time.monotonic() < deadline:  # the first run reads both records, later ones none
            line = proc.stdout.readline()
            runs += line.startswith("== beam-vector-sync summary")
        assert runs == 3
    finally:
        stop_process_group(proc)
    (letter,) = read_dead_letters(tmp_path / "dead.jsonl")
    assert letter["stage"] == "parse" and letter["source"]["position"]["key"] == "bad"


# --- fuzzing every parser of outside bytes ----------------------------------------------------------------------

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                      st.text(max_size=12))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=20)
FIELDS = st.fixed_dictionaries({}, optional={
    "doc_id": JSON_VALUE, "op": st.sampled_from(["upsert", "delete", "x"]), "version": JSON_VALUE,
    "text": JSON_VALUE, "uri": JSON_VALUE, "metadata": JSON_VALUE, "namespace": JSON_VALUE,
    "Records": JSON_VALUE, "eventType": st.sampled_from(["Microsoft.Storage.BlobCreated", "x"]), "data": JSON_VALUE})


def _payloads():
    as_json = FIELDS.map(lambda d: json.dumps(d, allow_nan=True).encode("utf-8", "surrogatepass"))
    return st.one_of(st.binary(max_size=200), as_json, JSON_VALUE.map(
        lambda v: json.dumps(v, allow_nan=True).encode("utf-8", "surrogatepass")))


def _parsers():
    from connectors.changelog import parse_document_file
    from connectors.kafka import KafkaConfig, KafkaRecordParser

    kafka = KafkaRecordParser(KafkaConfig(bootstrap="127.0.0.1:1", topics=("t",), group="g"))
    mapped = KafkaRecordParser(KafkaConfig(bootstrap="127.0.0.1:1", topics=("t",), group="g", doc_id_field="a.b",
                                           text_fields=("text", "data"), version_field="version"))
    return [("changelog", parse_or_dead_letter, SOURCE), ("notifications", NotificationParser("auto"), SOURCE),
            ("kafka", kafka, SourceRef(system="kafka", position={"topic": "t", "partition": 0, "offset": 3,
                                                                 "key": "k"})),
            ("kafka-mapped", mapped, SourceRef(system="kafka", position={"topic": "t", "partition": 0,
                                                                         "offset": 3})),
            ("folder", parse_document_file, SourceRef(system="folder", position={"doc_id": "a.md", "mtime_ns": 1}))]


@given(payload=_payloads())
@settings(max_examples=300, deadline=None)
def test_every_parser_turns_any_bytes_into_storable_events_or_writable_dead_letters(payload: bytes):
    from transforms.storable import check_metadata, check_string

    for _, parser, source in _parsers():
        outputs = [getattr(o, "value", o) for o in _ParseRecords(parser, 10_000).process(RawRecord(payload, source))]
        assert outputs, "every record ends as events or a dead letter"
        for out in outputs:
            if isinstance(out, DeadLetter):
                json.loads(out.model_dump_json())
            else:
                assert isinstance(out, ChangeEvent)
                for value in (out.doc_id, out.namespace, out.text, out.uri):
                    if value is not None:
                        check_string(value, "field")
                check_metadata(out.metadata)


def test_a_nul_doc_id_is_dead_lettered_at_parse_and_the_documents_sharing_its_pgvector_lookup_land(
        tmp_path: Path, pg_uri: str, table: str):
    from tests.conftest import read_rows

    good = [{"doc_id": f"doc-{i}", "op": "upsert", "version": 1, "text": f"Rule {i}: forklifts stop at dock {i}."}
            for i in range(20)]
    log = write_changelog(tmp_path / "log.jsonl", [*good[:10], event(doc_id="bad\x00id").decode(),
                                                   event(doc_id="nan", metadata={"x": 1e308 * 10}).decode(),
                                                   *good[10:]])
    summary = run(["--input", str(log), "--sink", "pgvector", "--pg_dsn", pg_uri, "--pg_table", table,
                   "--dead_letters", str(tmp_path / "dead.jsonl")])
    assert {row[0] for row in read_rows(pg_uri, table).values()} == {f"doc-{i}" for i in range(20)}
    assert (summary.events_applied, summary.events_dead_lettered) == (20, 2) and summary.accounted
    assert {d["stage"] for d in read_dead_letters(tmp_path / "dead.jsonl")} == {"parse"}
