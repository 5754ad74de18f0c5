"""Search and ask: hybrid retrieval, an optional rerank, and answers that cite.

Hybrid retrieval asks the engine for a dense and a BM25 prefetch under the same payload
filter and fuses them with RRF. Every hit also carries its cosine to the query and the
share of the query's terms it contains (from the stored vectors): ``rerank`` orders by
those, and ``ask`` uses them to tell evidence from noise, so a question the documents do
not answer gets "not found in the documents" instead of a guess.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ccc.common import Context

from . import sparse
from .embedding import embed
from .index import Found, VectorIndex, Where
from .models import (
    AskRequest,
    AskResult,
    Citation,
    CollectionView,
    Filters,
    SearchHit,
    SearchMode,
    SearchRequest,
    SearchResult,
)
from .settings import RagSettings

NOT_FOUND = "Not found in the documents."
NOT_FOUND_TOKEN = "NOT_FOUND"
SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages. Cite every fact with "
    "the number of its passage in square brackets, like [1] or [2][3]. If the passages do "
    f"not contain the answer, reply with exactly {NOT_FOUND_TOKEN} and nothing else."
)


def where_of(f: Filters) -> Where:
    return Where(
        tenant=f.tenant,
        sources=f.sources,
        tags=f.tags,
        after=f.ingested_after,
        before=f.ingested_before,
    )


async def retrieve(
    ctx: Context,
    index: VectorIndex,
    collection: CollectionView,
    query: str,
    where: Where,
    *,
    limit: int,
    mode: SearchMode = "hybrid",
    rerank: bool = False,
    fusion: str = "rrf",
) -> list[SearchHit]:
    dense_q: list[float] | None = None
    if mode in ("hybrid", "dense"):
        dense_q = (await embed(ctx, collection.embedding_model, [query]))[0]
    sparse_q = sparse.query(query) if mode in ("hybrid", "sparse") else None
    if sparse_q is not None and not sparse_q.indices:
        sparse_q = None  # only stop words: BM25 has nothing to match
        if dense_q is None:
            return []
    fetch = max(limit * 4, 40) if rerank else limit
    found = await index.query(
        collection.name,
        dense=dense_q,
        sparse=sparse_q,
        where=where,
        limit=fetch,
        candidates=max(limit * 5, 50),
        with_vectors=True,
        fusion=fusion,
    )
    terms = set(sparse.query(query).indices)
    hits = [_hit(f, dense_q, terms) for f in found]
    if rerank:
        hits.sort(
            key=lambda h: (h.similarity or 0.0) + 0.3 * (h.keyword_overlap or 0.0), reverse=True
        )
    return hits[:limit]


def _hit(f: Found, dense_q: list[float] | None, terms: set[int]) -> SearchHit:
    p = f.payload
    similarity = None
    if dense_q is not None and f.dense is not None:
        similarity = float(np.dot(np.asarray(dense_q), np.asarray(f.dense)))
    overlap = len(terms & set(f.sparse_indices)) / len(terms) if terms else None
    return SearchHit(
        id=f.id,
        score=f.score,
        text=str(p.get("text", "")),
        source=str(p.get("source", "")),
        title=p.get("title"),
        heading=p.get("heading"),
        start=int(p.get("start", 0)),
        end=int(p.get("end", 0)),
        page=p.get("page"),
        tags=list(p.get("tags") or []),
        similarity=None if similarity is None else round(similarity, 5),
        keyword_overlap=None if overlap is None else round(overlap, 4),
    )


async def search(
    ctx: Context, index: VectorIndex, collection: CollectionView, req: SearchRequest
) -> SearchResult:
    hits = await retrieve(
        ctx,
        index,
        collection,
        req.query,
        where_of(req),
        limit=req.limit,
        mode=req.mode,
        rerank=req.rerank,
        fusion=req.fusion,
    )
    return SearchResult(collection=collection.name, mode=req.mode, hits=hits)


def relevant(hit: SearchHit, settings: RagSettings) -> bool:
    """Evidence: close in meaning, or containing most of the question's terms."""
    return (hit.similarity or 0.0) >= settings.ask_min_similarity or (
        hit.keyword_overlap or 0.0
    ) >= 0.6


async def ask(
    ctx: Context,
    index: VectorIndex,
    collection: CollectionView,
    req: AskRequest,
    settings: RagSettings,
) -> AskResult:
    hits = await retrieve(ctx, index, collection, req.question, where_of(req), limit=req.limit)
    evidence = [h for h in hits if relevant(h, settings)]
    if not evidence:
        return AskResult(answer=NOT_FOUND, found=False, citations=[])
    context = "\n\n".join(
        f"[{n}] (source: {h.source}{', section: ' + h.heading if h.heading else ''})\n{h.text}"
        for n, h in enumerate(evidence, start=1)
    )
    model = req.model or settings.chat_model
    answer: dict[str, Any] = await ctx.call(
        "ai.chat",
        {
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {req.question}"},
            ],
            "temperature": 0,
            "max_tokens": req.max_tokens,
        },
        timeout=180.0,
    )
    text = str((answer.get("choices") or [{}])[0].get("message", {}).get("content") or "")
    if not text.strip() or NOT_FOUND_TOKEN in text:
        return AskResult(answer=NOT_FOUND, found=False, citations=[], model=answer.get("model"))
    cited = sorted({int(n) for n in re.findall(r"\[(\d+)\]", text) if 1 <= int(n) <= len(evidence)})
    citations = [
        Citation(
            n=n,
            source=evidence[n - 1].source,
            title=evidence[n - 1].title,
            start=evidence[n - 1].start,
            end=evidence[n - 1].end,
            page=evidence[n - 1].page,
            text=evidence[n - 1].text,
        )
        for n in cited
    ]
    return AskResult(
        answer=text.strip(), found=True, citations=citations, model=answer.get("model")
    )
