"""A folder run extracts text exactly as fetched objects are: HTML as visible text, PDF, DOCX and JSON
strings; files of other types (images, fonts, CSS, SVG, no suffix) are skipped, never read, and counted
with their type in the summary; a broken file of a supported type is one `extract` dead letter."""
from __future__ import annotations

import io
from pathlib import Path

from pipeline.main import run
from tests.conftest import read_dead_letters, read_points


def pdf_with_text(text: str) -> bytes:
    """A one-page PDF whose content stream shows `text` in Helvetica (with a correct xref table)."""
    stream = f"BT /F1 18 Tf 10 100 Td ({text}) Tj ET".encode()
    objects = [b"<</Type/Catalog/Pages 2 0 R>>", b"<</Type/Pages/Kids[3 0 R]/Count 1>>",
               b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 400 144]/Contents 4 0 R/Resources<</Font<</F1 5 0 R>>>>>>",
               b"<</Length %d>>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def docx_with(*paragraphs: str) -> bytes:
    import docx

    document = docx.Document()
    for p in paragraphs:
        document.add_paragraph(p)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_folder_files_are_extracted_by_type_and_other_types_skipped_with_the_reason(tmp_path: Path):
    docs = tmp_path / "docs"
    (docs / "site" / "css").mkdir(parents=True)
    (docs / "site" / "index.html").write_text(
        "<html><head><title>Shop</title><style>body{color:#333}</style><script>track()</script></head><body>"
        "<h1>Opening hours</h1><svg><path d='M0 0 L10 10'/></svg><p>Mon&ndash;Fri 9&ndash;17.</p></body></html>")
    (docs / "site" / "css" / "main.css").write_text("body { margin: 0 }")
    (docs / "site" / "logo.svg").write_text("<svg><path d='M0 0 L10 10 Z'/></svg>")
    (docs / "site" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (docs / "site" / "font.woff2").write_bytes(b"wOF2" + bytes(200))
    (docs / "LICENSE").write_text("No suffix: not a known type.")
    (docs / "manual.pdf").write_bytes(pdf_with_text("Battery lasts ten hours"))
    (docs / "handbook.docx").write_bytes(docx_with("Holidays are booked in March.", "Ask your lead."))
    (docs / "faq.json").write_text('{"q": "Do you ship abroad?", "a": "Yes, to the EU.", "n": 3}')
    (docs / "notes.md").write_text("# Notes\nForklifts need a licence.")
    (docs / "broken.txt").write_bytes(b"\xff\xfe\x00binary, not UTF-8")
    summary = run(["--input", str(docs), "--qdrant_path", str(tmp_path / "store"), "--dead_letters",
                   str(tmp_path / "dead.jsonl")])
    texts: dict[str, str] = {}
    for p in sorted(read_points(tmp_path / "store").values(), key=lambda p: p["chunk_index"]):
        texts[p["doc_id"]] = texts.get(p["doc_id"], "") + p["text"]
    assert texts == {"site/index.html": "Opening hours\nMon–Fri 9–17.", "manual.pdf": "Battery lasts ten hours",
                     "handbook.docx": "Holidays are booked in March.\nAsk your lead.",
                     "faq.json": "Do you ship abroad?\nYes, to the EU.", "notes.md": "# Notes\nForklifts need a licence."}
    (letter,) = read_dead_letters(tmp_path / "dead.jsonl")
    assert (letter["stage"], letter["doc_id"]) == ("extract", "broken.txt") and "not UTF-8 text" in letter["error"]
    assert summary.skipped == {f"folder file of unsupported type {t}": 1
                               for t in (".css", ".svg", ".png", ".woff2", "(no suffix)")}
    assert (summary.records_read, summary.events_applied, summary.events_dead_lettered) == (6, 5, 1)
    assert summary.accounted and "folder file of unsupported type .png" in summary.render()
