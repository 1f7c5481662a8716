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
from transforms.stages import DEAD_LETTERS, DEFAULT_MAX_DOCUMENT_BYTES, ENVELOPE_BYTES, KEPT_PAYLOAD_BYTES
from transforms.types import ChangeEvent, DeadLetter, RawRecord, SourceRef

SAMPLE_CHANGELOG = Path(__file__).resolve().parent.parent / "pipeline" / "sample_data" / "changelog.jsonl"


def _unreadable(error: OSError, source: SourceRef) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of("read", error, b"", source))


READ_BLOCK_BYTES = 1 << 20


def bounded_lines(fh: Any, limit: int) -> Iterator[tuple[bytes, int]]:
    """`(line, size)` for each line of a binary file, without its line end: a line longer than `limit` bytes
    is cut to its first `limit` bytes (its true `size` is given), so memory stays bounded whatever the file."""
    kept, size = bytearray(), 0
    while True:
        block = fh.read(READ_BLOCK_BYTES)
        if not block:
            break
        start = 0
        while True:
            end = block.find(b"\n", start)
            piece = block[start:] if end < 0 else block[start:end]
            if len(kept) < limit:
                kept += piece[:limit - len(kept)]
            size += len(piece)
            if end < 0:
                break
            yield bytes(kept).rstrip(b"\r"), size
            kept, size, start = bytearray(), 0, end + 1
    if size:
        yield bytes(kept).rstrip(b"\r"), size


class _ReadLines(beam.DoFn):
    def __init__(self, max_record_bytes: int) -> None:
        self._limit = max_record_bytes
        self._read = counters.counter(counters.RECORDS_READ)

    def process(self, readable: fileio.ReadableFile) -> Iterator[Any]:
        path = readable.metadata.path
        number = 0
        try:
            with readable.open() as fh:
                for number, (payload, size) in enumerate(bounded_lines(fh, self._limit + 1), start=1):
                    if not payload.strip():
                        continue
                    self._read.inc()
                    source = SourceRef(system="changelog", position={"file": path, "line": number})
                    if size > self._limit:
                        yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of(
                            "read", f"line is {size} bytes, over the record limit of {self._limit} bytes "
                            f"(--max_document_bytes plus the envelope); payload kept: first "
                            f"{KEPT_PAYLOAD_BYTES} bytes", payload[:KEPT_PAYLOAD_BYTES], source,
                            error_type="DocumentTooLarge"))
                        continue
                    yield RawRecord(payload, source)
        except OSError as exc:  # the rest of the file cannot be read: one dead letter says from where
            self._read.inc()
            yield _unreadable(exc, SourceRef(system="changelog", position={"file": path, "line": number + 1}))


class ReadChangeLog(beam.PTransform):
    """`RawRecord`s (main output `records`) from every JSONL file matching `pattern`, and `dead_letters`
    (stage `read`) for a file that cannot be read to its end and for each line longer than
    `max_document_bytes` plus the envelope allowance (read in bounded memory, never whole)."""

    def __init__(self, pattern: str, max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> None:
        super().__init__()
        self._pattern = pattern
        self._max_record_bytes = max_document_bytes + ENVELOPE_BYTES

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin
                | "Match" >> fileio.MatchFiles(self._pattern)
                | "Open" >> fileio.ReadMatches()
                | "Lines" >> beam.ParDo(_ReadLines(self._max_record_bytes)).with_outputs(
                    DEAD_LETTERS, main="records"))


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
    def __init__(self, folder: str, max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> None:
        self._folder = folder
        self._max_document_bytes = max_document_bytes
        self._read = counters.counter(counters.RECORDS_READ)

    def process(self, relative: str) -> Iterator[Any]:
        self._read.inc()
        path = Path(self._folder) / relative
        source = SourceRef(system="folder", position={"file": str(path), "doc_id": relative})
        try:
            stat = path.stat()
            if stat.st_size > self._max_document_bytes:
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of(
                    "read", f"{relative} is {stat.st_size} bytes, over --max_document_bytes "
                    f"{self._max_document_bytes}", b"", source, doc_id=relative, error_type="DocumentTooLarge"))
                return
            payload = path.read_bytes()
        except OSError as exc:  # removed or unreadable since the listing
            yield _unreadable(exc, source)
            return
        yield RawRecord(payload, SourceRef(system="folder", position={
            "file": str(path), "doc_id": relative, "mtime_ns": stat.st_mtime_ns}))


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
    `parse_document_file`), and `dead_letters` (stage `read`) for files that cannot be read or are larger
    than `max_document_bytes` (never read)."""

    def __init__(self, folder: str, max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> None:
        super().__init__()
        self._folder = folder
        self._max_document_bytes = max_document_bytes

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin
                | "ListFiles" >> beam.Create(document_files(self._folder))
                | "ReadFiles" >> beam.ParDo(_ReadDocumentFiles(self._folder, self._max_document_bytes)).with_outputs(
                    DEAD_LETTERS, main="records"))
