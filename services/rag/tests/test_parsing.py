"""Parsing and chunking without a bus: structure, offsets, limits, overlap, types."""

from __future__ import annotations

import pytest

from ccc.common import UnsupportedMediaType
from ccc.rag.chunking import chunk, tokens
from ccc.rag.parsing import ParseError, media_type_of, parse


def test_markdown_chunks_follow_headings_and_point_into_the_original() -> None:
    text = (
        "# Guide\n\nIntro.\n\n## Install\n\n"
        + " ".join(f"step{i}" for i in range(300))
        + "\n\n## Use\n\nRun it.\n"
    )
    doc = parse(text.encode(), "text/markdown")
    chunks = chunk(doc, limit=120, overlap=20)
    assert all(text[c.start : c.end] == c.text for c in chunks)
    assert chunks[0].heading == "Guide"
    assert chunks[-1].heading == "Guide > Use" and chunks[-1].text == "Use\n\nRun it."
    install = [c for c in chunks if c.heading == "Guide > Install"]
    assert len(install) >= 3
    assert all(tokens(c.text) <= 120 + 2 for c in install)  # + the heading line
    # consecutive windows of the long paragraph overlap
    assert install[1].start < install[0].end


def test_html_keeps_structure_drops_navigation_and_collects_links() -> None:
    page = (
        b"<html><head><title>T</title><script>var x;</script></head><body>"
        b"<nav><a href='/menu'>menu</a></nav><main><h1>Top</h1><p>One <b>bold</b> line.</p>"
        b"<h2>Sub</h2><ul><li>first</li><li>second</li></ul>"
        b"<table><tr><td>k</td><td>v</td></tr></table><a href='b.html#x'>b</a></main>"
        b"</body></html>"
    )
    doc = parse(page, "text/html", "http://site/a/index.html")
    assert doc.title == "T"
    assert "var x" not in doc.text and "menu" not in doc.text
    assert "One bold line." in doc.text and "k | v" in doc.text
    headings = {doc.text[b.start : b.end]: b.heading for b in doc.blocks}
    assert headings["first"] == "Top > Sub"
    assert "http://site/a/b.html" in doc.links and "http://site/menu" in doc.links


def test_types_by_name_header_or_first_bytes() -> None:
    assert media_type_of("a.MD") == "text/markdown"
    assert media_type_of("https://x/page", "text/html; charset=utf-8") == "text/html"
    assert media_type_of("download", None, b"%PDF-1.7") == "application/pdf"
    with pytest.raises(UnsupportedMediaType, match="docx"):
        media_type_of("photo.png", "image/png")
    with pytest.raises(UnsupportedMediaType):
        media_type_of("archive.zip")


def test_unreadable_documents_raise_parse_error() -> None:
    with pytest.raises(ParseError):
        parse(b"%PDF-1.4 nonsense", "application/pdf")
    with pytest.raises(ParseError):
        parse(
            b"PK\x03\x04 not a docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        )
    with pytest.raises(ParseError):
        parse(b"   \n\n  ", "text/plain")
    assert parse("naïve".encode("utf-16"), "text/plain").text == "naïve"
