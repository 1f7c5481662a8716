"""The records that flow through the graph.

`ChangeEvent` and `DeadLetter` are pydantic models because they cross the pipeline's edges (input and the
dead-letter file); the per-chunk records on the hot path are plain dataclasses.
"""
from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator

from transforms.storable import MAX_VERSION, check_metadata, check_string

DocKey = tuple[str, str]
"""`(namespace or "", doc_id)`: the unit of ordering and reconciliation."""

Vector = list[float]


class SourceRef(BaseModel):
    """Where a record came from, precisely enough to find and replay it (file and line, topic/partition/offset...)."""

    model_config = ConfigDict(frozen=True)

    system: str
    position: dict[str, Union[str, int]] = Field(default_factory=dict)

    def describe(self) -> str:
        where = " ".join(f"{k}={v}" for k, v in self.position.items())
        return f"{self.system} {where}".strip()


class ChangeEvent(BaseModel):
    """One validated change to one document.

    An upsert carries `text` (or a `uri` whose content is fetched later); a delete removes every chunk of the
    document. `version` is monotonic per document: the highest version wins, whatever the arrival order.
    `raw` keeps the original bytes so any later stage can dead-letter the record with its payload.
    Every field must be storable by every sink (`transforms.storable`): no NUL or lone surrogate in a string,
    a version within signed 64 bits, metadata of finite JSON data.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    doc_id: StrictStr = Field(min_length=1)
    op: Literal["upsert", "delete"]
    version: StrictInt = Field(ge=0, le=MAX_VERSION)
    text: Optional[StrictStr] = None
    uri: Optional[StrictStr] = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    namespace: Optional[StrictStr] = None
    source: Optional[SourceRef] = None
    raw: bytes = Field(default=b"", repr=False, exclude=True)

    @field_validator("doc_id", "namespace", "text", "uri")
    @classmethod
    def _storable_string(cls, value: Optional[str], info: Any) -> Optional[str]:
        return value if value is None else check_string(value, info.field_name)

    @field_validator("metadata")
    @classmethod
    def _storable_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_metadata(value)

    @model_validator(mode="after")
    def _upsert_has_content(self) -> "ChangeEvent":
        """An empty (or blank) `text` is a document emptied: zero chunks. Neither `text` nor `uri` is an error
        (a misnamed field must not wipe a document)."""
        if self.op == "upsert" and self.text is None and not self.uri:
            raise ValueError("an upsert needs a 'text' (empty for an emptied document) or a 'uri' to fetch")
        return self

    @property
    def key(self) -> DocKey:
        return (self.namespace or "", self.doc_id)


class DeadLetter(BaseModel):
    """A record that could not be applied, with enough context to understand and replay it.

    `payload` is the original input bytes, base64-encoded; `stage` says where it failed (`parse`, `embed`,
    `lookup:qdrant`, `sink:qdrant`, ...).
    """

    stage: str
    error_type: str
    error: str
    payload: str
    source: Optional[SourceRef] = None
    doc_id: Optional[str] = None
    attempts: int = 1
    timestamp: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    @classmethod
    def of(
        cls,
        stage: str,
        error: BaseException | str,
        payload: bytes,
        source: Optional[SourceRef],
        *,
        doc_id: Optional[str] = None,
        attempts: int = 1,
        error_type: Optional[str] = None,
    ) -> "DeadLetter":
        return cls(
            stage=stage,
            error_type=error_type or (type(error).__name__ if isinstance(error, BaseException) else "Error"),
            error=_writable(str(error)),
            payload=base64.b64encode(payload).decode("ascii"),
            source=source,
            doc_id=None if doc_id is None else _writable(doc_id),
            attempts=attempts,
        )

    @classmethod
    def for_event(cls, stage: str, error: BaseException | str, event: ChangeEvent, *, attempts: int = 1,
                  error_type: Optional[str] = None) -> "DeadLetter":
        return cls.of(stage, error, event.raw, event.source, doc_id=event.doc_id, attempts=attempts,
                      error_type=error_type)

    def original_payload(self) -> bytes:
        return base64.b64decode(self.payload)


def _writable(text: str) -> str:
    """`text` with any lone surrogate written as `\\udXXX`, so a dead letter can always be written as JSON."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Chunk:
    """One piece of a document's text, with its deterministic store ID."""

    point_id: str
    chunk_index: int
    text: str
    content_hash: str
    token_count: int


@dataclass(frozen=True)
class StoredChunk:
    """What a store holds for one chunk (the vector is read back so unchanged chunks need no re-embedding)."""

    point_id: str
    chunk_index: int
    version: int
    content_hash: str
    model: str
    vector: Optional[Vector] = None
    chunk_count: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredDocument:
    """A document as a store holds it: its last applied version (from chunks or a delete tombstone)."""

    version: Optional[int] = None
    deleted: bool = False
    chunks: tuple[StoredChunk, ...] = ()

    @property
    def is_empty(self) -> bool:
        return self.version is None and not self.chunks

    @classmethod
    def assemble(cls, chunks: Iterable[StoredChunk], state_version: Optional[int] = None,
                 state_op: Optional[str] = None) -> "StoredDocument":
        """From a store's chunks and its sync-state row (if any): the version is the highest of both (a
        crash after the chunks landed but before the state was recorded still counts), deleted when the
        state is a delete tombstone."""
        ordered = tuple(sorted(chunks, key=lambda c: c.chunk_index))
        versions = [c.version for c in ordered] + ([int(state_version)] if state_version is not None else [])
        return cls(version=max(versions, default=None), deleted=state_op == "delete", chunks=ordered)


@dataclass(frozen=True)
class ChunkRecord:
    """The stored record every sink writes: the schema of `README.md#stored-record`."""

    point_id: str
    doc_id: str
    namespace: Optional[str]
    chunk_index: int
    chunk_count: int
    version: int
    text: str
    content_hash: str
    model: str
    metadata: dict[str, Any]
    vector: Vector

    def payload(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "namespace": self.namespace,
            "chunk_index": self.chunk_index,
            "chunk_count": self.chunk_count,
            "version": self.version,
            "text": self.text,
            "content_hash": self.content_hash,
            "model": self.model,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class DocumentPlan:
    """What must happen to one document: its new chunks, which of them need embedding, which IDs go stale."""

    event: ChangeEvent
    chunks: tuple[Chunk, ...]
    reused_vectors: dict[int, Vector]
    stale_ids: tuple[str, ...]
    in_sync: bool = False

    @property
    def indexes_to_embed(self) -> list[int]:
        return [c.chunk_index for c in self.chunks if c.chunk_index not in self.reused_vectors]


@dataclass(frozen=True)
class FanOutPlan:
    """One document's change for every sink at once: its chunks, the vectors any sink already holds for
    unchanged chunks (pooled, so a chunk is embedded at most once), and, for each sink that needs a write,
    the IDs that sink must delete. Sinks that are newer (superseded) or already in sync are absent."""

    event: ChangeEvent
    chunks: tuple[Chunk, ...]
    reused_vectors: dict[int, Vector]
    stale_ids: dict[str, tuple[str, ...]]

    @property
    def sinks(self) -> tuple[str, ...]:
        return tuple(sorted(self.stale_ids))

    @property
    def indexes_to_embed(self) -> list[int]:
        return [c.chunk_index for c in self.chunks if c.chunk_index not in self.reused_vectors]


@dataclass(frozen=True)
class SinkOutcome:
    """What one sink did with one document's write: applied, dead-lettered (`applied` false), or superseded
    (a streaming writer had already admitted a newer version of the document). `sinks`: how many sinks the
    event's writes went to (each reports one outcome)."""

    sink: str
    event: ChangeEvent
    applied: bool
    superseded: bool = False
    sinks: int = 1


@dataclass(frozen=True)
class DocumentWrite:
    """A complete, ordered change for one document: upsert `records`, then delete `stale_ids`."""

    event: ChangeEvent
    records: tuple[ChunkRecord, ...]
    stale_ids: tuple[str, ...]
    reused_chunks: int = 0
    sinks: int = 1
    """How many sinks get a write for this event (what a streaming settle waits for)."""

    @property
    def key(self) -> DocKey:
        return self.event.key

    @property
    def is_delete(self) -> bool:
        return self.event.op == "delete"


@dataclass(frozen=True)
class Superseded:
    """An event that lost to a newer (or identical) version of its document, and why."""

    event: ChangeEvent
    reason: str


@dataclass(frozen=True)
class RawRecord:
    """One input record as a source read it: the original bytes and where they came from."""

    payload: bytes
    source: SourceRef
