"""What every sink can hold, checked once at parse so that the sinks never disagree about a record.

Strings must be valid Unicode (no lone surrogates: they cannot be encoded as UTF-8) and hold no NUL
(PostgreSQL text and jsonb refuse it); versions fit signed 64 bits (BSON, SQL `bigint`); metadata is JSON
data only: finite numbers (no NaN or Infinity), integers within signed 64 bits, string keys, and at most
`MAX_METADATA_DEPTH` levels of nesting (MongoDB refuses deeper documents). A value that breaks a rule
raises `NotStorable` with the path of the offending value.
"""
from __future__ import annotations

import math
from typing import Any

MAX_VERSION = 2**63 - 1
MIN_INT64 = -(2**63)
MAX_METADATA_DEPTH = 32


class NotStorable(ValueError):
    """A value some sink cannot store (the message names it and says why)."""


def check_string(value: str, where: str) -> str:
    """`value` unchanged, or `NotStorable` for a NUL or a lone surrogate."""
    if "\x00" in value:
        raise NotStorable(f"{where} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NotStorable(f"{where} contains a lone surrogate at position {exc.start}") from None
    return value


def check_metadata(value: Any, where: str = "metadata") -> Any:
    """`value` unchanged when every part of it is storable JSON data (iterative: any depth is safe)."""
    pending: list[tuple[Any, str, int]] = [(value, where, 0)]
    while pending:
        item, path, depth = pending.pop()
        if depth > MAX_METADATA_DEPTH:
            raise NotStorable(f"{where} is nested more than {MAX_METADATA_DEPTH} levels deep")
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            check_string(item, path)
        elif isinstance(item, int):
            if not MIN_INT64 <= item <= MAX_VERSION:
                raise NotStorable(f"{path} is an integer outside signed 64 bits")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise NotStorable(f"{path} is {item} (only finite numbers can be stored)")
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise NotStorable(f"{path} has a non-string key {key!r}")
                check_string(key, f"{path} key")
                pending.append((child, f"{path}.{key}", depth + 1))
        elif isinstance(item, (list, tuple)):
            pending.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        else:
            raise NotStorable(f"{path} is a {type(item).__name__}, not JSON data")
    return value


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (0 for a scalar), computed without recursion."""
    deepest = 0
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    return deepest
