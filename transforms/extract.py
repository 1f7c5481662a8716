"""Text from document bytes, by type: txt, md, html (visible text), json, pdf, docx. A user adds a type with
`register_extractor(".ext", function)` (and, optionally, content types). An unsupported type or a broken
file raises `ExtractionError`, which the fetch stage dead-letters with the reason."""
from __future__ import annotations

import io
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Callable, Optional

from transforms.parse import RecordError, load_json
from transforms.storable import check_string

Extractor = Callable[[bytes], str]


class ExtractionError(ValueError):
    """The document's type is not supported, or its bytes are not a valid document of that type."""


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractionError(f"not UTF-8 text: {exc}") from exc


class _VisibleText(HTMLParser):
    _HIDDEN = {"script", "style", "noscript", "template", "head", "svg"}
    _BLOCK = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN and self._hidden:
            self._hidden -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_text(data: bytes) -> str:
    parser = _VisibleText()
    parser.feed(_text(data))
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def json_text(data: bytes) -> str:
    """Every string value, one per line, in document order (keys are not text)."""
    try:
        value = load_json(_text(data))
    except RecordError as exc:
        raise ExtractionError(str(exc)) from exc
    out: list[str] = []

    def walk(v: object) -> None:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
    walk(value)
    return "\n".join(out)


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages).strip()
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise ExtractionError(f"broken PDF: {exc}") from exc


def docx_text(data: bytes) -> str:
    import zipfile

    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ExtractionError(f"broken DOCX: {exc}") from exc
    return "\n".join(p.text for p in document.paragraphs if p.text.strip())


_BY_SUFFIX: dict[str, Extractor] = {".txt": _text, ".md": _text, ".markdown": _text, ".html": html_text,
                                    ".htm": html_text, ".json": json_text, ".pdf": pdf_text, ".docx": docx_text}
_BY_CONTENT_TYPE: dict[str, Extractor] = {
    "text/plain": _text, "text/markdown": _text, "text/html": html_text, "application/json": json_text,
    "application/pdf": pdf_text,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": docx_text}


def register_extractor(suffix: str, extractor: Extractor, content_types: tuple[str, ...] = ()) -> None:
    """Adds (or replaces) the extractor for files ending in `suffix` and for `content_types`."""
    _BY_SUFFIX[suffix.lower()] = extractor
    for content_type in content_types:
        _BY_CONTENT_TYPE[content_type.lower()] = extractor


def extractor_for(name: str, content_type: Optional[str] = None) -> Extractor:
    """By file suffix first, then by content type; raises `ExtractionError` when neither is supported."""
    suffix = PurePosixPath(name.split("?")[0]).suffix.lower()
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    base = (content_type or "").split(";")[0].strip().lower()
    if base in _BY_CONTENT_TYPE:
        return _BY_CONTENT_TYPE[base]
    raise ExtractionError(f"unsupported document type {suffix or '(no suffix)'!r}"
                          f"{f' ({base})' if base else ''}; supported: {', '.join(sorted(_BY_SUFFIX))}")


def extract_text(name: str, data: bytes, content_type: Optional[str] = None) -> str:
    """The document's text, NUL characters dropped (no store keeps them); `ExtractionError` when the type is
    unsupported, the file broken, or the extractor failed in any other way."""
    extractor = extractor_for(name, content_type)
    try:
        text = extractor(data).replace("\x00", "")
        return check_string(text, "extracted text")
    except ExtractionError:
        raise
    except Exception as exc:  # noqa: BLE001 - a hostile file (or a lone surrogate) must not crash the run
        raise ExtractionError(f"cannot extract text: {type(exc).__name__}: {exc}") from exc
