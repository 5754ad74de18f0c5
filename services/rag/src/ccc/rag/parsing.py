"""Documents to text with structure: txt, md, html, pdf and docx.

Every parser yields blocks (a heading, a paragraph, a list item, a table row, a code
block) laid end to end in one extracted text; a block knows its offsets in that text,
the heading path above it and, for PDF, its page. Chunks and citations point into the
extracted text with those offsets.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ccc.common import UnsupportedMediaType

# extension -> media type; the service answers 415 naming these
SUPPORTED: dict[str, str] = {
    "txt": "text/plain",
    "md": "text/markdown",
    "markdown": "text/markdown",
    "html": "text/html",
    "htm": "text/html",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
MEDIA_TYPES = frozenset(SUPPORTED.values())
SUPPORTED_TEXT = "txt, md, html, pdf, docx (" + ", ".join(sorted(MEDIA_TYPES)) + ")"


class ParseError(Exception):
    """The document could not be read (corrupt, encrypted, empty): it fails alone."""


@dataclass
class Block:
    start: int
    end: int
    heading: str | None = None
    page: int | None = None
    is_heading: bool = False


@dataclass
class ParsedDocument:
    text: str
    title: str | None = None
    blocks: list[Block] = field(default_factory=list)
    links: list[str] = field(default_factory=list)


class _Builder:
    """Lays blocks end to end, separated by a blank line, and tracks the heading path."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.blocks: list[Block] = []
        self.path: list[tuple[int, str]] = []
        self.title: str | None = None

    def heading(self, level: int, text: str, page: int | None = None) -> None:
        text = " ".join(text.split())
        if not text:
            return
        self.path = [(lvl, t) for lvl, t in self.path if lvl < level] + [(level, text)]
        if self.title is None:
            self.title = text
        self.add(text, page, is_heading=True)

    def add(self, text: str, page: int | None = None, *, is_heading: bool = False) -> None:
        text = text.strip()
        if not text:
            return
        if self.parts:
            self.parts.append("\n\n")
            self.length += 2
        start = self.length
        self.parts.append(text)
        self.length += len(text)
        heading = " > ".join(t for _, t in self.path) or None
        self.blocks.append(Block(start, self.length, heading, page, is_heading))

    def build(self, title: str | None = None) -> ParsedDocument:
        return ParsedDocument("".join(self.parts), title or self.title, self.blocks)


def media_type_of(filename: str, content_type: str | None = None, head: bytes = b"") -> str:
    """The media type of a document, from an explicit type, the name, or the first bytes.
    Raises UnsupportedMediaType naming the supported types."""
    if content_type:
        base = content_type.split(";")[0].strip().lower()
        if base in MEDIA_TYPES:
            return base
        if base in {"text/x-markdown"}:
            return "text/markdown"
        if base in {"application/xhtml+xml"}:
            return "text/html"
        if base not in {"application/octet-stream", "binary/octet-stream", ""}:
            suffix = PurePosixPath(filename.split("?")[0]).suffix.lower().lstrip(".")
            if suffix not in SUPPORTED:
                raise UnsupportedMediaType(
                    f"{filename}: {base} is not supported; supported: {SUPPORTED_TEXT}"
                )
    suffix = PurePosixPath(filename.split("?")[0]).suffix.lower().lstrip(".")
    if suffix in SUPPORTED:
        return SUPPORTED[suffix]
    if head.startswith(b"%PDF"):
        return "application/pdf"
    if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "text/html"
    raise UnsupportedMediaType(
        f"{filename}: type {suffix or 'unknown'!r} is not supported; supported: {SUPPORTED_TEXT}"
    )


def parse(data: bytes, media_type: str, base_url: str | None = None) -> ParsedDocument:
    """Extract text and structure; ParseError when the document cannot be read."""
    if media_type == "application/pdf":
        doc = _pdf(data)
    elif media_type == SUPPORTED["docx"]:
        doc = _docx(data)
    elif media_type == "text/html":
        doc = _html(_decode(data), base_url)
    elif media_type == "text/markdown":
        doc = _markdown(_decode(data))
    elif media_type == "text/plain":
        doc = _plain(_decode(data))
    else:
        raise UnsupportedMediaType(f"{media_type} is not supported; supported: {SUPPORTED_TEXT}")
    if not doc.text.strip():
        raise ParseError("no text could be extracted")
    return doc


def _decode(data: bytes) -> str:
    """UTF-16 by its byte-order mark, else UTF-8 (BOM or not), else Latin-1."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_PARAGRAPHS = re.compile(r"\n\s*\n")


def _plain(text: str) -> ParsedDocument:
    """Plain text keeps its own offsets: blocks are the paragraphs where they stand."""
    b = _Spans(text)
    at = 0
    for m in _PARAGRAPHS.finditer(text):
        b.add(at, m.start())
        at = m.end()
    b.add(at, len(text))
    return b.build()


class _Spans:
    """Blocks as spans of the original text (plain text and markdown), so a chunk's
    offsets point into the document as uploaded."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.blocks: list[Block] = []
        self.path: list[tuple[int, str]] = []
        self.title: str | None = None

    def add(self, start: int, end: int, *, is_heading: bool = False) -> None:
        raw = self.text[start:end]
        stripped = raw.strip()
        if not stripped:
            return
        start += len(raw) - len(raw.lstrip())
        end = start + len(stripped)
        heading = " > ".join(t for _, t in self.path) or None
        self.blocks.append(Block(start, end, heading, None, is_heading))

    def heading(self, level: int, start: int, end: int) -> None:
        text = " ".join(self.text[start:end].split())
        if not text:
            return
        self.path = [(lvl, t) for lvl, t in self.path if lvl < level] + [(level, text)]
        if self.title is None:
            self.title = text
        self.add(start, end, is_heading=True)

    def build(self) -> ParsedDocument:
        return ParsedDocument(self.text, self.title, self.blocks)


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_MD_FENCE = re.compile(r"^\s*(```|~~~)")


def _markdown(text: str) -> ParsedDocument:
    """Headings, paragraphs, list runs and fenced code, as spans of the markdown."""
    b = _Spans(text)
    para: tuple[int, int] | None = None  # (start, end) of the paragraph being read
    fence_start: int | None = None
    last_line = ""
    pos = 0

    def flush() -> None:
        nonlocal para
        if para is not None:
            b.add(*para)
            para = None

    for line in text.splitlines(keepends=True):
        start, pos = pos, pos + len(line)
        end = start + len(line.rstrip("\r\n"))
        bare = line.rstrip("\r\n")
        if fence_start is not None:
            if _MD_FENCE.match(bare):
                b.add(fence_start, end)
                fence_start = None
            continue
        if _MD_FENCE.match(bare):
            flush()
            fence_start = start
            continue
        m = _MD_HEADING.match(bare)
        if m:
            flush()
            b.heading(len(m.group(1)), start + m.start(2), start + m.end(2))
        elif not bare.strip():
            flush()
        elif _is_list(bare) and para is not None and not _is_list(last_line):
            flush()
            para = (start, end)
        else:
            para = (para[0], end) if para is not None else (start, end)
        last_line = bare
    if fence_start is not None:
        b.add(fence_start, len(text))
    flush()
    return b.build()


def _is_list(line: str) -> bool:
    return bool(re.match(r"^\s*([-*+]|\d+[.)])\s+", line))


_HTML_DROP = ("script", "style", "noscript", "template", "svg", "nav", "footer", "form", "iframe")
_HTML_BLOCKS = {"p", "li", "pre", "blockquote", "td", "th", "dt", "dd", "figcaption", "caption"}


def _html(markup: str, base_url: str | None) -> ParsedDocument:
    from urllib.parse import urldefrag, urljoin

    from bs4 import BeautifulSoup, Comment, Tag

    soup = BeautifulSoup(markup, "lxml")
    links: list[str] = []
    for a in soup.find_all("a", href=True):
        href = str(a["href"]).strip()
        if href and not href.startswith(("mailto:", "javascript:", "tel:", "#")):
            links.append(urldefrag(urljoin(base_url or "", href))[0])
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text().split()) if title_tag else None
    for tag in soup(_HTML_DROP):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    b = _Builder()

    containers = [
        *_HTML_BLOCKS,
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "tr",
        "div",
        "section",
        "article",
        "ul",
        "ol",
        "table",
        "dl",
        "header",
        "main",
        "aside",
        "br",
    ]

    def walk(node: Tag) -> None:
        for child in node.children:
            if not isinstance(child, Tag):
                if not isinstance(child, Comment):
                    b.add(" ".join(str(child).split()))
                continue
            name = child.name or ""
            if re.fullmatch(r"h[1-6]", name):
                b.heading(int(name[1]), child.get_text(" "))
            elif name in _HTML_BLOCKS:
                text = child.get_text("\n" if name == "pre" else " ")
                b.add(text if name == "pre" else " ".join(text.split()))
            elif name == "tr":
                cells = [" ".join(c.get_text(" ").split()) for c in child.find_all(["td", "th"])]
                b.add(" | ".join(c for c in cells if c))
            elif child.find(containers) is None:
                b.add(" ".join(child.get_text(" ").split()))
            else:
                walk(child)

    if isinstance(root, Tag):
        walk(root)
    return _with_links(b.build(title), links)


def _with_links(doc: ParsedDocument, links: list[str]) -> ParsedDocument:
    doc.links = list(dict.fromkeys(links))
    return doc


def _pdf(data: bytes) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    b = _Builder()
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise ParseError("the PDF is encrypted")
        meta_title = reader.metadata.title if reader.metadata else None
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            for para in _PARAGRAPHS.split(text):
                b.add(" ".join(para.split()), page=number)
    except ParseError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, AttributeError) as exc:
        raise ParseError(f"not a readable PDF: {type(exc).__name__}: {exc}") from exc
    return b.build(str(meta_title) if meta_title else None)


def _docx(data: bytes) -> ParsedDocument:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ParseError(f"not a readable DOCX: {type(exc).__name__}: {exc}") from exc
    b = _Builder()
    title = document.core_properties.title or None
    body = document.element.body
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            para = Paragraph(child, document)
            style = (para.style.name if para.style is not None else "") or ""
            m = re.match(r"Heading (\d)", style)
            if style == "Title":
                b.heading(1, para.text)
            elif m:
                b.heading(int(m.group(1)) + 1, para.text)
            else:
                b.add(para.text)
        elif tag == "tbl":
            for row in Table(child, document).rows:
                cells = [" ".join(c.text.split()) for c in row.cells]
                b.add(" | ".join(dict.fromkeys(c for c in cells if c)))
    return b.build(title)
