"""The shared sink DoFn: retries transient errors, isolates and dead-letters permanent ones, outputs applied
events. The store here is a small file-backed `VectorStore` implementation whose failures are scripted."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from connectors.base import DEAD_LETTERS, StoreConfig, VectorStore, WriteDocuments
from transforms.retry import RetryPolicy
from transforms.types import ChangeEvent, ChunkRecord, DocKey, DocumentWrite, StoredDocument


class ScriptedError(Exception):
    pass


class ScriptedStore(VectorStore):
    """Appends applied doc_ids to `log`; fails transiently `transient_failures` times (counted in a file),
    and permanently for any batch containing a doc_id in `poison`."""

    name = "scripted"

    def __init__(self, config: "ScriptedConfig") -> None:
        self._config = config

    def ensure_ready(self, dimension: int) -> None:
        pass

    def read_documents(self, keys: Sequence[DocKey]) -> dict[DocKey, StoredDocument]:
        return {}

    def write_documents(self, writes: Sequence[DocumentWrite]) -> None:
        counter = Path(self._config.log + ".failures")
        failed = int(counter.read_text()) if counter.exists() else 0
        if failed < self._config.transient_failures:
            counter.write_text(str(failed + 1))
            raise TimeoutError("store timed out")
        if any(w.event.doc_id in self._config.poison for w in writes):
            raise ScriptedError("400 bad request: payload rejected")
        with open(self._config.log, "a") as fh:
            for w in writes:
                fh.write(json.dumps([w.event.doc_id, len(w.records)]) + "\n")

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, TimeoutError)

    def count(self) -> int:
        return 0


class ScriptedConfig(StoreConfig):
    log: str
    transient_failures: int = 0
    poison: tuple[str, ...] = ()

    @property
    def sink_type(self) -> str:
        return "scripted"

    def create_store(self) -> ScriptedStore:
        return ScriptedStore(self)


def write_for(doc_id: str) -> DocumentWrite:
    event = ChangeEvent(doc_id=doc_id, op="upsert", version=1, text="t", raw=doc_id.encode())
    record = ChunkRecord(f"id-{doc_id}", doc_id, None, 0, 1, 1, "t", "h", "m", {}, [1.0, 0.0])
    return DocumentWrite(event, (record,), ())


def run_writes(config: ScriptedConfig, doc_ids: list[str]) -> None:
    with beam.Pipeline() as p:
        written = (p | beam.Create([write_for(d) for d in doc_ids])
                   | beam.ParDo(WriteDocuments(config)).with_outputs(DEAD_LETTERS, main="applied"))
        assert_that(written.applied | beam.Map(lambda o: (o.event.doc_id, o.sink, o.applied)), equal_to(
            [(d, "scripted", d not in config.poison) for d in doc_ids]), label="outcomes")
        assert_that(written[DEAD_LETTERS] | beam.Map(lambda d: (d.doc_id, d.stage, d.error_type, d.attempts)),
                    equal_to([(d, "sink:scripted", "ScriptedError", 1) for d in doc_ids if d in config.poison]),
                    label="dead letters")


FAST = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.02)


def test_transient_errors_are_retried_until_the_write_lands(tmp_path: Path):
    log = tmp_path / "log"
    run_writes(ScriptedConfig(log=str(log), transient_failures=2, retry=FAST), ["a", "b", "c"])
    assert sorted(json.loads(line)[0] for line in log.read_text().splitlines()) == ["a", "b", "c"]
    assert (tmp_path / "log.failures").read_text() == "2"


def test_a_poison_document_is_dead_lettered_alone_and_the_rest_of_its_batch_lands(tmp_path: Path):
    log = tmp_path / "log"
    run_writes(ScriptedConfig(log=str(log), poison=("bad",), retry=FAST, batch_size=100),
               ["a", "bad", "b", "c", "d"])
    assert sorted(json.loads(line)[0] for line in log.read_text().splitlines()) == ["a", "b", "c", "d"]


def test_a_store_that_stays_down_dead_letters_the_batch_after_the_last_attempt(tmp_path: Path):
    config = ScriptedConfig(log=str(tmp_path / "log"), transient_failures=100, retry=FAST)
    with beam.Pipeline() as p:
        written = (p | beam.Create([write_for("a"), write_for("b")])
                   | beam.ParDo(WriteDocuments(config)).with_outputs(DEAD_LETTERS, main="applied"))
        assert_that(written[DEAD_LETTERS] | beam.Map(lambda d: (d.doc_id, d.error_type, d.attempts)),
                    equal_to([("a", "TimeoutError", 4), ("b", "TimeoutError", 4)]))
    assert not (tmp_path / "log").exists()


class UnreadableStore(ScriptedStore):
    def read_documents(self, keys: Sequence[DocKey]) -> dict[DocKey, StoredDocument]:
        raise ScriptedError("403 forbidden: bad credentials")


class UnreadableConfig(ScriptedConfig):
    def create_store(self) -> UnreadableStore:
        return UnreadableStore(self)


def test_a_failed_store_lookup_dead_letters_every_event_of_the_batch(tmp_path: Path, model_path: str):
    from connectors.base import TO_EMBED, PlanDocumentWrites

    config = UnreadableConfig(log=str(tmp_path / "log"), retry=FAST)
    events = [ChangeEvent(doc_id=d, op="upsert", version=1, text="some text", raw=d.encode()) for d in ("a", "b")]
    with beam.Pipeline() as p:
        planned = (p | beam.Create(events)
                   | beam.ParDo(PlanDocumentWrites([config], model_path, "m", 16, 4)).with_outputs(
                       TO_EMBED, DEAD_LETTERS, main="plans"))
        assert_that(planned[DEAD_LETTERS] | beam.Map(lambda d: (d.doc_id, d.stage, d.error_type, d.payload != "")),
                    equal_to([("a", "lookup:scripted", "ScriptedError", True),
                              ("b", "lookup:scripted", "ScriptedError", True)]), label="dead letters")
        assert_that(planned.plans, equal_to([]), label="no plans")
        assert_that(planned[TO_EMBED], equal_to([]), label="nothing to embed")
