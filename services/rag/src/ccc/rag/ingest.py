"""Ingestion: gather documents, skip the unchanged, replace the changed, drop the gone.

A document's identity is (tenant, source); its version is a hash of its bytes, its tags
and the chunking settings. The KV record of a document says which version is indexed:

- same version → ``unchanged``: nothing is parsed, embedded or written;
- new version → parsed, chunked, embedded, then the index swaps the document's chunks
  (new ones in, old ones out) and the record is written → ``added`` / ``updated``;
- a crawl's page that is gone (404/410, or no longer linked) → its chunks and record
  leave → ``deleted``.

Every document fails alone: a corrupt PDF, an unreachable URL or a failed embedding
call marks that document ``failed`` with the reason, and nothing of its new version is
left in the index (vectors are computed before anything is written).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from ccc.common import CCCError, Context

from . import sparse, store
from .chunking import Chunk, chunk
from .crawler import Fetched, crawl, fetch
from .embedding import embed
from .index import ChunkPoint, VectorIndex, Where
from .models import CollectionView, DocumentOutcome, DocumentView, IngestRequest, IngestResult
from .parsing import ParsedDocument, ParseError, media_type_of, parse
from .settings import RagSettings

log = logging.getLogger(__name__)
POINT_NAMESPACE = uuid.UUID("5f0b7b52-8d1e-4a55-9a59-3c1c0d2b6a11")


@dataclass
class Candidate:
    """One document on its way in."""

    source: str
    data: bytes = b""
    filename: str = ""
    content_type: str | None = None
    title: str | None = None
    tags: list[str] = field(default_factory=list)
    origin: str | None = None
    error: str | None = None
    media_type: str = ""
    version: str = ""
    content_hash: str = ""
    previous: DocumentView | None = None
    parsed: ParsedDocument | None = None
    chunks: list[Chunk] = field(default_factory=list)
    vectors: list[list[float]] = field(default_factory=list)


def _version(c: Candidate, settings: RagSettings, model: str) -> None:
    c.content_hash = hashlib.sha256(c.data).hexdigest()
    recipe = "|".join(
        [
            c.content_hash,
            c.media_type,
            ",".join(sorted(set(c.tags))),
            c.title or "",
            str(settings.chunk_tokens),
            str(settings.chunk_overlap),
            model,
        ]
    )
    c.version = hashlib.sha256(recipe.encode()).hexdigest()[:20]


def _now() -> datetime:
    return datetime.now(UTC)


async def _gather(
    req: IngestRequest, ctx: Context, settings: RagSettings
) -> tuple[list[Candidate], dict[str, set[str]]]:
    """Documents of the request; for a crawl, the origin and the sources still present."""
    out: list[Candidate] = []
    for f in req.files:
        out.append(
            Candidate(
                source=f.source or f.filename,
                data=f.content(),
                filename=f.filename,
                content_type=f.content_type,
                tags=sorted({*req.tags, *f.tags}),
            )
        )
    for t in req.texts:
        out.append(
            Candidate(
                source=t.source,
                data=t.text.encode(),
                filename=t.source,
                content_type=t.content_type,
                title=t.title,
                tags=sorted({*req.tags, *t.tags}),
            )
        )
    present: dict[str, set[str]] = {}
    if not (req.urls or req.crawl):
        return out, present
    headers = {"User-Agent": settings.user_agent}
    timeout = httpx.Timeout(settings.fetch_timeout)
    async with httpx.AsyncClient(follow_redirects=True, headers=headers, timeout=timeout) as client:
        sem = asyncio.Semaphore(8)

        async def one(url: str) -> Fetched:
            async with sem:
                return await fetch(client, url, settings.max_document_bytes)

        for page in await asyncio.gather(*(one(u) for u in req.urls)):
            out.append(_from_page(page, req.tags, None))
        if req.crawl is not None:
            spec = req.crawl

            async def on_page(page: Fetched, n: int) -> None:
                await ctx.progress(min(0.3, 0.3 * n / spec.max_pages), f"fetched {n} pages")

            result = await crawl(
                client,
                spec,
                max_bytes=settings.max_document_bytes,
                user_agent=settings.user_agent,
                on_page=on_page,
            )
            kept: set[str] = set()
            for page in result.pages:
                gone = page.error is not None and page.error.startswith(("HTTP 404", "HTTP 410"))
                if not gone:
                    kept.add(page.url)
                if page.error is None or not gone:
                    out.append(_from_page(page, req.tags, spec.start_url))
            if spec.prune:
                present[spec.start_url] = kept
    return out, present


def _from_page(page: Fetched, tags: list[str], origin: str | None) -> Candidate:
    return Candidate(
        source=page.url,
        data=page.data,
        filename=page.url,
        content_type=page.content_type,
        tags=sorted(set(tags)),
        origin=origin,
        error=page.error,
    )


def _prepare(c: Candidate, settings: RagSettings, model: str) -> None:
    """Type, version; the caller checks the version before the (costly) parse."""
    if c.error is not None:
        return
    if len(c.data) > settings.max_document_bytes:
        c.error = f"larger than {settings.max_document_bytes} bytes"
        return
    try:
        c.media_type = media_type_of(c.filename, c.content_type, c.data[:64])
    except CCCError as exc:
        c.error = exc.detail
        return
    _version(c, settings, model)


def _parse_and_chunk(c: Candidate, settings: RagSettings) -> None:
    try:
        c.parsed = parse(c.data, c.media_type, c.source if c.source.startswith("http") else None)
    except ParseError as exc:
        c.error = str(exc)
        return
    except CCCError as exc:
        c.error = exc.detail
        return
    if c.title is None:
        c.title = c.parsed.title
    c.chunks = chunk(c.parsed, settings.chunk_tokens, settings.chunk_overlap)
    if not c.chunks:
        c.error = "no text to index"


def _embedding_text(c: Candidate, ch: Chunk) -> str:
    """What the dense model reads: the section path gives a chunk its context."""
    if ch.heading and not ch.text.startswith(ch.heading.rsplit(" > ", 1)[-1]):
        return f"{ch.heading}\n{ch.text}"
    return ch.text


def _points(c: Candidate, doc_id: str, tenant: str, when: datetime) -> list[ChunkPoint]:
    points = []
    for ch, vector in zip(c.chunks, c.vectors, strict=True):
        payload: dict[str, Any] = {
            "tenant": tenant,
            "doc": doc_id,
            "version": c.version,
            "source": c.source,
            "title": c.title,
            "heading": ch.heading,
            "text": ch.text,
            "chunk": ch.index,
            "start": ch.start,
            "end": ch.end,
            "page": ch.page,
            "tags": c.tags,
            "ingested_at": when.isoformat().replace("+00:00", "Z"),
        }
        point_id = str(uuid.uuid5(POINT_NAMESPACE, f"{doc_id}:{c.version}:{ch.index}"))
        points.append(
            ChunkPoint(point_id, vector, sparse.document(_embedding_text(c, ch)), payload)
        )
    return points


async def run(
    req: IngestRequest,
    ctx: Context,
    collection: CollectionView,
    index: VectorIndex,
    settings: RagSettings,
) -> IngestResult:
    started = time.perf_counter()
    model = collection.embedding_model
    await ctx.progress(0.0, "gathering documents")
    candidates, present = await _gather(req, ctx, settings)
    outcomes: list[DocumentOutcome] = []
    todo: list[Candidate] = []
    seen_sources: set[str] = set()
    for c in candidates:
        if c.source in seen_sources:
            continue
        seen_sources.add(c.source)
        _prepare(c, settings, model)
        if c.error is not None:
            outcomes.append(DocumentOutcome(source=c.source, status="failed", reason=c.error))
            continue
        c.previous = await store.load_document(ctx.state, collection.name, req.tenant, c.source)
        if c.previous is not None and c.previous.version == c.version:
            outcomes.append(
                DocumentOutcome(source=c.source, status="unchanged", chunks=c.previous.chunks)
            )
            continue
        todo.append(c)
    await ctx.progress(0.3, f"{len(todo)} documents to index, {len(outcomes)} done")

    # parse in a worker thread (pypdf and BeautifulSoup are CPU work)
    def parse_all() -> None:
        for c in todo:
            _parse_and_chunk(c, settings)

    await asyncio.to_thread(parse_all)
    ready: list[Candidate] = []
    for c in todo:
        if c.error is not None:
            outcomes.append(DocumentOutcome(source=c.source, status="failed", reason=c.error))
        else:
            ready.append(c)

    chunks_indexed = 0
    # embed in groups of documents, so small documents share batches
    group: list[Candidate] = []
    groups: list[list[Candidate]] = []
    size = 0
    for c in ready:
        group.append(c)
        size += len(c.chunks)
        if size >= settings.embed_batch * 4:
            groups.append(group)
            group, size = [], 0
    if group:
        groups.append(group)
    done = 0
    for g in groups:
        texts = [_embedding_text(c, ch) for c in g for ch in c.chunks]
        try:
            vectors = await embed(
                ctx, model, texts, batch=settings.embed_batch, parallel=settings.embed_parallel
            )
            if vectors and len(vectors[0]) != collection.dimensions:
                raise ValueError(
                    f"{model} gave {len(vectors[0])} dimensions; the collection has "
                    f"{collection.dimensions}"
                )
        except (CCCError, ValueError) as exc:
            reason = f"embedding failed: {getattr(exc, 'detail', None) or exc}"
            for c in g:
                outcomes.append(DocumentOutcome(source=c.source, status="failed", reason=reason))
            continue
        at = 0
        for c in g:
            c.vectors = vectors[at : at + len(c.chunks)]
            at += len(c.chunks)
            outcome = await _write(c, ctx, collection, index, req.tenant)
            outcomes.append(outcome)
            if outcome.status != "failed":
                chunks_indexed += outcome.chunks
            done += 1
            await ctx.progress(
                0.3 + 0.65 * done / max(1, len(ready)), f"indexed {done}/{len(ready)} documents"
            )

    for origin, kept in present.items():
        outcomes.extend(await _prune(ctx, collection, index, req.tenant, origin, kept))

    counts = {
        s: sum(1 for o in outcomes if o.status == s)
        for s in ("added", "updated", "unchanged", "deleted", "failed")
    }
    return IngestResult(
        collection=collection.name,
        tenant=req.tenant,
        documents=outcomes,
        chunks_indexed=chunks_indexed,
        seconds=round(time.perf_counter() - started, 3),
        **counts,
    )


async def _write(
    c: Candidate, ctx: Context, collection: CollectionView, index: VectorIndex, tenant: str
) -> DocumentOutcome:
    doc_id = store.document_id(tenant, c.source)
    now = _now()
    try:
        await index.replace(collection.name, doc_id, c.version, _points(c, doc_id, tenant, now))
    except Exception as exc:  # the engine refused: this document fails, the batch goes on
        log.exception("indexing %s failed", c.source)
        return DocumentOutcome(source=c.source, status="failed", reason=f"index: {exc}")
    record = DocumentView(
        id=doc_id,
        collection=collection.name,
        tenant=tenant,
        source=c.source,
        title=c.title,
        content_type=c.media_type,
        content_hash=c.content_hash,
        chunks=len(c.chunks),
        version=c.version,
        tags=c.tags,
        origin=c.origin or (c.previous.origin if c.previous else None),
        ingested_at=c.previous.ingested_at if c.previous else now,
        updated_at=now,
    )
    await ctx.state.put(store.document_key(collection.name, doc_id), record)
    status = "updated" if c.previous is not None else "added"
    event = {
        "collection": collection.name,
        "tenant": tenant,
        "source": c.source,
        "document": doc_id,
        "version": c.version,
        "chunks": len(c.chunks),
    }
    await ctx.emit(f"document.{'updated' if status == 'updated' else 'ingested'}", event)
    return DocumentOutcome(source=c.source, status=status, chunks=len(c.chunks))


async def delete_document(
    ctx: Context, collection: str, index: VectorIndex, record: DocumentView
) -> None:
    await index.delete(collection, Where(doc=record.id))
    await ctx.state.delete(store.document_key(collection, record.id))
    await ctx.emit(
        "document.deleted",
        {
            "collection": collection,
            "tenant": record.tenant,
            "source": record.source,
            "document": record.id,
        },
    )


async def _prune(
    ctx: Context,
    collection: CollectionView,
    index: VectorIndex,
    tenant: str,
    origin: str,
    kept: set[str],
) -> list[DocumentOutcome]:
    """Documents an earlier crawl of ``origin`` indexed that this crawl did not find."""
    out: list[DocumentOutcome] = []
    for record in await store.documents(ctx.state, collection.name):
        if record.tenant != tenant or record.origin != origin or record.source in kept:
            continue
        await delete_document(ctx, collection.name, index, record)
        out.append(DocumentOutcome(source=record.source, status="deleted", chunks=record.chunks))
    return out
