from __future__ import annotations

import base64
import json

import pytest

from transforms.parse import parse_or_dead_letter
from transforms.types import ChangeEvent, DeadLetter, SourceRef

SRC = SourceRef(system="changelog", position={"file": "log.jsonl", "line": 7})


def parse_one(payload: bytes):
    (item,) = list(parse_or_dead_letter(payload, SRC))
    return item


def test_valid_upsert_keeps_fields_source_and_raw_bytes():
    payload = json.dumps({"doc_id": "a", "op": "upsert", "version": 3, "text": "hello", "metadata": {"k": 1},
                          "namespace": "t1"}).encode()
    event = parse_one(payload)
    assert isinstance(event, ChangeEvent)
    assert (event.doc_id, event.op, event.version, event.text, event.metadata, event.namespace) == (
        "a", "upsert", 3, "hello", {"k": 1}, "t1")
    assert event.source == SRC and event.raw == payload and event.key == ("t1", "a")


def test_delete_needs_no_text():
    event = parse_one(b'{"doc_id": "a", "op": "delete", "version": 4}')
    assert isinstance(event, ChangeEvent) and event.op == "delete"


@pytest.mark.parametrize("payload, fragment", [
    (b'{"doc_id": "a", "op": "upsert", "version": 1, "text": "x"', "invalid JSON"),
    (b'[1, 2]', "must be a JSON object"),
    (b'{"op": "upsert", "version": 1, "text": "x"}', "doc_id"),
    (b'{"doc_id": "", "op": "upsert", "version": 1, "text": "x"}', "doc_id"),
    (b'{"doc_id": "a", "op": "merge", "version": 1, "text": "x"}', "op"),
    (b'{"doc_id": "a", "op": "upsert", "version": "7", "text": "x"}', "version"),
    (b'{"doc_id": "a", "op": "upsert", "version": true, "text": "x"}', "version"),
    (b'{"doc_id": "a", "op": "upsert", "version": -1, "text": "x"}', "version"),
    (b'{"doc_id": "a", "op": "upsert", "version": 1}', "needs a 'text'"),  # a blank text empties instead
    (b'{"doc_id": 5, "op": "upsert", "version": 1, "text": "x"}', "doc_id"),
    (b'{"doc_id": "a", "op": "upsert", "version": 1, "text": "x", "metadata": [1]}', "metadata"),
])
def test_malformed_records_become_parse_dead_letters_with_a_clear_reason(payload: bytes, fragment: str):
    letter = parse_one(payload)
    assert isinstance(letter, DeadLetter)
    assert letter.stage == "parse" and letter.error_type == "RecordError"
    assert fragment in letter.error
    assert base64.b64decode(letter.payload) == payload and letter.source == SRC and letter.attempts == 1


def test_non_utf8_bytes_are_dead_lettered_with_the_original_bytes():
    payload = b'{"doc_id": "a", "op": "upsert", "version": 1, "text": "caf\xe9"}'
    letter = parse_one(payload)
    assert isinstance(letter, DeadLetter) and letter.error_type == "UnicodeDecodeError"
    assert letter.original_payload() == payload


def test_dead_letter_json_round_trips_with_all_contract_fields():
    letter = parse_one(b"not json")
    record = json.loads(letter.model_dump_json())
    assert set(record) >= {"stage", "error_type", "error", "payload", "source", "attempts", "timestamp"}
    assert record["source"] == {"system": "changelog", "position": {"file": "log.jsonl", "line": 7}}
    assert DeadLetter.model_validate(record).original_payload() == b"not json"
