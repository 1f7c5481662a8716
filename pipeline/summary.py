"""The run summary: the pipeline's counters, read back from Beam metrics after it drains."""
from __future__ import annotations

import json
from typing import Any

from apache_beam.metrics.metric import MetricsFilter
from pydantic import BaseModel

from transforms import counters


class RunSummary(BaseModel):
    records_read: int = 0
    events_applied: int = 0
    events_in_sync: int = 0
    events_superseded: int = 0
    dead_letters: int = 0
    chunks_embedded: int = 0
    chunks_skipped: int = 0
    tokens_embedded: int = 0
    vectors_upserted: int = 0
    vectors_deleted: int = 0
    sink_retries: int = 0
    tokens_in_batches: int = 0
    padded_tokens_in_batches: int = 0
    wall_seconds: float = 0.0
    vectors_in_store: int | None = None

    @property
    def accounted(self) -> bool:
        """Every record read was applied, superseded or dead-lettered."""
        return self.records_read == self.events_applied + self.events_superseded + self.dead_letters

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
            f"  dead-lettered     {self.dead_letters}",
            f"  accounted for     {'yes' if self.accounted else 'NO: counts do not add up'}",
            f"chunks embedded     {self.chunks_embedded} (skipped, unchanged: {self.chunks_skipped}; "
            f"padding {self.padding_fraction:.1%} of batch tokens)",
            f"vectors upserted    {self.vectors_upserted}",
            f"vectors deleted     {self.vectors_deleted}",
            f"sink retries        {self.sink_retries}",
            f"wall time           {self.wall_seconds:.1f} s "
            f"({rate:.1f} chunks/s, {tok_rate:.0f} tokens/s embedded, model load and start-up included)",
        ]
        if self.vectors_in_store is not None:
            lines.append(f"vectors in store    {self.vectors_in_store}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({**self.model_dump(), "accounted": self.accounted,
                           "padding_fraction": self.padding_fraction}, indent=2)


def summary_from_metrics(result: Any, wall_seconds: float) -> RunSummary:
    values = {}
    for name in counters.ALL:
        found = result.metrics().query(MetricsFilter().with_namespace(counters.NAMESPACE).with_name(name))
        values[name] = sum(c.committed or 0 for c in found["counters"])
    return RunSummary(**values, wall_seconds=wall_seconds)
