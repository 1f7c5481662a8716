"""The embedded default source: JSONL change-logs (a file, a glob, any Beam filesystem) or a folder of
documents.

A change-log yields one record per non-blank line, with its file and 1-based line number; blank lines are
not records. A folder yields one upsert per regular file (hidden files and folders skipped) whose type has an
extractor (`transforms.extract`: txt, md, HTML as visible text, JSON strings, PDF, DOCX, and registered
ones), its text extracted exactly as for a fetched object (a broken file is dead-lettered, stage `extract`);
a file of any other type (images, fonts, archives, CSS, SVG, ...) is skipped, never read, and counted in the
summary under `skipped` with its type. `doc_id` is the path relative to the folder, `version` its modification time in ns (a local file's `st_mtime_ns`; on other
filesystems, `gs://`, `s3://`, the `last_updated_in_seconds` Beam's FileSystems reports, in ns). Files are
matched and read on the workers, through Beam's FileSystems, never on the launcher. A folder run never
deletes documents whose files are gone (use a change-log with delete events for that).

The default input, the shipped sample, is package data: each worker reads its own installed copy.
"""
from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from transforms import counters
from transforms.extract import ExtractionError, extract_text, extractor_for
from transforms.defaults import SAMPLE_CHANGELOG
from transforms.stages import DEAD_LETTERS, DEFAULT_MAX_DOCUMENT_BYTES, ENVELOPE_BYTES, KEPT_PAYLOAD_BYTES
from transforms.types import ChangeEvent, DeadLetter, RawRecord, SourceRef

SAMPLE_INPUT = "sample:changelog.jsonl"
"""What the graph carries for the default input: resolved to `SAMPLE_CHANGELOG` on each worker."""


def _on_this_worker(pattern: str) -> str:
    return str(SAMPLE_CHANGELOG) if pattern == SAMPLE_INPUT else pattern


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
        self._pattern = SAMPLE_INPUT if pattern == str(SAMPLE_CHANGELOG) else pattern
        self._max_record_bytes = max_document_bytes + ENVELOPE_BYTES

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin
                | "Pattern" >> beam.Create([self._pattern])
                | "OnThisWorker" >> beam.Map(_on_this_worker)
                | "Match" >> fileio.MatchAll()
                | "Open" >> fileio.ReadMatches()
                | "Lines" >> beam.ParDo(_ReadLines(self._max_record_bytes)).with_outputs(
                    DEAD_LETTERS, main="records"))


def document_files(folder: str) -> list[tuple[str, FileMetadata]]:
    """`(path relative to folder, metadata)` of the files under `folder` (any Beam filesystem), hidden files
    and files in hidden folders skipped, sorted."""
    root = folder.rstrip("/")
    found = []
    for meta in FileSystems.match([f"{root}/**"])[0].metadata_list:
        relative = meta.path[len(root):].lstrip("/")
        if relative and not any(part.startswith(".") for part in relative.split("/")):
            found.append((relative, meta))
    return sorted(found, key=lambda item: item[0])


class _ListDocumentFiles(beam.DoFn):
    """The folder → one `(relative path, metadata)` per document file, listed on the worker."""

    def process(self, folder: str) -> Iterator[tuple[str, FileMetadata]]:
        yield from document_files(folder)


def version_ns(meta: FileMetadata) -> int:
    """A local file's `st_mtime_ns`; elsewhere the filesystem's `last_updated_in_seconds`, in ns."""
    if FileSystems.get_scheme(meta.path) in (None, "file"):
        return os.stat(meta.path).st_mtime_ns
    return int(round(float(meta.last_updated_in_seconds) * 1e9))


class _ReadDocumentFiles(beam.DoFn):
    def __init__(self, max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> None:
        self._max_document_bytes = max_document_bytes
        self._read = counters.counter(counters.RECORDS_READ)

    def process(self, listed: tuple[str, FileMetadata]) -> Iterator[Any]:
        relative, meta = listed
        try:
            extractor_for(relative)
        except ExtractionError:
            suffix = PurePosixPath(relative).suffix.lower() or "(no suffix)"
            counters.skipped_counter(f"folder file of unsupported type {suffix}").inc()
            return
        self._read.inc()
        path = meta.path
        source = SourceRef(system="folder", position={"file": path, "doc_id": relative})
        try:
            if meta.size_in_bytes > self._max_document_bytes:
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of(
                    "read", f"{relative} is {meta.size_in_bytes} bytes, over --max_document_bytes "
                    f"{self._max_document_bytes}", b"", source, doc_id=relative, error_type="DocumentTooLarge"))
                return
            version = version_ns(meta)
            with FileSystems.open(path) as fh:
                payload = fh.read(self._max_document_bytes + 1)
        except (OSError, IOError) as exc:  # removed or unreadable since the listing
            yield _unreadable(exc, source)
            return
        if len(payload) > self._max_document_bytes:  # grew since the listing
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter.of(
                "read", f"{relative} is over --max_document_bytes {self._max_document_bytes}", b"", source,
                doc_id=relative, error_type="DocumentTooLarge"))
            return
        yield RawRecord(payload, SourceRef(system="folder", position={
            "file": path, "doc_id": relative, "mtime_ns": version}))


def parse_document_file(payload: bytes, source: SourceRef) -> Iterator[object]:
    """A folder file → an upsert `ChangeEvent` with the text extracted by its type, an `extract` dead letter
    (unsupported type, broken file: not UTF-8 text, a broken PDF, ...) or a `parse` dead letter (no text)."""
    doc_id = str(source.position["doc_id"])
    try:
        text = extract_text(doc_id, payload)
    except ExtractionError as exc:
        yield DeadLetter.of("extract", exc, payload, source, doc_id=doc_id)
        return
    try:
        yield ChangeEvent(doc_id=doc_id, op="upsert", version=int(source.position["mtime_ns"]), text=text,
                          metadata={"path": doc_id}, source=source, raw=payload)
    except ValueError as exc:
        yield DeadLetter.of("parse", exc, payload, source, doc_id=doc_id)


class ReadDocumentFolder(beam.PTransform):
    """`RawRecord`s (main output `records`), one per document file under `folder` (parse them with
    `parse_document_file`), and `dead_letters` (stage `read`) for files that cannot be read or are larger
    than `max_document_bytes` (never read whole). The folder is listed and read on the workers."""

    def __init__(self, folder: str, max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> None:
        super().__init__()
        self._folder = folder
        self._max_document_bytes = max_document_bytes

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin
                | "Folder" >> beam.Create([self._folder])
                | "ListFiles" >> beam.ParDo(_ListDocumentFiles())
                | "Spread" >> beam.Reshuffle()
                | "ReadFiles" >> beam.ParDo(_ReadDocumentFiles(self._max_document_bytes)).with_outputs(
                    DEAD_LETTERS, main="records"))
