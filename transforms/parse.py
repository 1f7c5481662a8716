"""Parse raw change-log records into `ChangeEvent`s; anything malformed becomes a `parse` dead letter."""
from __future__ import annotations

import json
from typing import Callable, Iterator, Optional, Union

from pydantic import ValidationError

from transforms.types import ChangeEvent, DeadLetter, SourceRef

PARSE_STAGE = "parse"


class RecordError(ValueError):
    """A record that is not a valid change event (the message says why)."""


def summarise(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_change_event(payload: bytes, source: SourceRef) -> ChangeEvent:
    """Decode UTF-8 JSON and validate it; raise `RecordError`/`UnicodeDecodeError` with a clear message."""
    text = payload.decode("utf-8")  # non-UTF-8 bytes raise UnicodeDecodeError: dead-lettered by the caller
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise RecordError(f"a change event must be a JSON object, got {type(obj).__name__}")
    try:
        return ChangeEvent.model_validate({**obj, "source": source, "raw": payload})
    except ValidationError as exc:
        raise RecordError(f"invalid change event: {summarise(exc)}") from exc


def event_or_dead_letter(make: Callable[[], ChangeEvent], payload: bytes, source: SourceRef,
                         doc_id: Optional[str] = None) -> Iterator[Union[ChangeEvent, DeadLetter]]:
    """Yield the `ChangeEvent` that `make` returns, or one `DeadLetter` (stage `parse`, the error's class as
    its type) when the record is not a usable event (`RecordError`) or not UTF-8."""
    try:
        yield make()
    except (RecordError, UnicodeDecodeError) as exc:
        yield DeadLetter.of(PARSE_STAGE, exc, payload, source, doc_id=doc_id, error_type=type(exc).__name__)


def parse_or_dead_letter(payload: bytes, source: SourceRef) -> Iterator[Union[ChangeEvent, DeadLetter]]:
    """Yield one `ChangeEvent`, or one `DeadLetter` (stage `parse`) for a record that cannot be used."""
    return event_or_dead_letter(lambda: parse_change_event(payload, source), payload, source)
