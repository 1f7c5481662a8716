"""Beam metric counters of the sync pipeline (namespace `vector_sync`), read back for the run summary.

Every input record ends in exactly one of `events_applied`, `events_superseded`, `events_dead_lettered` (a
record holding several events, once per event), so `records_read + record_extra_parts == events_applied +
events_superseded + events_dead_lettered` once the pipeline drains. An
event written to several sinks counts once: dead-lettered if any sink failed it, else applied.
`dead_letters` counts dead-letter records (one per failing sink). Per-sink counters live in the namespace
`sink:<name>` under the same names.
"""
from __future__ import annotations

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


SINK_COUNTERS = (VECTORS_UPSERTED, VECTORS_DELETED, DEAD_LETTERS, SINK_RETRIES, TEXT_TRUNCATED)


def counter(name: str):  # noqa: ANN201 - Beam's Metrics.DelegatingCounter
    return Metrics.counter(NAMESPACE, name)


def sink_namespace(sink: str) -> str:
    return f"sink:{sink}"


def sink_counter(sink: str, name: str):  # noqa: ANN201
    return Metrics.counter(sink_namespace(sink), name)
