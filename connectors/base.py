"""What every vector-store sink shares: the store interface, its config, and the two DoFns that use it.

`PlanDocumentWrites` reads what every sink holds for a bundle of documents (one batched look-up per sink),
then plans each winning event once for all sinks: superseded if every sink is newer, in sync if nothing
changed anywhere, else the chunks to embed (vectors any sink holds for unchanged text are reused) and, per
sink that needs it, the IDs to delete.
`WriteDocuments` applies complete document writes to one sink in batches: upsert the new chunks, then delete the stale
ones and record the document's version. Transient errors are retried with exponential backoff and jitter;
a permanent error, or a transient one that outlives the retries, dead-letters the affected events with
stage `sink:<name>` (a failing batch is split so one poison document does not take the others with it).
Client objects are made once per DoFn instance in `setup` and closed in `teardown`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Mapping, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.windowed_value import WindowedValue
from pydantic import BaseModel, ConfigDict, Field, field_validator

from transforms import counters
from transforms.chunking import TokenChunker
from transforms.latest import held_rank, superseded_in_flight
from transforms.layouts import PayloadLayout
from transforms.model import ModelRef, local_model_path
from transforms.ordering import DOC_KEYED
from transforms.reconcile import plan_for_sinks
from transforms.stages import DEAD_LETTERS, SUPERSEDED
from transforms.retry import GaveUp, RetryPolicy, call_with_retries
from transforms.types import ChangeEvent, DeadLetter, DocKey, DocumentWrite, SinkOutcome, StoredDocument, Superseded

TO_EMBED = "to_embed"


class StoreConfigError(RuntimeError):
    """The store cannot be used as configured (missing collection, dimension mismatch, bad credentials)."""


@dataclass(frozen=True)
class SearchHit:
    """One chunk a nearest-neighbour search found: its cosine similarity to the query and its stored record."""

    score: float
    doc_id: str
    namespace: Optional[str]
    chunk_index: int
    version: int
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


class VectorStore(ABC):
    """One vector store, as the pipeline sees it. Implementations hold the client."""

    @abstractmethod
    def ensure_ready(self, dimension: int) -> None:
        """Create the collection if allowed, else check it; raise `StoreConfigError` when unusable."""

    @abstractmethod
    def read_documents(self, keys: Sequence[DocKey]) -> dict[DocKey, StoredDocument]:
        """What the store holds for each key (chunks with vectors, and the last applied version)."""

    @abstractmethod
    def write_documents(self, writes: Sequence[DocumentWrite]) -> None:
        """Apply each write: upsert its records, then delete its stale IDs (all chunks for a delete), and
        remember the document's version so an older event can never resurrect or overwrite it."""

    def is_transient(self, error: BaseException) -> bool:
        """Whether retrying may help (timeouts, connection resets, 5xx, rate limits)."""
        return isinstance(error, (TimeoutError, ConnectionError))

    def close(self) -> None:
        """Release the client."""

    @abstractmethod
    def count(self) -> int:
        """Chunk vectors in the store (for the run summary)."""

    def nearest(self, vector: Sequence[float], limit: int, metadata: Optional[Mapping[str, Any]] = None,
                namespace: Optional[str] = None) -> list[SearchHit]:
        """The `limit` chunks nearest to `vector` (cosine), best first, among those whose event metadata holds
        every `key: value` of `metadata` and, when `namespace` is given, of that event namespace. Only chunks
        the store holds now: a deleted or shrunk document's old chunks are gone from it."""
        raise NotImplementedError(f"{type(self).__name__} has no nearest-neighbour search")


class StoreConfig(BaseModel):
    """Settings of one sink; validated on construction. Subclasses name the sink type and build its store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Optional[str] = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    """Label in dead-letter stages (`sink:<name>`) and metrics; default: the sink type. Must be unique."""
    retry: RetryPolicy = RetryPolicy()
    batch_size: int = Field(default=256, ge=1)
    """Chunk records per write batch."""
    batch_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Approximate bytes (text and vectors) per write batch; a batch is flushed at whichever limit comes first."""
    payload_layout: PayloadLayout = "native"
    """How chunk records are shaped (`transforms.layouts`): `native`, or what LangChain's or LlamaIndex's
    vector store for this sink reads without glue."""
    layouts: ClassVar[tuple[str, ...]] = ("native",)
    """The payload layouts this sink can write."""

    @field_validator("payload_layout")
    @classmethod
    def _layout_supported(cls, layout: str) -> str:
        if layout not in cls.layouts:
            sink = cls.model_fields["type"].default if "type" in cls.model_fields else cls.__name__
            raise ValueError(f"--payload_layout {layout} is not available for the {sink} sink "
                             f"(it writes: {', '.join(cls.layouts)})")
        return layout

    @property
    def sink_type(self) -> str:
        raise NotImplementedError

    @property
    def sink_name(self) -> str:
        return self.name or self.sink_type

    def create_store(self) -> VectorStore:
        raise NotImplementedError

    def display(self) -> dict[str, Any]:
        """Settings safe to log (no secrets)."""
        return {"sink": self.sink_name}

    def run_scope(self) -> contextlib.AbstractContextManager[None]:
        """Held around a whole run by the entry point (for stores that keep something open across steps)."""
        return contextlib.nullcontext()


def write_bytes(write: DocumentWrite) -> int:
    """Rough encoded size of a write (text, vectors as JSON numbers, fixed overhead per record)."""
    return sum(len(r.text.encode("utf-8")) + 12 * len(r.vector) + 256 for r in write.records) + 64 * (
        1 + len(write.stale_ids))


class BundleBuffer:
    """Elements with their window and timestamp, so outputs emitted in `finish_bundle` keep them."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, Any, Any]] = []

    def add(self, element: Any, timestamp: Any, window: Any) -> None:
        self.items.append((element, timestamp, window))

    def take(self) -> list[tuple[Any, Any, Any]]:
        items, self.items = self.items, []
        return items


def emit_output(value: Any, timestamp: Any, window: Any, tag: Optional[str] = None) -> Any:
    """`value` with its own timestamp and window (that of the element it came from), whenever a buffer is
    flushed: in `process` (where a bare value would take the current element's) or in `finish_bundle`."""
    out = WindowedValue(value, timestamp, [window])
    return beam.pvalue.TaggedOutput(tag, out) if tag else out


def document_key(event: ChangeEvent) -> DocKey:
    return event.key


class SinkNotReadyError(RuntimeError):
    """A sink could not be made ready on a worker (remote runners check the sinks there, not at launch)."""


def prepare_on_worker(config: "StoreConfig", dimension: int, attempts: int = 3) -> VectorStore:
    """A client for `config`, made ready for `dimension` (collection or table created or checked) on a worker,
    tried again after a moment (workers starting together race to create the same table); then
    `SinkNotReadyError` naming the sink and the cause, which fails the job."""
    for attempt in range(1, attempts + 1):
        store = None
        try:
            store = config.create_store()
            store.ensure_ready(dimension)
            return store
        except Exception as exc:  # noqa: BLE001 - unreachable, refused, or a concurrent creation
            _close_quietly(store)
            if isinstance(exc, StoreConfigError) and not _unreachable(store, exc):
                raise SinkNotReadyError(f"sink {config.sink_name}: {exc}") from exc
            if attempt == attempts:
                raise SinkNotReadyError(f"sink {config.sink_name} is not reachable or not ready from this worker: "
                                        f"{type(exc).__name__}: {exc}") from exc
            time.sleep(attempt)
    raise AssertionError("unreachable")


def _unreachable(store: Optional[VectorStore], error: StoreConfigError) -> bool:
    """A configuration error that a store raised because its server could not be reached (worth trying again)."""
    return store is not None and error.__cause__ is not None and store.is_transient(error.__cause__)


def _close_quietly(store: Optional[VectorStore]) -> None:
    with contextlib.suppress(Exception):
        if store is not None:
            store.close()


class _BufferedStoreDoFn(beam.DoFn):
    """A DoFn that holds one client per store (made in `setup`, closed in `teardown`) and handles its input
    in buffered groups: when the buffer's `_weight` reaches `_limit` or its `_size` reaches `_byte_limit`,
    and at the end of every bundle."""

    def __init__(self, store_configs: Sequence[StoreConfig], prepare_dimension: Optional[int] = None) -> None:
        names = [c.sink_name for c in store_configs]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"sinks need unique names, got {names}")
        self._configs = tuple(store_configs)
        self._prepare_dimension = prepare_dimension

    def _limit(self) -> int:
        raise NotImplementedError

    def _byte_limit(self) -> Optional[int]:
        return None

    def _weight(self, element: Any) -> int:
        return 1

    def _size(self, element: Any) -> int:
        return 0

    def _handle(self, items: list[tuple[Any, Any, Any]]) -> Iterator[Any]:
        raise NotImplementedError

    def setup(self) -> None:
        """One client per store; with `prepare_dimension` (remote runners: the launcher does not reach the
        sinks) each store is also made ready here, and one that cannot be fails the job with one message."""
        self._stores: dict[str, VectorStore] = {}
        for config in self._configs:
            self._stores[config.sink_name] = (config.create_store() if self._prepare_dimension is None
                                              else prepare_on_worker(config, self._prepare_dimension))

    def display_data(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"batch_limit": self._limit()}
        for config in self._configs:
            shown.update({f"{config.sink_name}.{k}": v for k, v in config.display().items()})
        return shown

    def start_bundle(self) -> None:
        self._buffer = BundleBuffer()
        self._buffered = 0
        self._buffered_bytes = 0

    def process(self, element: Any, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam) -> Iterator[Any]:
        self._buffer.add(element, timestamp, window)
        self._buffered += self._weight(element)
        self._buffered_bytes += self._size(element)
        byte_limit = self._byte_limit()
        if self._buffered >= self._limit() or (byte_limit is not None and self._buffered_bytes >= byte_limit):
            yield from self._flush()

    def finish_bundle(self) -> Iterator[Any]:
        yield from self._flush()

    def teardown(self) -> None:
        for store in getattr(self, "_stores", {}).values():
            store.close()
        self._stores = {}

    def _flush(self) -> Iterator[Any]:
        items = self._buffer.take()
        self._buffered = 0
        self._buffered_bytes = 0
        if items:
            yield from self._handle(items)


class PlanDocumentWrites(_BufferedStoreDoFn):
    """Winning events → `FanOutPlan`s keyed by document, plus tagged `to_embed` chunk texts, `superseded`
    (events settled without a write: older than every sink, or in sync everywhere) and `dead_letters`
    (stage `chunk`, or `lookup:<sink>` when a store cannot be read: then the event is written
    nowhere, so the sinks stay alike). Events superseded or already in sync everywhere are counted and go
    no further than the `superseded` output."""

    def __init__(self, store_configs: Sequence[StoreConfig], model_path: Union[ModelRef, str], model_id: str,
                 chunk_size: Optional[int], chunk_overlap: int, lookup_batch_size: int = 256,
                 embed_sort_window: int = 4096, prepare_dimension: Optional[int] = None,
                 key_of: Callable[[ChangeEvent], Any] = document_key) -> None:
        """`key_of`: the key plans and chunks to embed carry (the document's; streaming: the event's own,
        `transforms.ordering.flight_key`, so two versions in flight never mix)."""
        super().__init__(store_configs, prepare_dimension)
        self._key_of = key_of
        self._model_path = model_path
        self._model_id = model_id
        self._chunk_size = chunk_size
        self._chunk_overlap = chunk_overlap
        self._lookup_batch_size = lookup_batch_size
        self._embed_sort_window = embed_sort_window
        self._superseded = counters.counter(counters.EVENTS_SUPERSEDED)
        self._applied = counters.counter(counters.EVENTS_APPLIED)
        self._in_sync = counters.counter(counters.EVENTS_IN_SYNC)
        self._skipped = counters.counter(counters.CHUNKS_SKIPPED)

    def setup(self) -> None:
        super().setup()
        tokenizer_file = isinstance(self._model_path, ModelRef) and self._model_path.tokenizer_file
        self._chunker = TokenChunker.from_model_path(local_model_path(self._model_path), self._chunk_size,
                                                     self._chunk_overlap, tokenizer_file)  # resolved and verified here

    def _limit(self) -> int:
        return self._lookup_batch_size

    def _handle(self, items: list[tuple[ChangeEvent, Any, Any]]) -> Iterator[Any]:
        keys = list({event.key for event, _, _ in items})
        stored: dict[str, dict[DocKey, StoredDocument]] = {}
        for config in self._configs:
            name, store = config.sink_name, self._stores[config.sink_name]
            try:
                stored[name], _ = call_with_retries(lambda: store.read_documents(keys), store.is_transient,
                                                    config.retry)
            except GaveUp as failure:
                for event, ts, win in items:
                    yield emit_output(DeadLetter.for_event(f"lookup:{name}", failure.cause, event,
                                                     attempts=failure.attempts), ts, win, DEAD_LETTERS)
                return
        for event, ts, win in items:
            by_sink = {name: docs.get(event.key, StoredDocument()) for name, docs in stored.items()}
            yield from self._plan_one(event, by_sink, ts, win)
        if len(self._to_embed) >= self._embed_sort_window:
            yield from self._release_chunks()

    def start_bundle(self) -> None:
        super().start_bundle()
        self._to_embed: list[tuple[int, Any, Any, Any]] = []

    def finish_bundle(self) -> Iterator[Any]:
        yield from super().finish_bundle()
        yield from self._release_chunks()

    def _release_chunks(self) -> Iterator[Any]:
        """Length-aware batching: chunks go to the embedding step sorted by token count (over up to
        `embed_sort_window` chunks of the bundle), so each batch holds similar lengths and little padding."""
        pending, self._to_embed = self._to_embed, []
        pending.sort(key=lambda item: item[0])
        for _, element, ts, win in pending:
            yield emit_output(element, ts, win, TO_EMBED)

    def _plan_one(self, event: ChangeEvent, stored: dict[str, StoredDocument], ts: Any, win: Any) -> Iterator[Any]:
        """Yields the plan (or a dead letter); queues the chunks to embed for `_release_chunks`."""
        try:
            plan = plan_for_sinks(event, stored, self._chunker, self._model_id)
        except Exception as exc:  # noqa: BLE001 - chunking or planning failed for this document only
            yield emit_output(DeadLetter.for_event("chunk", exc, event), ts, win, DEAD_LETTERS)
            return
        if isinstance(plan, Superseded):
            self._superseded.inc()
            yield emit_output(event, ts, win, SUPERSEDED)
            return
        if not plan.stale_ids:  # no sink needs a write
            self._applied.inc()
            self._in_sync.inc()
            self._skipped.inc(len(plan.chunks))
            yield emit_output(event, ts, win, SUPERSEDED)
            return
        key = self._key_of(event)
        yield emit_output((key, plan), ts, win)
        for chunk in plan.chunks:
            if chunk.chunk_index not in plan.reused_vectors:
                element = ((key, chunk.chunk_index), (chunk.text, chunk.token_count))
                self._to_embed.append((chunk.token_count, element, ts, win))


class WriteDocuments(_BufferedStoreDoFn):
    """Applies `DocumentWrite`s to one store in batches of about `batch_size` records (or `batch_bytes`);
    outputs a `SinkOutcome` for every write, and tagged `dead_letters` (stage `sink:<name>`)."""

    def __init__(self, store_config: StoreConfig, prepare_dimension: Optional[int] = None) -> None:
        super().__init__([store_config], prepare_dimension)
        self._config = store_config
        self._name = name = store_config.sink_name
        self._upserted = counters.counter(counters.VECTORS_UPSERTED)
        self._deleted = counters.counter(counters.VECTORS_DELETED)
        self._retries = counters.counter(counters.SINK_RETRIES)
        self._sink_upserted = counters.sink_counter(name, counters.VECTORS_UPSERTED)
        self._sink_deleted = counters.sink_counter(name, counters.VECTORS_DELETED)
        self._sink_dead = counters.sink_counter(name, counters.DEAD_LETTERS)
        self._sink_retried = counters.sink_counter(name, counters.SINK_RETRIES)
        self._latency = counters.sink_latency(name)

    def _limit(self) -> int:
        return self._config.batch_size

    def _byte_limit(self) -> Optional[int]:
        return self._config.batch_bytes

    def _weight(self, write: DocumentWrite) -> int:
        return max(1, len(write.records))

    def _size(self, write: DocumentWrite) -> int:
        return write_bytes(write)

    def _handle(self, items: list[tuple[DocumentWrite, Any, Any]]) -> Iterator[Any]:
        yield from self._write(items)

    def _write(self, items: list[tuple[DocumentWrite, Any, Any]]) -> Iterator[Any]:
        store = self._stores[self._name]
        writes = [w for w, _, _ in items]
        started = time.monotonic()
        try:
            _, attempts = call_with_retries(lambda: store.write_documents(writes), store.is_transient,
                                            self._config.retry, on_retry=self._count_retry)
        except GaveUp as failure:
            if not failure.transient and len(items) > 1:
                middle = len(items) // 2  # isolate the poison document(s); the rest still land
                yield from self._write(items[:middle])
                yield from self._write(items[middle:])
                return
            stage = f"sink:{self._name}"
            for write, ts, win in items:
                self._sink_dead.inc()
                yield emit_output(DeadLetter.for_event(stage, failure.cause, write.event, attempts=failure.attempts),
                            ts, win, DEAD_LETTERS)
                yield emit_output(SinkOutcome(self._name, write.event, applied=False, sinks=write.sinks), ts, win)
            return
        self._latency.update(int((time.monotonic() - started) * 1000))
        for write, ts, win in items:
            upserted, deleted = len(write.records), len(write.stale_ids)
            self._upserted.inc(upserted)
            self._deleted.inc(deleted)
            self._sink_upserted.inc(upserted)
            self._sink_deleted.inc(deleted)
            yield emit_output(SinkOutcome(self._name, write.event, applied=True, sinks=write.sinks), ts, win)

    def _count_retry(self, error: BaseException, attempt: int) -> None:
        self._retries.inc()
        self._sink_retried.inc()


class WriteDocumentsInOrder(WriteDocuments):
    """Streaming's `WriteDocuments`, keyed by document: a write goes to the store only if no write this step
    admitted for the document before outranks it (`transforms.latest.superseded_in_flight`); otherwise its
    outcome is `superseded` and nothing is written, so an older version never lands after a newer one, with
    or without a conditional write in the store. A newer write of a document still in the buffer replaces
    the older one (superseded). Each write also deletes the chunks the previous admitted write of the
    document added and it no longer has (its plan may have been made before that write landed)."""

    ADMITTED = ReadModifyWriteStateSpec("admitted", PickleCoder())

    def process(self, keyed: tuple[DocKey, DocumentWrite],  # type: ignore[override]
                timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam,
                admitted=beam.DoFn.StateParam(ADMITTED)) -> Iterator[Any]:
        _, write = keyed
        held = admitted.read()
        if superseded_in_flight(write.event, held[0] if held is not None else None) is not None:
            yield self._superseded_outcome(write)
            return
        for i, (buffered, ts, win) in enumerate(self._buffer.items):
            if buffered.key == write.key:  # an older write of this document waits in the buffer: it loses
                del self._buffer.items[i]
                yield WindowedValue(self._superseded_outcome(buffered), ts, [win])
                break
        new_ids = {r.point_id for r in write.records}
        earlier = set(held[1]) if held is not None else set()
        stale = tuple(sorted(set(write.stale_ids) | (earlier - new_ids)))
        admitted.write((held_rank(write.event), tuple(sorted(new_ids))))
        yield from super().process(dataclasses.replace(write, stale_ids=stale), timestamp, window)

    def _superseded_outcome(self, write: DocumentWrite) -> SinkOutcome:
        return SinkOutcome(self._name, write.event, applied=False, superseded=True, sinks=write.sinks)


class WriteToSink(beam.PTransform):
    """`DocumentWrite`s → one sink: outputs `outcomes` and `dead_letters`. `in_order` (streaming): keyed by
    document through `WriteDocumentsInOrder`; else `WriteDocuments`."""

    def __init__(self, store_config: StoreConfig, prepare_dimension: Optional[int], in_order: bool) -> None:
        super().__init__()
        self._config, self._prepare, self._in_order = store_config, prepare_dimension, in_order

    def expand(self, writes: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        if not self._in_order:
            return writes | beam.ParDo(WriteDocuments(self._config, self._prepare)).with_outputs(
                DEAD_LETTERS, main="outcomes")
        return (writes
                | "ByDocument" >> beam.Map(lambda w: (w.key, w)).with_output_types(DOC_KEYED)
                | "InOrder" >> beam.ParDo(WriteDocumentsInOrder(self._config, self._prepare)).with_outputs(
                    DEAD_LETTERS, main="outcomes"))
