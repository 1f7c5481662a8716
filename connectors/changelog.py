"""The embedded default source: JSONL change-logs (a file, a glob, any Beam filesystem) or a folder of
documents.

A change-log yields one record per non-blank line, with its file and 1-based line number; blank lines are
not records. A folder yields one upsert per regular file (hidden files skipped): `doc_id` is the path
relative to the folder, `version` its modification time in ns. A folder run never deletes documents whose
files are gone (use a change-log with delete events for that).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.io import fileio

from transforms import counters
from transforms.stages import DEAD_LETTERS
from transforms.types import ChangeEvent, DeadLetter, RawRecord, SourceRef

SAMPLE_CHANGELOG = Path(__file__).resolve().parent.parent / "pipeline" / "sample_data" / "changelog.jsonl"


def _unreadable(error: OSError, source: SourceRef) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of("read", error, b"", source))


class _ReadLines(beam.DoFn):
    def __init__(self) -> None:
        self._read = counters.counter(counters.RECORDS_READ)

    def process(self, readable: fileio.ReadableFile) -> Iterator[Any]:
        path = readable.metadata.path
        number = 0
        try:
            with readable.open() as fh:
                for number, line in enumerate(fh, start=1):
                    payload = line.rstrip(b"\r\n")
                    if not payload.strip():
                        continue
                    self._read.inc()
                    yield RawRecord(payload, SourceRef(system="changelog", position={"file": path, "line": number}))
        except OSError as exc:  # the rest of the file cannot be read: one dead letter says from where
            self._read.inc()
            yield _unreadable(exc, SourceRef(system="changelog", position={"file": path, "line": number + 1}))


class ReadChangeLog(beam.PTransform):
    """`RawRecord`s (main output `records`) from every JSONL file matching `pattern`, and `dead_letters`
    (stage `read`) for a file that cannot be read to its end."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self._pattern = pattern

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin
                | "Match" >> fileio.MatchFiles(self._pattern)
                | "Open" >> fileio.ReadMatches()
                | "Lines" >> beam.ParDo(_ReadLines()).with_outputs(DEAD_LETTERS, main="records"))


def document_files(folder: str) -> list[str]:
    """Relative paths of the regular, non-hidden files under `folder`, sorted."""
    root = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                found.append(str((Path(dirpath) / name).relative_to(root)))
    return sorted(found)


class _ReadDocumentFiles(beam.DoFn):
    def __init__(self, folder: str) -> None:
        self._folder = folder
        self._read = counters.counter(counters.RECORDS_READ)

    def process(self, relative: str) -> Iterator[Any]:
        self._read.inc()
        path = Path(self._folder) / relative
        try:
            mtime_ns = path.stat().st_mtime_ns
            payload = path.read_bytes()
        except OSError as exc:  # removed or unreadable since the listing
            yield _unreadable(exc, SourceRef(system="folder", position={"file": str(path), "doc_id": relative}))
            return
        yield RawRecord(payload, SourceRef(system="folder", position={
            "file": str(path), "doc_id": relative, "mtime_ns": mtime_ns}))


def parse_document_file(payload: bytes, source: SourceRef) -> Iterator[object]:
    """A folder file → an upsert `ChangeEvent`, or a `parse` dead letter (not UTF-8, or empty)."""
    try:
        text = payload.decode("utf-8")
        yield ChangeEvent(doc_id=str(source.position["doc_id"]), op="upsert",
                          version=int(source.position["mtime_ns"]), text=text,
                          metadata={"path": str(source.position["doc_id"])}, source=source, raw=payload)
    except (UnicodeDecodeError, ValueError) as exc:
        yield DeadLetter.of("parse", exc, payload, source)


class ReadDocumentFolder(beam.PTransform):
    """`RawRecord`s (main output `records`), one per document file under `folder` (parse them with
    `parse_document_file`), and `dead_letters` (stage `read`) for files that cannot be read."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self._folder = folder

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin
                | "ListFiles" >> beam.Create(document_files(self._folder))
                | "ReadFiles" >> beam.ParDo(_ReadDocumentFiles(self._folder)).with_outputs(
                    DEAD_LETTERS, main="records"))
