"""Chunks by structure: a section's blocks are packed up to a token budget, with overlap.

A chunk never crosses a heading or a PDF page: a new section starts a new chunk. A block longer than
the budget is cut between words. The budget counts word pieces roughly (words and
punctuation marks, a long word counting for several) so a chunk stays under the 256
tokens MiniLM reads. Every chunk is one contiguous span of the extracted text, so
``text[start:end]`` is exactly what was embedded (after its heading) and what a
citation quotes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .parsing import ParsedDocument

_PIECES = re.compile(r"\w+|[^\w\s]")
_WORDS = re.compile(r"\S+")


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int
    end: int
    text: str
    heading: str | None
    page: int | None


def tokens(text: str) -> int:
    """Approximate word-piece count: a piece per 6 characters of a word, at least one."""
    return sum(max(1, (len(p) + 5) // 6) for p in _PIECES.findall(text))


@dataclass
class _Piece:
    start: int
    end: int
    tokens: int
    heading: str | None
    page: int | None
    is_heading: bool = False


def _pieces(doc: ParsedDocument, limit: int, overlap: int) -> list[_Piece]:
    """Blocks, with a block over the budget cut into overlapping word windows."""
    out: list[_Piece] = []
    for block in doc.blocks:
        text = doc.text[block.start : block.end]
        n = tokens(text)
        if n <= limit:
            out.append(
                _Piece(block.start, block.end, n, block.heading, block.page, block.is_heading)
            )
            continue
        words = [(m.start(), m.end(), tokens(m.group())) for m in _WORDS.finditer(text)]
        i = 0
        while i < len(words):
            j, count = i, 0
            while j < len(words) and (j == i or count + words[j][2] <= limit):
                count += words[j][2]
                j += 1
            out.append(
                _Piece(
                    block.start + words[i][0],
                    block.start + words[j - 1][1],
                    count,
                    block.heading,
                    block.page,
                    False,
                )
            )
            if j >= len(words):
                break
            back, k = 0, j
            while k - 1 > i and back + words[k - 1][2] <= overlap:
                k -= 1
                back += words[k][2]
            i = k
    return out


def chunk(doc: ParsedDocument, limit: int = 200, overlap: int = 40) -> list[Chunk]:
    pieces = _pieces(doc, limit, overlap)
    chunks: list[Chunk] = []
    current: list[_Piece] = []

    def emit() -> None:
        if not current:
            return
        start, end = current[0].start, current[-1].end
        chunks.append(
            Chunk(len(chunks), start, end, doc.text[start:end], current[0].heading, current[0].page)
        )

    for piece in pieces:
        section_changed = bool(current) and (
            piece.heading != current[0].heading or piece.page != current[0].page
        )
        only_headings = all(p.is_heading for p in current)
        full = (
            bool(current)
            and not only_headings
            and sum(p.tokens for p in current) + piece.tokens > limit
        )
        if section_changed or full:
            emit()
            carried: list[_Piece] = []
            if full and not section_changed and overlap > 0:
                budget = overlap
                for p in reversed(current):
                    if p.tokens > budget or p.tokens + piece.tokens > limit - 1:
                        break
                    carried.insert(0, p)
                    budget -= p.tokens
            current = carried
        current.append(piece)
    emit()
    return chunks
