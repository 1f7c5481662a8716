"""Kafka source in pure Python (confluent-kafka; no Java expansion service): a splittable DoFn over topic
partitions whose restriction is an offset range, so a runner can split and checkpoint it.

Each partition is read from its consumer group's committed offset (or the earliest offset when it has
none) up to the end offset seen at start (`stop_at_end`, for backfills, tests and successive bounded runs)
or without end (streaming runners: the DoFn checkpoints with `defer_remainder` when the partition is idle).
Offsets are committed only once every record up to them is finished (applied to every sink, superseded or
dead-lettered): kill the pipeline at any point and the next run starts from the last committed offset;
replays are harmless because the sinks are idempotent.

A record that crashes every run (SIGKILL, OOM) would block its partition for good: so when a run starts
reading a partition at its committed offset o, it first commits o again with metadata counting the runs that
started at o (`{"vector_sync": {"offset": o, "runs": n}}`); once n exceeds `max_delivery_attempts`, the
record at o is dead-lettered unprocessed (stage `read`, `TooManyDeliveries`) and the partition moves past
it. This counts runs that started at the same offset, an approximation of a per-offset failure count (a
run that crashed after other partitions' records is counted too; the count restarts whenever a commit
moves the offset).

Values are ChangeEvent JSON, or any JSON mapped with `doc_id_field`, `text_fields`, `version_field`
(dotted paths); an optional JSON Schema validates values first. The record key is the doc_id when the value
has none, and a tombstone (null value) deletes the key's document. Dead letters can also be produced to
`dead_letter_topic` in the Kafka Connect style.

Every record of a run takes its version from one source (`version_from`), so a tombstone and a value are
always on the same scale: `field` (default): a value's `version` (or `version_field`), a tombstone's
`version` header (a decimal integer); a record without one is dead-lettered. `offset`: the record offset,
for values and tombstones alike (a value's own `version` is not read; offsets order a key only within its
partition). `timestamp`: the record timestamp in ms, for both (a record without one is dead-lettered).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Tuple, Union

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, SetStateSpec
from apache_beam.utils.timestamp import Duration, Timestamp
from pydantic import Field, field_validator, model_validator

from connectors.dead_letters import DurableDeadLetterStep
from connectors.secrets import SecretRef
from connectors.sources import SourceConfig, SourceConfigError, too_many_deliveries
from transforms import counters
from transforms.parse import RecordError, event_or_dead_letter, load_json, validate_event
from transforms.stages import DEAD_LETTERS
from transforms.types import ChangeEvent, DeadLetter, RawRecord, SourceRef

SYSTEM = "kafka"
VERSION_HEADER = "version"
UNBOUNDED_END = sys.maxsize
_SECRET_WORDS = ("password", "secret", "passphrase")


def is_secret_setting(key: str) -> bool:
    """librdkafka settings whose value is a secret: passwords, secrets, passphrases, PEM private keys and the
    OAUTHBEARER config (e.g. `sasl.password`, `ssl.key.password`, `ssl.key.pem`,
    `sasl.oauthbearer.client.secret`)."""
    key = key.lower()
    return any(w in key for w in _SECRET_WORDS) or key.endswith("key.pem") or key == "sasl.oauthbearer.config"


class KafkaConfig(SourceConfig):
    """`bootstrap` servers, `topics`, consumer `group`; `client_config` holds extra librdkafka settings
    (security included). The value of a secret setting (`is_secret_setting`) is a `SecretRef` (see
    connectors/secrets.py), resolved where the client is made and never logged."""

    type: Literal["kafka"] = "kafka"
    bootstrap: str
    topics: tuple[str, ...] = Field(min_length=1)
    group: str
    stop_at_end: bool = False
    client_config: dict[str, Union[str, SecretRef]] = Field(default_factory=dict, repr=False)
    doc_id_field: Optional[str] = None
    text_fields: tuple[str, ...] = ()
    version_field: Optional[str] = None
    version_from: Literal["field", "offset", "timestamp"] = "field"
    json_schema: Optional[str] = None
    dead_letter_topic: Optional[str] = None
    poll_timeout_s: float = 1.0
    partition_poll_s: float = Field(default=60.0, gt=0)
    """An unbounded read lists the topics' partitions this often and starts reading any new one."""
    idle_timeout_s: float = 30.0
    """A bounded read that sees no record for this long before reaching its end offset fails (a broker problem)."""
    max_delivery_attempts: int = Field(default=5, ge=1)
    """Runs that may start at the same committed offset before its record is dead-lettered unprocessed."""

    @field_validator("client_config", mode="before")
    @classmethod
    def _secrets_by_reference(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {k: SecretRef.model_validate(v) if is_secret_setting(str(k)) and isinstance(v, str) else v
                for k, v in value.items()}
    @model_validator(mode="after")
    def _one_version_source(self) -> "KafkaConfig":
        if self.version_field and self.version_from != "field":
            raise ValueError(f"--version_field {self.version_field} and --kafka_version_from {self.version_from} "
                             "name two version sources: a topic's values and tombstones need one (drop one)")
        return self

    def client_settings(self, **extra: Any) -> dict[str, Any]:
        """The consumer's settings, secrets resolved (call it where the client is made)."""
        resolved = {k: v.resolve() if isinstance(v, SecretRef) else v for k, v in self.client_config.items()}
        return {"bootstrap.servers": self.bootstrap, "group.id": self.group, "enable.auto.commit": False,
                "enable.partition.eof": False, **resolved, **extra}

    def read(self) -> beam.PTransform:
        return ReadKafka(self)

    def parser(self) -> "KafkaRecordParser":
        return KafkaRecordParser(self)

    def acknowledge(self) -> beam.PTransform:
        return CommitOffsets(self)

    def dead_letter_sink(self) -> Optional[beam.PTransform]:
        if not self.dead_letter_topic:
            return None
        return beam.ParDo(ProduceDeadLetters(self, self.dead_letter_topic))

    @property
    def unbounded(self) -> bool:
        return not self.stop_at_end

    def check(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(self.client_settings())
        try:
            metadata = consumer.list_topics(timeout=10)
            missing = [t for t in self.topics if t not in metadata.topics or metadata.topics[t].error is not None]
            if missing:
                raise SourceConfigError(f"Kafka topic(s) {missing} not found at {self.bootstrap}")
        except SourceConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - one start-up line
            raise SourceConfigError(f"Kafka at {self.bootstrap} cannot be used: {type(exc).__name__}: {exc}") from exc
        finally:
            consumer.close()
        if self.json_schema and not Path(self.json_schema).is_file():
            raise SourceConfigError(f"--kafka_json_schema {self.json_schema}: no such file")

    def backlog(self) -> dict[tuple[tuple[str, str], ...], int]:
        """Per partition: the end offset less the group's committed offset (or the earliest one)."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(self.client_settings())
        try:
            metadata = consumer.list_topics(timeout=10)
            partitions = [TopicPartition(t, p) for t in self.topics if t in metadata.topics
                          for p in sorted(metadata.topics[t].partitions)]
            committed = {(c.topic, c.partition): c.offset for c in consumer.committed(partitions, timeout=10)}
            found = {}
            for tp in partitions:
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                start = committed[(tp.topic, tp.partition)]
                found[(("topic", tp.topic), ("partition", str(tp.partition)))] = high - (start if start >= 0 else low)
            return found
        finally:
            consumer.close()

    def display(self) -> dict[str, Any]:
        safe = {k: ("***" if isinstance(v, SecretRef) else v) for k, v in self.client_config.items()}
        return {"source": "kafka", "bootstrap": self.bootstrap, "topics": ",".join(self.topics), "group": self.group,
                "client_config": json.dumps(safe, sort_keys=True)}


# --- reading -------------------------------------------------------------------------------------------------

class _ListPartitions(beam.DoFn):
    def __init__(self, config: KafkaConfig) -> None:
        self._config = config

    def process(self, _: Any) -> Iterator[tuple[str, int]]:
        from confluent_kafka import Consumer

        consumer = Consumer(self._config.client_settings())
        try:
            metadata = consumer.list_topics(timeout=10)
            for topic in self._config.topics:
                for partition in sorted(metadata.topics[topic].partitions):
                    yield topic, partition
        finally:
            consumer.close()


class _NewPartitions(beam.DoFn):
    """Per topic, across the stream: each partition once, the first time a listing shows it (keyed state)."""

    SEEN = SetStateSpec("seen", VarIntCoder())

    def process(self, listed: tuple[str, int], seen: Any = beam.DoFn.StateParam(SEEN)) -> Iterator[tuple[str, int]]:
        topic, partition = listed
        if partition in set(seen.read()):
            return
        seen.add(partition)
        yield topic, partition


class _ReadPartition(beam.DoFn, RestrictionProvider):
    """Splittable: the restriction of a `(topic, partition)` is an offset range, from the committed offset
    (or the earliest) to the end offset seen now (`stop_at_end`) or without end."""

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._read = counters.counter(counters.RECORDS_READ)

    def initial_restriction(self, element: tuple[str, int]) -> OffsetRange:
        from confluent_kafka import Consumer, TopicPartition

        topic, partition = element
        consumer = Consumer(self._config.client_settings())
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            (committed,) = consumer.committed([TopicPartition(topic, partition)], timeout=10)
            start = committed.offset if committed.offset >= 0 else low
            start = min(max(start, low), high)
            if start < high:  # a record waits at `start`: this run is one more attempt at it
                runs = _runs_started_at(committed.metadata, start) + 1
                consumer.commit(offsets=[TopicPartition(topic, partition, start, metadata=_runs_metadata(start, runs))],
                                asynchronous=False)
        finally:
            consumer.close()
        return OffsetRange(start, high if self._config.stop_at_end else UNBOUNDED_END)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element: Any, restriction: OffsetRange) -> int:
        return restriction.size()

    def setup(self) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer(self._config.client_settings())

    def teardown(self) -> None:
        self._consumer.close()

    def process(self, element: tuple[str, int],
                tracker: OffsetRestrictionTracker = beam.DoFn.RestrictionParam(),
                watermark: Any = beam.DoFn.WatermarkEstimatorParam(
                    ManualWatermarkEstimator.default_provider())) -> Iterator[Any]:
        """Claims each record's offset and outputs it at its Kafka timestamp. The watermark is the highest
        timestamp read so far (Kafka timestamps are not monotonic within a partition: it never goes back);
        when an unbounded partition is idle (no record in a poll: caught up, or empty), the watermark moves
        to now and the rest of the range is deferred (a checkpoint the runner resumes), so an idle or empty
        partition never holds the pipeline's watermark back."""
        from confluent_kafka import KafkaError, TopicPartition

        topic, partition = element
        restriction = tracker.current_restriction()
        if restriction.start >= restriction.stop:
            return
        poisoned, runs = self._poisoned(topic, partition)
        self._consumer.assign([TopicPartition(topic, partition, restriction.start)])
        idle_since = time.monotonic()
        expected = restriction.start  # the next offset; a record after it marks a gap (compaction, markers)
        try:
            while True:
                messages = self._consumer.consume(num_messages=500, timeout=self._config.poll_timeout_s)
                real = [m for m in messages if m.error() is None]
                for m in messages:
                    if m.error() is not None and m.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"Kafka {topic}[{partition}]: {m.error()}")
                if not real:
                    if restriction.stop == UNBOUNDED_END:
                        advance_watermark(watermark, Timestamp.now())
                        tracker.defer_remainder(Duration.of(1))  # idle: checkpoint, resume later
                        return
                    position = self._consumer.position([TopicPartition(topic, partition)])[0].offset
                    if position >= restriction.stop:
                        tracker.try_claim(restriction.stop)  # the rest of the range holds no record
                        return
                    if time.monotonic() - idle_since > self._config.idle_timeout_s:
                        raise TimeoutError(f"Kafka {topic}[{partition}]: no record for "
                                           f"{self._config.idle_timeout_s}s before offset {restriction.stop}")
                    continue
                idle_since = time.monotonic()
                for m in real:
                    if not tracker.try_claim(m.offset()):
                        return
                    self._read.inc()
                    gap_from = expected if m.offset() > expected else None
                    expected = m.offset() + 1
                    record, timestamp = _raw_record(m, gap_from), max(0, m.timestamp()[1]) / 1000
                    if m.offset() == poisoned:
                        letter = too_many_deliveries(runs, self._config.max_delivery_attempts, record.payload,
                                                     record.source)
                        yield beam.pvalue.TaggedOutput(DEAD_LETTERS, beam.window.TimestampedValue(letter, timestamp))
                        continue
                    yield beam.window.TimestampedValue(record, timestamp)
                advance_watermark(watermark, Timestamp.of(max(0, max(m.timestamp()[1] for m in real)) / 1000))
        finally:
            self._consumer.unassign()


    def _poisoned(self, topic: str, partition: int) -> tuple[Optional[int], int]:
        """`(offset, runs)`: the committed offset when more than `max_delivery_attempts` runs started there
        (its record is dead-lettered unprocessed), else `(None, runs)`."""
        from confluent_kafka import TopicPartition

        (committed,) = self._consumer.committed([TopicPartition(topic, partition)], timeout=10)
        runs = _runs_started_at(committed.metadata, committed.offset)
        return (committed.offset if runs > self._config.max_delivery_attempts else None), runs


def advance_watermark(estimator: ManualWatermarkEstimator, timestamp: Timestamp) -> None:
    """Moves the estimator's watermark up to `timestamp`; never back (an older timestamp changes nothing)."""
    current = estimator.current_watermark()
    if current is None or timestamp > current:
        estimator.set_watermark(timestamp)


def _runs_metadata(offset: int, runs: int) -> str:
    return json.dumps({"vector_sync": {"offset": offset, "runs": runs}})


def _runs_started_at(metadata: Optional[str], offset: int) -> int:
    """Runs that started reading at `offset`, as committed metadata records them (0 for any other metadata)."""
    try:
        counted = json.loads(metadata or "")["vector_sync"]
        return int(counted["runs"]) if int(counted["offset"]) == offset else 0
    except (ValueError, TypeError, KeyError):
        return 0


class _ReadPartitionUnbounded(_ReadPartition):
    """The same read without an end offset: its output is unbounded (streaming runners)."""

    @beam.DoFn.unbounded_per_element()
    def process(self, element: tuple[str, int],
                tracker: OffsetRestrictionTracker = beam.DoFn.RestrictionParam(),
                watermark: Any = beam.DoFn.WatermarkEstimatorParam(
                    ManualWatermarkEstimator.default_provider())) -> Iterator[Any]:
        yield from super().process(element, tracker, watermark)


def _raw_record(message: Any, gap_from: Optional[int] = None) -> RawRecord:
    """The record as the pipeline carries it; `gap_from`: the offsets from there up to this record's hold no
    record (compaction, transaction markers), as the reader saw (`gap_from` in the position)."""
    key = message.key()
    position: dict[str, Union[str, int]] = {"topic": message.topic(), "partition": message.partition(),
                                            "offset": message.offset(), "timestamp_ms": message.timestamp()[1]}
    if gap_from is not None:
        position["gap_from"] = gap_from
    if key is not None:
        position["key"] = key.decode("utf-8", errors="backslashreplace")
    if message.value() is None:
        position["tombstone"] = 1
    header = next((v for k, v in message.headers() or () if k == VERSION_HEADER), None)
    if header is not None:
        position["version_header"] = header.decode("utf-8", errors="backslashreplace")
    return RawRecord(message.value() or b"", SourceRef(system=SYSTEM, position=position))


class ReadKafka(beam.PTransform):
    """`RawRecord`s (main output `records`; no dead letters at this stage) from every partition of the
    topics, one splittable restriction per partition; unbounded, the partitions are listed again every
    `partition_poll_s` and a new one is read from its start."""

    def __init__(self, config: KafkaConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        if self._config.stop_at_end:
            reader: _ReadPartition = _ReadPartition(self._config)
            partitions = pbegin | "Impulse" >> beam.Impulse() | "ListPartitions" >> beam.ParDo(_ListPartitions(self._config))
        else:  # partitions added while the job runs are found by listing again
            from apache_beam.transforms.periodicsequence import PeriodicImpulse

            reader = _ReadPartitionUnbounded(self._config)
            partitions = (pbegin
                          | "EveryPoll" >> PeriodicImpulse(fire_interval=self._config.partition_poll_s)
                          | "ListPartitions" >> beam.ParDo(_ListPartitions(self._config)).with_output_types(
                              Tuple[str, int])
                          | "NewPartitions" >> beam.ParDo(_NewPartitions()))
        records = (partitions
                   | "Reshuffle" >> beam.Reshuffle()
                   | "ReadPartitions" >> beam.ParDo(reader).with_outputs(DEAD_LETTERS, main="records"))
        return records


# --- parsing -------------------------------------------------------------------------------------------------

def _get(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class KafkaRecordParser:
    """A Kafka record → one `ChangeEvent` or a `parse` dead letter (see the module docstring for the rules)."""

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._schema = json.loads(Path(config.json_schema).read_text()) if config.json_schema else None

    def __call__(self, payload: bytes, source: SourceRef) -> Iterator[Union[ChangeEvent, DeadLetter]]:
        return event_or_dead_letter(lambda: self._event(payload, source), payload, source,
                                    doc_id=source.position.get("key"))

    def _event(self, payload: bytes, source: SourceRef) -> ChangeEvent:
        key = source.position.get("key")
        if source.position.get("tombstone"):
            if not key:
                raise RecordError("a tombstone (null value) needs a record key: it names the document to delete")
            return ChangeEvent(doc_id=str(key), op="delete", version=self._record_version(source), source=source,
                               raw=payload)
        value = load_json(payload.decode("utf-8"))
        if not isinstance(value, dict):
            raise RecordError(f"a record value must be a JSON object, got {type(value).__name__}")
        if self._schema is not None:
            self._validate(value)
        c = self._config
        if c.doc_id_field or c.text_fields or c.version_field:
            value = self._mapped(value)
        value.setdefault("doc_id", key)
        if self._config.version_from != "field":
            value["version"] = self._record_version(source)
        elif value.get("version") is None:
            where = f"'{c.version_field}'" if c.version_field else "'version'"
            raise RecordError(f"the value has no {where}: with --kafka_version_from field every value carries "
                              "its version (or use --kafka_version_from offset or timestamp)")
        return validate_event({**value, "source": source, "raw": payload})

    def _record_version(self, source: SourceRef) -> int:
        """The version a record itself carries: its offset, its timestamp (ms), or (for a tombstone under
        `field`) its `version` header."""
        position, rule = source.position, self._config.version_from
        if rule == "offset":
            return int(position["offset"])
        if rule == "timestamp":
            timestamp = int(position.get("timestamp_ms", -1))
            if timestamp < 0:
                raise RecordError("the record has no timestamp (--kafka_version_from timestamp)")
            return timestamp
        header = position.get("version_header")
        if header is None:
            raise RecordError(f"a tombstone needs a '{VERSION_HEADER}' header with --kafka_version_from field "
                              "(its values carry versions; the offset is on another scale)")
        try:
            version = int(str(header).strip())
        except ValueError:
            raise RecordError(f"the '{VERSION_HEADER}' header {header!r} is not an integer") from None
        if version < 0:
            raise RecordError(f"the '{VERSION_HEADER}' header {version} is negative")
        return version

    def _validate(self, value: dict[str, Any]) -> None:
        import jsonschema

        try:
            jsonschema.validate(value, self._schema)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "value"
            raise RecordError(f"JSON Schema: {where}: {exc.message}") from exc

    def _mapped(self, value: dict[str, Any]) -> dict[str, Any]:
        """Another JSON shape (a product event, say) as a ChangeEvent dict."""
        c = self._config
        event: dict[str, Any] = {"op": "delete" if str(value.get("op", "upsert")).lower() == "delete" else "upsert"}
        if c.doc_id_field:
            doc_id = _get(value, c.doc_id_field)
            if doc_id is not None:
                event["doc_id"] = str(doc_id)
        if c.version_field:
            event["version"] = _get(value, c.version_field)
        present = [t for t in (_get(value, f) for f in c.text_fields) if t is not None]
        if event["op"] == "upsert":  # text fields present but all empty: the document was emptied
            event["text"] = "\n\n".join(str(t) for t in present if t != "") if present else value.get("text")
        event["metadata"] = {k: v for k, v in value.items() if k not in set(c.text_fields) | {"op"}}
        return event


# --- committing ----------------------------------------------------------------------------------------------

class _Commit(beam.DoFn):
    """Per partition: commits the offset after the highest read record whose predecessors (among the records
    this run read) are all finished; never moves a committed offset backwards."""

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._acked = counters.counter(counters.RECORDS_ACKNOWLEDGED)

    def setup(self) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer(self._config.client_settings())

    def teardown(self) -> None:
        self._consumer.close()

    def process(self, keyed: tuple[tuple[str, int], dict[str, list[int]]]) -> Iterator[Any]:
        from confluent_kafka import TopicPartition

        (topic, partition), groups = keyed
        done = set(groups["done"])
        finished = None
        count = 0
        for offset in sorted(set(groups["read"]) | done):  # done: dead-lettered at read too, never a record
            if offset not in done:
                break
            finished, count = offset, count + 1
        if finished is None:
            return
        (committed,) = self._consumer.committed([TopicPartition(topic, partition)], timeout=10)
        if finished + 1 > committed.offset:
            self._consumer.commit(offsets=[TopicPartition(topic, partition, finished + 1)], asynchronous=False)
        self._acked.inc(count)
        yield topic, partition, finished + 1


def _offset_and_gap(ref: SourceRef) -> tuple[int, Optional[int]]:
    gap = ref.position.get("gap_from")
    return int(ref.position["offset"]), int(gap) if gap is not None else None


def _partition_offset(ref: SourceRef) -> tuple[tuple[str, int], int]:
    return (str(ref.position["topic"]), int(ref.position["partition"])), int(ref.position["offset"])


class CommitOffsets(beam.PTransform):
    """Commits each partition's finished offsets to the consumer group (once the run's records are done)."""

    def __init__(self, config: KafkaConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, refs: dict[str, beam.PCollection]) -> Any:
        ours = lambda r: r.system == SYSTEM  # noqa: E731
        if self._config.unbounded:  # streaming: a ledger per partition in keyed state, across the stream
            tagged = [refs[name] | f"Kafka{name}" >> beam.Filter(ours)
                      | f"Tag{name}" >> beam.Map(lambda r, n=name: (_partition_offset(r)[0], (n, _offset_and_gap(r))))
                      for name in ("done", "read")]
            return (tagged | "AllRefs" >> beam.Flatten().with_output_types(Tuple[Tuple[str, int], Any])
                    | "Ledger" >> beam.ParDo(_Ledger(self._config)))
        keyed = {name: (refs[name] | f"Kafka{name}" >> beam.Filter(ours)
                        | f"ByPartition{name}" >> beam.Map(_partition_offset)) for name in ("done", "read")}
        return keyed | "JoinByPartition" >> beam.CoGroupByKey() | "Commit" >> beam.ParDo(_Commit(self._config))


class PartitionLedger:
    """What one partition's ledger knows: `next`, the offset committed (everything before it finished),
    and the offsets at or after it that were read and that finished. Pure logic (`_Ledger` keeps it in
    keyed state and commits)."""

    def __init__(self, next_offset: int) -> None:
        self.next = next_offset
        self.done: set[int] = set()
        self.gaps: dict[int, int] = {}  # gap start -> the offset of the record after the gap

    def note(self, kind: str, offset: int, gap_from: Optional[int] = None) -> int:
        """Records a `read` or `done` offset (with the gap the reader saw before it, if any); returns how many
        offsets the finished prefix grew by (`next` then moved past them). The prefix grows only over
        finished offsets and over gaps the reader reported, never over an offset merely not heard of yet
        (its refs may still be on their way). An offset below `next` (a replay) changes nothing."""
        if offset < self.next:
            return 0
        if gap_from is not None and gap_from < offset:
            self.gaps[gap_from] = offset
        if kind == "done":
            self.done.add(offset)
        finished = 0
        while True:
            if self.next in self.done:
                self.done.discard(self.next)
                self.next, finished = self.next + 1, finished + 1
            elif self.next in self.gaps:
                self.next = self.gaps.pop(self.next)
            else:
                break
        self.gaps = {g: o for g, o in self.gaps.items() if o > self.next}
        return finished


class _Ledger(beam.DoFn):
    """Streaming commits: per `(topic, partition)`, a `PartitionLedger` in keyed state (started at the
    group's committed offset, or the partition's first) takes every read and finished offset, whenever it
    arrives; each time the finished prefix grows, its end is committed (never backwards). Finished refs of
    dead letters arrive only once the letters are durable, so a commit never passes an undurable one."""

    LEDGER = ReadModifyWriteStateSpec("ledger", PickleCoder())

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._acked = counters.counter(counters.RECORDS_ACKNOWLEDGED)

    def setup(self) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer(self._config.client_settings())

    def teardown(self) -> None:
        self._consumer.close()

    def process(self, keyed: tuple[tuple[str, int], tuple[str, int]],
                ledger_state: Any = beam.DoFn.StateParam(LEDGER)) -> Iterator[Any]:
        from confluent_kafka import TopicPartition

        (topic, partition), (kind, (offset, gap_from)) = keyed
        ledger: Optional[PartitionLedger] = ledger_state.read()
        if ledger is None:
            ledger = PartitionLedger(self._start(topic, partition))
        finished = ledger.note(kind, offset, gap_from)
        ledger_state.write(ledger)
        if not finished:
            return
        (committed,) = self._consumer.committed([TopicPartition(topic, partition)], timeout=10)
        if ledger.next > committed.offset:
            self._consumer.commit(offsets=[TopicPartition(topic, partition, ledger.next)], asynchronous=False)
        self._acked.inc(finished)
        yield topic, partition, ledger.next

    def _start(self, topic: str, partition: int) -> int:
        from confluent_kafka import TopicPartition

        (committed,) = self._consumer.committed([TopicPartition(topic, partition)], timeout=10)
        if committed.offset >= 0:
            return committed.offset
        low, _ = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        return low


# --- dead letters to a topic ---------------------------------------------------------------------------------

class ProduceDeadLetters(DurableDeadLetterStep):
    """Produces each dead letter to `topic`: the original key and value (and `version` header), with Kafka
    Connect style headers (`__connect.errors.topic/partition/offset/exception.class.name/exception.message`)
    and the stage; outputs each dead letter once the producer has flushed it (delivered), at most `limit`
    letters later."""

    def __init__(self, config: KafkaConfig, topic: str) -> None:
        self._config = config
        self._topic = topic

    def setup(self) -> None:
        from confluent_kafka import Producer

        settings = {k: v for k, v in self._config.client_settings().items()
                    if k not in ("group.id", "enable.auto.commit", "enable.partition.eof")}
        self._producer = Producer(settings)

    def _accept(self, letter: DeadLetter) -> None:
        position = letter.source.position if letter.source else {}
        headers = [("__connect.errors.topic", str(position.get("topic", ""))),
                   ("__connect.errors.partition", str(position.get("partition", ""))),
                   ("__connect.errors.offset", str(position.get("offset", ""))),
                   ("__connect.errors.exception.class.name", letter.error_type),
                   ("__connect.errors.exception.message", letter.error[:1000]),
                   ("__connect.errors.stage", letter.stage)]
        if "version_header" in position:  # kept, so a dead tombstone re-produced from here keeps its version
            headers.append((VERSION_HEADER, str(position["version_header"])))
        key = position.get("key")
        value = None if position.get("tombstone") else letter.original_payload()
        self._producer.produce(self._topic, key=str(key).encode() if key is not None else None, value=value,
                               headers=headers)
        self._producer.poll(0)

    def _make_durable(self, letters: list[DeadLetter]) -> None:
        remaining = self._producer.flush(30)
        if remaining:  # the bundle fails and is retried: its records stay unacknowledged
            raise RuntimeError(f"{remaining} dead letters not delivered to Kafka topic {self._topic}")
