"""The dead-letter file: every dead letter is one JSON line, durably written before it goes on.

Nothing a run writes ever replaces an earlier run's dead letters. A local path is appended to (one `write`
per group of lines, then fsync and close); a remote path (`gs://`, `s3://`, any Beam filesystem) gets one new
object per group, `<path>-<unique id>.jsonl`, since objects cannot be appended to. `python -m pipeline.replay`
reads a file, a folder or a glob, so it finds them all. A dead letter leaves this step only once its line is
durable: that is what lets a source acknowledge the record (the contract: acknowledged means durable).
"""
from __future__ import annotations

import os
import uuid
from typing import Any, Iterator

import apache_beam as beam

from connectors.base import BundleBuffer, emit_output
from transforms import counters
from transforms.types import DeadLetter


def dead_letter_line(letter: DeadLetter) -> bytes:
    return letter.model_dump_json().encode("utf-8") + b"\n"


def append_durably(path: str, data: bytes) -> None:
    """Appends `data` to the local file `path` (created with its folder if missing) and fsyncs it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_object(path: str, data: bytes) -> str:
    """Writes `data` as a new object beside `path` (any Beam filesystem); returns its name."""
    from apache_beam.io.filesystems import FileSystems

    stem = path[:-len(".jsonl")] if path.endswith(".jsonl") else path
    name = f"{stem}-{uuid.uuid4().hex}.jsonl"
    with FileSystems.create(name, mime_type="application/jsonl") as fh:
        fh.write(data)
    return name


class DurableDeadLetterStep(beam.DoFn):
    """Passes dead letters on only once they are durable somewhere: `_accept` takes each one, and
    `_make_durable` is called for the group (every `limit` letters and at the end of each bundle) before the
    group is output with its windows and timestamps. A failure there fails the bundle, so nothing is
    acknowledged for it."""

    limit = 500

    def _accept(self, letter: DeadLetter) -> None:
        """Called for each dead letter as it arrives (e.g. to hand it to a producer)."""

    def _make_durable(self, letters: list[DeadLetter]) -> None:
        raise NotImplementedError

    def start_bundle(self) -> None:
        self._buffer = BundleBuffer()

    def process(self, letter: DeadLetter, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam) -> Iterator[Any]:
        self._accept(letter)
        self._buffer.add(letter, timestamp, window)
        if len(self._buffer.items) >= self.limit:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[Any]:
        yield from self._flush()

    def _flush(self) -> Iterator[Any]:
        items = self._buffer.take()
        if not items:
            return
        self._make_durable([letter for letter, _, _ in items])
        for letter, ts, win in items:
            yield emit_output(letter, ts, win)


class _WriteDeadLetterLines(DurableDeadLetterStep):
    """Writes each group of dead letters as JSON lines (appended locally, a new object remotely). Counts
    every dead letter, and its event as dead-lettered unless a sink failed it (`SettleEvents` counts those
    once per event, however many sinks failed)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._letters = counters.counter(counters.DEAD_LETTERS)
        self._events = counters.counter(counters.EVENTS_DEAD_LETTERED)

    def _make_durable(self, letters: list[DeadLetter]) -> None:
        data = b"".join(dead_letter_line(letter) for letter in letters)
        if "://" in self._path:
            write_new_object(self._path, data)
        else:
            append_durably(self._path, data)
        for letter in letters:
            self._letters.inc()
            if not letter.stage.startswith("sink:"):
                self._events.inc()


class WriteDeadLetters(beam.PTransform):
    """Dead letters → the same dead letters, each output once its line is durable in `path`."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def expand(self, letters: beam.PCollection) -> beam.PCollection:
        return letters | "WriteLines" >> beam.ParDo(_WriteDeadLetterLines(self._path))
