"""BM25-style sparse vectors: term frequencies here, IDF in the engine.

Qdrant's BM25 recipe: the document side holds a saturated, length-normalised term
frequency per token (hashed token id), the query side a weight of 1 per token, and the
collection's sparse vector has the IDF modifier, so the engine multiplies in the inverse
document frequency over what is indexed now. The tokenizer (lower-casing, English
stop words, Snowball stemmer) is Qdrant's own, from qdrant-edge's ``Bm25``, so both
engines get the same vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from qdrant_edge import Bm25, Bm25Config

AVERAGE_CHUNK_WORDS = 120.0


@dataclass(frozen=True)
class Sparse:
    indices: list[int]
    values: list[float]


@lru_cache(maxsize=1)
def _model() -> Bm25:
    return Bm25(Bm25Config(avg_len=AVERAGE_CHUNK_WORDS, language="english"))


def document(text: str) -> Sparse:
    v = _model().embed_document(text)
    return Sparse(list(v.indices), list(v.values))


def query(text: str) -> Sparse:
    v = _model().embed_query(text)
    return Sparse(list(v.indices), list(v.values))
