"""Pick the winning event of each document: the highest version, whatever the arrival order.

Ties (the same version twice) are broken deterministically, so every arrival order gives the same winner:
a delete beats an upsert, then the larger raw payload (byte order) wins. Every other event is superseded.
"""
from __future__ import annotations

from typing import Iterable

from transforms.types import ChangeEvent, Superseded


def precedence(event: ChangeEvent) -> tuple[int, bool, bytes]:
    return (event.version, event.op == "delete", event.raw)


def select_latest(events: Iterable[ChangeEvent]) -> tuple[ChangeEvent, list[Superseded]]:
    """The winning event and the superseded ones, each with its reason (`older version` or `duplicate`)."""
    ordered = sorted(events, key=precedence, reverse=True)
    if not ordered:
        raise ValueError("select_latest needs at least one event")
    winner, losers = ordered[0], ordered[1:]
    superseded = [
        Superseded(e, "duplicate" if precedence(e) == precedence(winner)
                   else f"older version {e.version} < {winner.version}" if e.version < winner.version
                   else f"same version {e.version}, lost the tie-break")
        for e in losers
    ]
    return winner, superseded
