"""The run summary: the pipeline's counters, read back from Beam metrics after it drains."""
from __future__ import annotations

import json
from typing import Any, Sequence

from apache_beam.metrics.metric import MetricsFilter
from pydantic import BaseModel

from transforms import counters


class SinkSummary(BaseModel):
    """One sink's share of the run."""

    vectors_upserted: int = 0
    vectors_deleted: int = 0
    dead_letters: int = 0
    sink_retries: int = 0
    text_truncated: int = 0
    vectors_in_store: int | None = None


class RunSummary(BaseModel):
    records_read: int = 0
    record_extra_parts: int = 0
    records_acknowledged: int = 0
    events_applied: int = 0
    events_in_sync: int = 0
    events_superseded: int = 0
    events_dead_lettered: int = 0
    dead_letters: int = 0
    chunks_embedded: int = 0
    chunks_skipped: int = 0
    tokens_embedded: int = 0
    vectors_upserted: int = 0
    vectors_deleted: int = 0
    sink_retries: int = 0
    tokens_in_batches: int = 0
    padded_tokens_in_batches: int = 0
    model_loads: int = 0
    """Embedding models loaded (once per worker process that got a chunk to embed; 0 when nothing needed it)."""
    wall_seconds: float = 0.0
    vectors_in_store: int | None = None
    sinks: dict[str, SinkSummary] = {}
    skipped: dict[str, int] = {}
    """Inputs skipped as no change (not records: outside `accounted`), by reason."""

    @property
    def accounted(self) -> bool:
        """Every record read was applied, superseded or dead-lettered (each event of a record that held several)."""
        return (self.records_read + self.record_extra_parts
                == self.events_applied + self.events_superseded + self.events_dead_lettered)

    def with_store_counts(self, counts: dict[str, int]) -> "RunSummary":
        sinks = {name: s.model_copy(update={"vectors_in_store": counts.get(name)}) for name, s in self.sinks.items()}
        return self.model_copy(update={"sinks": sinks, "vectors_in_store": sum(counts.values())})

    @property
    def padding_fraction(self) -> float:
        """Share of the embedded batches' token slots that were padding."""
        if not self.padded_tokens_in_batches:
            return 0.0
        return 1 - self.tokens_in_batches / self.padded_tokens_in_batches

    def render(self) -> str:
        rate = self.chunks_embedded / self.wall_seconds if self.wall_seconds else 0.0
        tok_rate = self.tokens_embedded / self.wall_seconds if self.wall_seconds else 0.0
        lines = [
            "== beam-vector-sync summary ==",
            f"records read        {self.records_read}",
            f"  applied           {self.events_applied} (already in sync: {self.events_in_sync})",
            f"  superseded        {self.events_superseded}",
            f"  dead-lettered     {self.events_dead_lettered}"
            + (f" ({self.dead_letters} dead-letter records: one per failing sink)"
               if self.dead_letters != self.events_dead_lettered else ""),
            f"  accounted for     {'yes' if self.accounted else 'NO: counts do not add up'}",
            *([f"  acknowledged      {self.records_acknowledged} (to the source, after apply)"]
              if self.records_acknowledged else []),
            *([f"skipped             {sum(self.skipped.values())} (not read as records)"] if self.skipped else []),
            *(f"  {count:<17} {reason}" for reason, count in sorted(self.skipped.items())),
            f"chunks embedded     {self.chunks_embedded} (skipped, unchanged: {self.chunks_skipped}; "
            f"padding {self.padding_fraction:.1%} of batch tokens; model loads: {self.model_loads})",
            f"vectors upserted    {self.vectors_upserted}",
            f"vectors deleted     {self.vectors_deleted}",
            f"sink retries        {self.sink_retries}",
            f"wall time           {self.wall_seconds:.1f} s "
            f"({rate:.1f} chunks/s, {tok_rate:.0f} tokens/s embedded, model load and start-up included)",
        ]
        if self.vectors_in_store is not None:
            lines.append(f"vectors in store    {self.vectors_in_store}")
        if len(self.sinks) > 1 or any(s.text_truncated for s in self.sinks.values()):
            for name, sink in self.sinks.items():
                lines.append(
                    f"  {name:<17} upserted {sink.vectors_upserted}, deleted {sink.vectors_deleted}, "
                    f"dead-lettered {sink.dead_letters}, retries {sink.sink_retries}"
                    + (f", texts truncated {sink.text_truncated}" if sink.text_truncated else "")
                    + (f", in store {sink.vectors_in_store}" if sink.vectors_in_store is not None else ""))
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({**self.model_dump(), "accounted": self.accounted,
                           "padding_fraction": self.padding_fraction}, indent=2)


def _counter(result: Any, namespace: str, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))
    return sum(c.committed or 0 for c in found["counters"])


def summary_from_metrics(result: Any, wall_seconds: float, sinks: Sequence[str] = ()) -> RunSummary:
    values = {name: _counter(result, counters.NAMESPACE, name) for name in counters.ALL}
    per_sink = {sink: SinkSummary(**{name: _counter(result, counters.sink_namespace(sink), name)
                                     for name in counters.SINK_COUNTERS}) for sink in sinks}
    found = result.metrics().query(MetricsFilter().with_namespace(counters.SKIPPED_NAMESPACE))["counters"]
    skipped: dict[str, int] = {}
    for c in found:
        skipped[c.key.metric.name] = skipped.get(c.key.metric.name, 0) + (c.committed or 0)
    return RunSummary(**values, wall_seconds=wall_seconds, sinks=per_sink,
                      skipped={k: v for k, v in skipped.items() if v})
