"""Beam metric counters of the sync pipeline (namespace `vector_sync`), read back for the run summary.

Every input record ends in exactly one of `events_applied`, `events_superseded`, `events_dead_lettered` (a
record holding several events, once per event), so `records_read + record_extra_parts == events_applied +
events_superseded + events_dead_lettered` once the pipeline drains. An
event written to several sinks counts once: dead-lettered if any sink failed it, else applied.
`dead_letters` counts dead-letter records (one per failing sink). Per-sink counters live in the namespace
`sink:<name>` under the same names.

Each counter is also added to this process's live totals (`live_totals()`), which the metrics endpoint and
the terminal progress read while a run goes on: Beam reports its metrics only when a job ends, and in-process
runners run the DoFns in this process. Workers in other processes (remote runners, multi-processing) count
only in Beam's metrics.
"""
from __future__ import annotations

import threading
from typing import Any

from apache_beam.metrics import Metrics

NAMESPACE = "vector_sync"

RECORDS_READ = "records_read"
RECORD_EXTRA_PARTS = "record_extra_parts"  # events beyond the first in records that hold several
RECORDS_ACKNOWLEDGED = "records_acknowledged"  # finished records a streaming source acknowledged
EVENTS_APPLIED = "events_applied"
EVENTS_IN_SYNC = "events_in_sync"  # applied, but the store already held exactly this version: no write
EVENTS_SUPERSEDED = "events_superseded"
EVENTS_DEAD_LETTERED = "events_dead_lettered"
DEAD_LETTERS = "dead_letters"
TEXT_TRUNCATED = "text_truncated"  # chunk texts shortened to fit a store's metadata limit
CHUNKS_EMBEDDED = "chunks_embedded"
CHUNKS_SKIPPED = "chunks_skipped"  # unchanged text and model: the stored vector was reused
VECTORS_UPSERTED = "vectors_upserted"
VECTORS_DELETED = "vectors_deleted"
TOKENS_EMBEDDED = "tokens_embedded"
SINK_RETRIES = "sink_retries"
BATCH_TOKENS = "tokens_in_batches"  # real tokens (special tokens included) in embedding batches
BATCH_PADDED_TOKENS = "padded_tokens_in_batches"  # batch size x longest item, summed over batches
MODEL_LOADS = "model_loads"  # embedding models loaded (once per worker process, and only when a batch comes)

ALL = (RECORDS_READ, RECORD_EXTRA_PARTS, RECORDS_ACKNOWLEDGED, EVENTS_APPLIED, EVENTS_IN_SYNC, EVENTS_SUPERSEDED, EVENTS_DEAD_LETTERED, DEAD_LETTERS, CHUNKS_EMBEDDED,
       CHUNKS_SKIPPED, VECTORS_UPSERTED, VECTORS_DELETED, TOKENS_EMBEDDED, SINK_RETRIES, BATCH_TOKENS, BATCH_PADDED_TOKENS,
       MODEL_LOADS)


SINK_WRITE_LATENCY_MS = "write_latency_ms"

SINK_COUNTERS = (VECTORS_UPSERTED, VECTORS_DELETED, DEAD_LETTERS, SINK_RETRIES, TEXT_TRUNCATED)


_LIVE_LOCK = threading.Lock()
_LIVE_COUNTS: dict[tuple[str, str], int] = {}
_LIVE_DISTRIBUTIONS: dict[tuple[str, str], list[int]] = {}  # [count, sum, max]


class LiveCounter:
    """A Beam counter that also adds to this process's live totals; pickles with the DoFn that holds it."""

    def __init__(self, namespace: str, name: str) -> None:
        self._key = (namespace, name)
        self._beam = Metrics.counter(namespace, name)

    def inc(self, n: int = 1) -> None:
        self._beam.inc(n)
        with _LIVE_LOCK:
            _LIVE_COUNTS[self._key] = _LIVE_COUNTS.get(self._key, 0) + n


class LiveDistribution:
    """A Beam distribution that also keeps a live count, sum and maximum in this process."""

    def __init__(self, namespace: str, name: str) -> None:
        self._key = (namespace, name)
        self._beam = Metrics.distribution(namespace, name)

    def update(self, value: int) -> None:
        self._beam.update(value)
        with _LIVE_LOCK:
            found = _LIVE_DISTRIBUTIONS.setdefault(self._key, [0, 0, value])
            found[0], found[1], found[2] = found[0] + 1, found[1] + value, max(found[2], value)


def live_totals() -> dict[str, Any]:
    """`{"counters": {(namespace, name): total}, "distributions": {(namespace, name): (count, sum, max)}}`
    counted in this process since it started (across the runs of `--follow`)."""
    with _LIVE_LOCK:
        return {"counters": dict(_LIVE_COUNTS),
                "distributions": {k: tuple(v) for k, v in _LIVE_DISTRIBUTIONS.items()}}


def counter(name: str) -> LiveCounter:
    return LiveCounter(NAMESPACE, name)


SKIPPED_NAMESPACE = f"{NAMESPACE}:skipped"
"""Inputs that are no change and not an error, never read as records (a binary file in a folder, an S3 test
event): one counter per reason, the counter's name; the summary lists them."""


def skipped_counter(reason: str) -> LiveCounter:
    return LiveCounter(SKIPPED_NAMESPACE, reason)


def sink_namespace(sink: str) -> str:
    return f"sink:{sink}"


def sink_counter(sink: str, name: str) -> LiveCounter:
    return LiveCounter(sink_namespace(sink), name)


def sink_latency(sink: str) -> LiveDistribution:
    """Milliseconds per store write (one batch, retries included)."""
    return LiveDistribution(sink_namespace(sink), SINK_WRITE_LATENCY_MS)
