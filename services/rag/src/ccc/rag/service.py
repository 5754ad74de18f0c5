"""The ``rag`` service: collections, ingestion (files, URLs, crawls), search and ask.

Endpoints are thin: they find the collection, then hand over to ``ingest`` (documents
in and out), ``search`` (retrieval and answers) and the engine in ``index``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from ccc.common import Conflict, Context, NotFound, Service, Unavailable

from . import ingest as ingestion
from . import search as retrieval
from . import store
from .embedding import embed
from .index import ClientIndex, EdgeIndex, VectorIndex
from .models import (
    AskRequest,
    AskResult,
    CollectionCreate,
    CollectionList,
    CollectionRef,
    CollectionView,
    Deleted,
    DocumentList,
    DocumentQuery,
    DocumentRef,
    DocumentView,
    Empty,
    IngestRequest,
    IngestResult,
    SearchRequest,
    SearchResult,
)
from .parsing import media_type_of
from .settings import RagSettings

log = logging.getLogger(__name__)


service = Service(
    "rag",
    description="Retrieval-augmented generation: crawling and ingestion, hybrid search on "
    "Qdrant (dense + BM25, RRF), answers with citations",
    settings=RagSettings(),
)


def settings() -> RagSettings:
    current = service.settings
    return current if isinstance(current, RagSettings) else RagSettings()


class _Opened:
    """The vector index this process opened at start (one per process)."""

    index: VectorIndex | None = None


def index() -> VectorIndex:
    if _Opened.index is None:
        raise Unavailable("the rag service is starting")
    return _Opened.index


@service.on_startup
async def _open_index(svc: Service) -> None:
    s = settings()
    if s.qdrant_url:
        key = s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None
        _Opened.index = ClientIndex(s.qdrant_url, key)
    else:
        _Opened.index = EdgeIndex(s.data_dir / "rag")
    log.info("rag index: %s", _Opened.index.engine)


@service.on_shutdown
async def _close_index(svc: Service) -> None:
    idx, _Opened.index = _Opened.index, None
    if idx is not None:
        await idx.close()


# -- collections -------------------------------------------------------------------------


@service.endpoint("collection.create", http="POST /v1/rag/collections", roles=("operator",))
async def create_collection(req: CollectionCreate, ctx: Context) -> CollectionView:
    """Create a collection; the embedding model and its dimension are recorded with it.
    Creating it again with the same model is a no-op; with another model, 409."""
    s = settings()
    model = req.embedding_model or s.embedding_model
    existing = await ctx.state.get_model(store.collection_key(req.name), CollectionView)
    if existing is not None:
        if existing.embedding_model != model or (
            req.dimensions and req.dimensions != existing.dimensions
        ):
            raise Conflict(f"collection {req.name!r} exists with model {existing.embedding_model}")
        return existing
    dimensions = req.dimensions
    if dimensions is None:
        probe = await embed(ctx, model, ["dimension probe"])
        dimensions = len(probe[0])
    view = CollectionView(
        name=req.name,
        description=req.description,
        embedding_model=model,
        dimensions=dimensions,
        engine=index().engine,
        created_at=datetime.now(UTC),
    )
    await index().create(req.name, dimensions)
    await ctx.state.create(store.collection_key(req.name), view)
    await ctx.emit("collection.created", view)
    return view


async def _with_counts(view: CollectionView) -> CollectionView:
    docs = await store.documents(service.state, view.name)
    return view.model_copy(update={"documents": len(docs), "chunks": sum(d.chunks for d in docs)})


@service.endpoint("collection.list", http="GET /v1/rag/collections", roles=("reader",))
async def list_collections(req: Empty, ctx: Context) -> CollectionList:
    """Every collection, with its document and chunk counts."""
    out = []
    async for entry in ctx.state.items("collection."):
        out.append(await _with_counts(CollectionView.model_validate(entry.value)))
    return CollectionList(collections=out)


@service.endpoint("collection.get", http="GET /v1/rag/collections/{collection}", roles=("reader",))
async def get_collection(req: CollectionRef, ctx: Context) -> CollectionView:
    """One collection, with its document and chunk counts."""
    return await _with_counts(await store.load_collection(ctx.state, req.collection))


@service.endpoint(
    "collection.delete", http="DELETE /v1/rag/collections/{collection}", roles=("operator",)
)
async def delete_collection(req: CollectionRef, ctx: Context) -> Deleted:
    """Delete a collection: its index, its document records, then the collection."""
    view = await store.load_collection(ctx.state, req.collection)
    docs = await store.documents(ctx.state, view.name)
    await index().drop(view.name)
    for d in docs:
        await ctx.state.delete(store.document_key(view.name, d.id))
    await ctx.state.delete(store.collection_key(view.name))
    await ctx.emit("collection.deleted", {"collection": view.name})
    return Deleted(deleted=view.name, chunks=sum(d.chunks for d in docs))


# -- documents ---------------------------------------------------------------------------


async def check_ingest(request: IngestRequest, ctx: Context) -> None:
    """Refuse at once what would fail anyway: an unknown collection (404), a file of an
    unsupported type (415)."""
    await store.load_collection(ctx.state, request.collection)
    for f in request.files:
        media_type_of(f.filename, f.content_type, f.content()[:64])


@service.endpoint(
    "ingest",
    http="POST /v1/rag/collections/{collection}/ingest",
    roles=("operator",),
    operation=True,
    precheck=check_ingest,
    resumable=True,
    timeout=3600.0,
)
async def ingest(req: IngestRequest, ctx: Context) -> IngestResult:
    """Ingest files (JSON with base64 content: txt, md, html, pdf, docx), texts, URLs or a
    crawl. An operation: 202 at once, progress events, the result in the record.
    Unchanged documents are skipped, changed ones replaced, a crawl's vanished pages
    removed; a document that fails (corrupt, unreachable) fails alone."""
    collection = await store.load_collection(ctx.state, req.collection)
    result = await ingestion.run(req, ctx, collection, index(), settings())
    if result.chunks_indexed:
        await index().settle(collection.name)
    await ctx.emit(
        "ingest.finished",
        {k: v for k, v in result.model_dump(mode="json").items() if k != "documents"},
    )
    return result


@service.endpoint(
    "document.list", http="GET /v1/rag/collections/{collection}/documents", roles=("reader",)
)
async def list_documents(req: DocumentQuery, ctx: Context) -> DocumentList:
    """The tenant's documents in a collection, with version, hash and chunk count."""
    await store.load_collection(ctx.state, req.collection)
    docs = [d for d in await store.documents(ctx.state, req.collection) if d.tenant == req.tenant]
    docs.sort(key=lambda d: d.source)
    return DocumentList(documents=docs[: req.limit])


@service.endpoint(
    "document.get", http="POST /v1/rag/collections/{collection}/documents/get", roles=("reader",)
)
async def get_document(req: DocumentRef, ctx: Context) -> DocumentView:
    """One document's record, by source (a filename or URL)."""
    await store.load_collection(ctx.state, req.collection)
    record = await store.load_document(ctx.state, req.collection, req.tenant, req.source)
    if record is None:
        raise NotFound(f"no document {req.source!r} in {req.collection!r}")
    return record


@service.endpoint(
    "document.delete",
    http="POST /v1/rag/collections/{collection}/documents/delete",
    roles=("operator",),
)
async def delete_document(req: DocumentRef, ctx: Context) -> Deleted:
    """Remove a document (by source) and all its chunks from the index."""
    await store.load_collection(ctx.state, req.collection)
    record = await store.load_document(ctx.state, req.collection, req.tenant, req.source)
    if record is None:
        raise NotFound(f"no document {req.source!r} in {req.collection!r}")
    await ingestion.delete_document(ctx, req.collection, index(), record)
    return Deleted(deleted=req.source, chunks=record.chunks)


# -- retrieval ---------------------------------------------------------------------------


@service.endpoint("search", http="POST /v1/rag/collections/{collection}/search", roles=("reader",))
async def search(req: SearchRequest, ctx: Context) -> SearchResult:
    """Hybrid search (dense + BM25 sparse, fused with RRF), or dense or sparse alone,
    under the tenant and optional source, tag and date filters; ``rerank`` re-orders the
    candidates by cosine and term overlap."""
    collection = await store.load_collection(ctx.state, req.collection)
    return await retrieval.search(ctx, index(), collection, req)


@service.endpoint(
    "ask", http="POST /v1/rag/collections/{collection}/ask", roles=("reader",), timeout=240.0
)
async def ask(req: AskRequest, ctx: Context) -> AskResult:
    """Answer a question from the collection through ai.chat, citing the passages used
    as [1], [2] with source and offsets; "Not found in the documents." when retrieval
    finds nothing relevant."""
    collection = await store.load_collection(ctx.state, req.collection)
    return await retrieval.ask(ctx, index(), collection, req, settings())
