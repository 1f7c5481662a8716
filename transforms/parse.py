"""Parse raw change-log records into `ChangeEvent`s; anything malformed becomes a `parse` dead letter."""
from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Optional, Union

from pydantic import ValidationError

from transforms.storable import json_depth
from transforms.types import ChangeEvent, DeadLetter, SourceRef

PARSE_STAGE = "parse"
MAX_JSON_DEPTH = 64
"""Deeper JSON is refused before anything walks it (a record nested ~1,000 levels deep once crashed runs)."""


class RecordError(ValueError):
    """A record that is not a valid change event (the message says why); `doc_id` when it could be read."""

    def __init__(self, message: str, doc_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.doc_id = doc_id


def _refuse_constant(name: str) -> Any:
    raise RecordError(f"invalid JSON: {name} is not a JSON number")


def load_json(text: Union[str, bytes]) -> Any:
    """Strict JSON: `NaN` and `Infinity` are refused, and so is nesting deeper than `MAX_JSON_DEPTH`
    (`RecordError` either way, never `RecursionError`)."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise RecordError(f"invalid JSON: {exc}") from exc
    except RecursionError:
        raise RecordError(f"invalid JSON: nested more than {MAX_JSON_DEPTH} levels deep") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise RecordError(f"invalid JSON: nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def known_doc_id(value: Any) -> Optional[str]:
    """The record's `doc_id` when it has a usable one, for dead letters of records that fail validation."""
    doc_id = value.get("doc_id") if isinstance(value, dict) else None
    return doc_id if isinstance(doc_id, str) and doc_id else None


def summarise(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_change_event(payload: bytes, source: SourceRef) -> ChangeEvent:
    """Decode UTF-8 JSON and validate it; raise `RecordError`/`UnicodeDecodeError` with a clear message."""
    text = payload.decode("utf-8")  # non-UTF-8 bytes raise UnicodeDecodeError: dead-lettered by the caller
    obj = load_json(text)
    if not isinstance(obj, dict):
        raise RecordError(f"a change event must be a JSON object, got {type(obj).__name__}")
    return validate_event({**obj, "source": source, "raw": payload})


def validate_event(fields: dict[str, Any]) -> ChangeEvent:
    """A `ChangeEvent` from its fields, or `RecordError` saying what is wrong (with the doc_id if usable)."""
    try:
        return ChangeEvent.model_validate(fields)
    except ValidationError as exc:
        raise RecordError(f"invalid change event: {summarise(exc)}", known_doc_id(fields)) from exc


def event_or_dead_letter(make: Callable[[], ChangeEvent], payload: bytes, source: SourceRef,
                         doc_id: Optional[str] = None) -> Iterator[Union[ChangeEvent, DeadLetter]]:
    """Yield the `ChangeEvent` that `make` returns, or one `DeadLetter` (stage `parse`, the error's class as
    its type) when the record is not a usable event (`RecordError`) or not UTF-8. Any other exception is
    left to `ParseChangeEvents`, which dead-letters the record too."""
    try:
        yield make()
    except (RecordError, UnicodeDecodeError) as exc:
        yield DeadLetter.of(PARSE_STAGE, exc, payload, source, doc_id=getattr(exc, "doc_id", None) or doc_id,
                            error_type=type(exc).__name__)


def parse_or_dead_letter(payload: bytes, source: SourceRef) -> Iterator[Union[ChangeEvent, DeadLetter]]:
    """Yield one `ChangeEvent`, or one `DeadLetter` (stage `parse`) for a record that cannot be used."""
    return event_or_dead_letter(lambda: parse_change_event(payload, source), payload, source)
