"""Text extraction by type, and the registry users extend."""
from __future__ import annotations

import io

import pytest

from transforms.extract import ExtractionError, extract_text, register_extractor


def test_plain_markdown_html_and_json():
    assert extract_text("a.txt", "héllo".encode()) == "héllo"
    assert extract_text("a.md", b"# Title\n\nBody") == "# Title\n\nBody"
    html = b"<html><head><title>t</title><style>p{}</style></head><body><h1>Head</h1><script>x=1</script>" \
           b"<p>Visible &amp; kept</p></body></html>"
    assert extract_text("page.html", html) == "Head\nVisible & kept"
    assert extract_text("data.json", b'{"title": "T", "n": 3, "items": [{"body": "B"}]}') == "T\nB"


def test_pdf_and_docx():
    import docx
    from pypdf import PdfWriter

    document = docx.Document()
    document.add_paragraph("First paragraph.")
    document.add_paragraph("Second paragraph.")
    buffer = io.BytesIO()
    document.save(buffer)
    assert extract_text("report.docx", buffer.getvalue()) == "First paragraph.\nSecond paragraph."
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    pdf = io.BytesIO()
    writer.write(pdf)
    assert extract_text("blank.pdf", pdf.getvalue()) == ""


def test_content_type_is_used_when_the_name_has_no_known_suffix():
    assert extract_text("blob-without-suffix", b"<p>x</p>", "text/html; charset=utf-8") == "x"


@pytest.mark.parametrize("name, data, reason", [
    ("image.png", b"\x89PNG", "unsupported document type '.png'"),
    ("broken.pdf", b"%PDF-1.7 garbage", "broken PDF"),
    ("broken.docx", b"not a zip", "broken DOCX"),
    ("latin1.txt", "é".encode("latin-1"), "not UTF-8"),
])
def test_unsupported_or_broken_files_raise_a_clear_error(name: str, data: bytes, reason: str):
    with pytest.raises(ExtractionError, match=reason):
        extract_text(name, data)


def test_a_user_can_register_an_extractor():
    register_extractor(".csv", lambda data: data.decode().replace(",", " "), ("text/csv",))
    assert extract_text("table.csv", b"a,b") == "a b"
