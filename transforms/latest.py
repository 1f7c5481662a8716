"""The one precedence rule between two changes of a document, used to pick the winner inside a run
(`select_latest`) and to decide whether an event still changes a store (`stored_outranks`).

Precedence: the higher version wins; at the same version a delete beats an upsert; then, between two events
of the same run, the larger raw payload (byte order) wins, so every arrival order gives the same winner.
A store keeps a document's version and whether it was deleted, not the raw payload, so against the store
the rule stops before the last tie-break: an upsert at the version of a stored delete is superseded (it
never resurrects the document), while an upsert at the version of a stored upsert is applied (last
applied wins; two different upserts that share a version are a producer error the store cannot order).
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Optional

from transforms.types import ChangeEvent, StoredDocument, Superseded


def rank(version: int, deleted: bool) -> tuple[int, bool]:
    """The comparable part of the rule that both an event and a store can tell: version, then delete."""
    return (version, deleted)


def precedence(event: ChangeEvent) -> tuple[int, bool, bytes]:
    return (*rank(event.version, event.op == "delete"), event.raw)


def digest(event: ChangeEvent) -> str:
    """A short digest of the raw payload: what keyed state keeps instead of the payload."""
    return hashlib.sha256(event.raw).hexdigest()[:32]


HeldRank = tuple[int, bool, str]
"""What a streaming step keeps per document in keyed state: version, delete, digest of the payload."""


def held_rank(event: ChangeEvent) -> HeldRank:
    return (*rank(event.version, event.op == "delete"), digest(event))


def superseded_in_flight(event: ChangeEvent, held: Optional[HeldRank]) -> Optional[str]:
    """Why `event` loses to the highest event a streaming step already let through for its document
    (`held`), or `None`. The same rule as `precedence` except its last tie-break: state keeps a digest, not
    the payload, so of two different payloads at the same version and op the later arrival goes on (as
    against a store, the last applied wins); the same payload again is a duplicate."""
    if held is None:
        return None
    mine = rank(event.version, event.op == "delete")
    if mine < held[:2]:
        if event.version < held[0]:
            return f"older version {event.version} < {held[0]}"
        return f"same version {event.version} as a delete (a delete wins a tie)"
    if mine == held[:2] and digest(event) == held[2]:
        return "duplicate"
    return None


def stored_rank(stored: StoredDocument) -> Optional[tuple[int, bool]]:
    """The store's rank of the document, `None` when it holds nothing. The delete counts only when no chunk
    is as new as the stored version (chunks of a newer upsert whose state was not recorded yet outrank it)."""
    if stored.version is None:
        return None
    deleted = stored.deleted and all(c.version < stored.version for c in stored.chunks)
    return rank(stored.version, deleted)


def stored_outranks(event: ChangeEvent, stored: StoredDocument) -> Optional[str]:
    """Why the store's state supersedes `event` (an older version, or an upsert at a deleted version), or
    `None` when the event is at least as new (equal ranks: the plan decides between "in sync" and a write)."""
    held = stored_rank(stored)
    mine = rank(event.version, event.op == "delete")
    if held is None or mine >= held:
        return None
    if event.version < held[0]:
        return f"older version {event.version} < stored {held[0]}"
    return f"same version {event.version} as a stored delete (a delete wins a tie)"


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
