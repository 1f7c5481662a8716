"""`mongomock` clients that share one in-memory server, for machines without the mongoeco wire server
(pass `client_factory="tests.mongo_shared:MongoClient"`; in-process runners only)."""
from __future__ import annotations

from typing import Any

import mongomock
from mongomock.store import ServerStore

_STORE = ServerStore()


def MongoClient(uri: str, **_: Any) -> mongomock.MongoClient:  # noqa: N802 - mirrors pymongo's name
    return mongomock.MongoClient(uri, _store=_STORE)
