"""Where chunks live: a vector index with a dense and a BM25 sparse vector per chunk.

Two engines behind one small interface (see docs/adr/0500-rag-engine.md):

- ``EdgeIndex`` (the default): one Qdrant Edge shard per collection under
  ``<data_dir>/rag/<collection>``, the Qdrant engine itself running in this process
  (Rust; filters use the payload indexes). Its API is synchronous, so calls run in a
  worker thread; a lock per shard makes a document's replacement atomic to readers.
- ``ClientIndex``: a Qdrant server through qdrant-client (``CCC_QDRANT_URL``), one
  Qdrant collection per rag collection. Qdrant has no multi-operation transactions:
  a replacement upserts the new version, then deletes the old one by filter, so a reader
  may see both versions for that moment (never neither).

Both do the hybrid query the same way: a dense and a sparse prefetch, each under the
payload filter, fused with reciprocal rank fusion.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .sparse import Sparse

DENSE = "dense"
SPARSE = "bm25"
RRF_K = 60
# payload fields with an index: (name, kind)
INDEXED = (
    ("tenant", "tenant"),
    ("doc", "keyword"),
    ("source", "keyword"),
    ("tags", "keyword"),
    ("ingested_at", "datetime"),
)


@dataclass(frozen=True)
class ChunkPoint:
    id: str
    dense: list[float]
    sparse: Sparse
    payload: dict[str, Any]


@dataclass(frozen=True)
class Where:
    """A payload filter in engine-neutral form; every field narrows."""

    tenant: str | None = None
    doc: str | None = None
    sources: list[str] | None = None
    tags: list[str] | None = None
    after: datetime | None = None
    before: datetime | None = None
    version: str | None = None
    not_version: str | None = None


@dataclass
class Found:
    id: str
    score: float
    payload: dict[str, Any]
    dense: list[float] | None = None
    sparse_indices: list[int] = field(default_factory=list)


class VectorIndex(ABC):
    engine: str

    @abstractmethod
    async def create(self, name: str, dimensions: int) -> None: ...

    @abstractmethod
    async def drop(self, name: str) -> None: ...

    @abstractmethod
    async def replace(self, name: str, doc: str, version: str, points: list[ChunkPoint]) -> None:
        """Make ``points`` the document's only chunks (the old version leaves)."""

    @abstractmethod
    async def delete(self, name: str, where: Where) -> None: ...

    @abstractmethod
    async def count(self, name: str, where: Where | None = None) -> int: ...

    @abstractmethod
    async def query(
        self,
        name: str,
        *,
        dense: list[float] | None,
        sparse: Sparse | None,
        where: Where,
        limit: int,
        candidates: int,
        with_vectors: bool = False,
        fusion: str = "rrf",
    ) -> list[Found]:
        """Dense only, sparse only, or both fused (``rrf``: reciprocal rank fusion;
        ``dbsf``: distribution-based score fusion), whichever vectors are given."""

    async def settle(self, name: str) -> None:
        """Let the engine build its indexes after a batch of writes (if it needs telling)."""
        return None

    async def close(self) -> None:
        return None


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# -- embedded: Qdrant Edge ---------------------------------------------------------------


class EdgeIndex(VectorIndex):
    engine = "qdrant-edge"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._shards: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._open_lock = threading.Lock()
        self._optimizing: set[str] = set()
        self._background: set[asyncio.Future[None]] = set()

    def _path(self, name: str) -> Path:
        return self.root / name

    def _shard(self, name: str) -> Any:
        from qdrant_edge import EdgeShard

        with self._open_lock:
            shard = self._shards.get(name)
            if shard is None:
                path = self._path(name)
                if not (path / "edge_config.json").exists():
                    raise KeyError(name)
                shard = EdgeShard.load(str(path))
                self._shards[name] = shard
                self._locks[name] = threading.Lock()
            return shard

    def _create(self, name: str, dimensions: int) -> None:
        import qdrant_edge as qe

        path = self._path(name)
        with self._open_lock:
            if name in self._shards or (path / "edge_config.json").exists():
                return
            path.mkdir(parents=True, exist_ok=True)
            config = qe.EdgeConfig(
                vectors={DENSE: qe.EdgeVectorParams(size=dimensions, distance=qe.Distance.Cosine)},
                sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            )
            shard = qe.EdgeShard.create(str(path), config)
            for field_name, kind in INDEXED:
                schema: Any = {
                    "tenant": qe.KeywordIndexParams(is_tenant=True),
                    "keyword": qe.PayloadSchemaType.Keyword,
                    "datetime": qe.PayloadSchemaType.Datetime,
                }[kind]
                shard.update(qe.UpdateOperation.create_field_index(field_name, schema))
            shard.flush()
            self._shards[name] = shard
            self._locks[name] = threading.Lock()

    async def create(self, name: str, dimensions: int) -> None:
        await asyncio.to_thread(self._create, name, dimensions)

    def _drop(self, name: str) -> None:
        with self._open_lock:
            shard = self._shards.pop(name, None)
            self._locks.pop(name, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self._path(name), ignore_errors=True)

    async def drop(self, name: str) -> None:
        while name in self._optimizing:  # never close a shard under its optimizer
            await asyncio.sleep(0.05)
        await asyncio.to_thread(self._drop, name)

    @staticmethod
    def _filter(where: Where) -> Any:
        import qdrant_edge as qe

        must: list[Any] = []
        must_not: list[Any] = []
        if where.tenant is not None:
            must.append(qe.FieldCondition("tenant", match=qe.MatchValue(where.tenant)))
        if where.doc is not None:
            must.append(qe.FieldCondition("doc", match=qe.MatchValue(where.doc)))
        if where.sources:
            must.append(qe.FieldCondition("source", match=qe.MatchAny(list(where.sources))))
        if where.tags:
            must.append(qe.FieldCondition("tags", match=qe.MatchAny(list(where.tags))))
        if where.after or where.before:
            must.append(
                qe.FieldCondition(
                    "ingested_at",
                    range=qe.RangeDateTime(
                        gte=_iso(where.after) if where.after else None,
                        lte=_iso(where.before) if where.before else None,
                    ),
                )
            )
        if where.version is not None:
            must.append(qe.FieldCondition("version", match=qe.MatchValue(where.version)))
        if where.not_version is not None:
            must_not.append(qe.FieldCondition("version", match=qe.MatchValue(where.not_version)))
        if not must and not must_not:
            return None
        return qe.Filter(must=must or None, must_not=must_not or None)

    def _replace(self, name: str, doc: str, version: str, points: list[ChunkPoint]) -> None:
        import qdrant_edge as qe

        shard = self._shard(name)
        edge_points = [
            qe.Point(
                p.id,
                {DENSE: p.dense, SPARSE: qe.SparseVector(p.sparse.indices, p.sparse.values)},
                p.payload,
            )
            for p in points
        ]
        old = self._filter(Where(doc=doc, not_version=version))
        new = self._filter(Where(doc=doc, version=version))
        with self._locks[name]:  # readers wait: they see the old version or the new one
            try:
                for i in range(0, len(edge_points), 256):
                    shard.update(qe.UpdateOperation.upsert_points(edge_points[i : i + 256]))
            except Exception:
                # nothing half-indexed: take back what this version wrote
                shard.update(qe.UpdateOperation.delete_points_by_filter(new))
                raise
            shard.update(qe.UpdateOperation.delete_points_by_filter(old))
        shard.flush()

    async def replace(self, name: str, doc: str, version: str, points: list[ChunkPoint]) -> None:
        await asyncio.to_thread(self._replace, name, doc, version, points)

    def _delete(self, name: str, where: Where) -> None:
        import qdrant_edge as qe

        shard = self._shard(name)
        flt = self._filter(where)
        if flt is None:
            raise ValueError("refusing to delete without a filter")
        with self._locks[name]:
            shard.update(qe.UpdateOperation.delete_points_by_filter(flt))
        shard.flush()

    async def delete(self, name: str, where: Where) -> None:
        await asyncio.to_thread(self._delete, name, where)

    def _count(self, name: str, where: Where | None) -> int:
        import qdrant_edge as qe

        shard = self._shard(name)
        return int(shard.count(qe.CountRequest(exact=True, filter=self._filter(where or Where()))))

    async def count(self, name: str, where: Where | None = None) -> int:
        return await asyncio.to_thread(self._count, name, where)

    def query_sync(
        self,
        name: str,
        *,
        dense: list[float] | None,
        sparse: Sparse | None,
        where: Where,
        limit: int,
        candidates: int,
        with_vectors: bool = False,
        fusion: str = "rrf",
    ) -> list[Found]:
        import qdrant_edge as qe

        shard = self._shard(name)
        flt = self._filter(where)
        queries: list[Any] = []
        if dense is not None:
            queries.append(qe.Query.Nearest(dense, using=DENSE))
        if sparse is not None:
            queries.append(
                qe.Query.Nearest(qe.SparseVector(sparse.indices, sparse.values), using=SPARSE)
            )
        vectors: Any = [DENSE, SPARSE] if with_vectors else False
        if len(queries) == 2:
            # the stub's union omits Fusion's nested classes, which the engine takes
            fuse: Any = qe.Fusion.Dbsf() if fusion == "dbsf" else qe.Fusion.Rrf(k=RRF_K)
            request = qe.QueryRequest(
                limit=limit,
                prefetches=[qe.Prefetch(limit=candidates, query=q, filter=flt) for q in queries],
                query=fuse,
                filter=flt,
                with_payload=True,
                with_vector=vectors,
            )
        else:
            request = qe.QueryRequest(
                limit=limit, query=queries[0], filter=flt, with_payload=True, with_vector=vectors
            )
        with self._locks[name]:
            points = shard.query(request)
        return [_found(p.id, p.score, p.payload, p.vector) for p in points]

    async def query(self, name: str, **kw: Any) -> list[Found]:
        return await asyncio.to_thread(lambda: self.query_sync(name, **kw))

    def optimize(self, name: str) -> bool:
        """Build the HNSW and sparse indexes of grown segments (blocking; readers go on)."""
        return bool(self._shard(name).optimize())

    async def settle(self, name: str) -> None:
        """An Edge shard optimizes only when asked: after an ingest, build the indexes in
        a background thread (one at a time per collection; queries and writes go on)."""
        if name in self._optimizing:
            return
        self._optimizing.add(name)

        def run() -> None:
            try:
                self.optimize(name)
            except KeyError:
                pass  # dropped meanwhile
            finally:
                self._optimizing.discard(name)

        task = asyncio.get_running_loop().run_in_executor(None, run)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(list(self._background), timeout=60)
        with self._open_lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()


def _found(point_id: Any, score: float, payload: Any, vector: Any) -> Found:
    found = Found(str(point_id), float(score), dict(payload or {}))
    if isinstance(vector, dict):
        d = vector.get(DENSE)
        found.dense = list(d) if d is not None else None
        s = vector.get(SPARSE)
        if s is not None:
            found.sparse_indices = list(s.indices)
    return found


# -- a Qdrant server: qdrant-client ------------------------------------------------------


class ClientIndex(VectorIndex):
    engine = "qdrant"

    def __init__(self, url: str, api_key: str | None = None) -> None:
        from qdrant_client import AsyncQdrantClient

        if url == ":memory:":
            self.client = AsyncQdrantClient(location=":memory:")
            self.engine = "qdrant-client-local"
        else:
            self.client = AsyncQdrantClient(url=url, api_key=api_key)

    @staticmethod
    def _collection(name: str) -> str:
        return f"ccc_rag_{name}"

    async def create(self, name: str, dimensions: int) -> None:
        from qdrant_client import models as m

        collection = self._collection(name)
        if await self.client.collection_exists(collection):
            return
        await self.client.create_collection(
            collection,
            vectors_config={DENSE: m.VectorParams(size=dimensions, distance=m.Distance.COSINE)},
            sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)},
        )
        if self.engine == "qdrant-client-local":
            return  # local mode has no payload indexes (it filters in Python)
        for field_name, kind in INDEXED:
            schema: Any = {
                "tenant": m.KeywordIndexParams(type=m.KeywordIndexType.KEYWORD, is_tenant=True),
                "keyword": m.PayloadSchemaType.KEYWORD,
                "datetime": m.PayloadSchemaType.DATETIME,
            }[kind]
            await self.client.create_payload_index(collection, field_name, schema)

    async def drop(self, name: str) -> None:
        await self.client.delete_collection(self._collection(name))

    @staticmethod
    def _filter(where: Where) -> Any:
        from qdrant_client import models as m

        must: list[Any] = []
        must_not: list[Any] = []
        if where.tenant is not None:
            must.append(m.FieldCondition(key="tenant", match=m.MatchValue(value=where.tenant)))
        if where.doc is not None:
            must.append(m.FieldCondition(key="doc", match=m.MatchValue(value=where.doc)))
        if where.sources:
            must.append(m.FieldCondition(key="source", match=m.MatchAny(any=list(where.sources))))
        if where.tags:
            must.append(m.FieldCondition(key="tags", match=m.MatchAny(any=list(where.tags))))
        if where.after or where.before:
            must.append(
                m.FieldCondition(
                    key="ingested_at", range=m.DatetimeRange(gte=where.after, lte=where.before)
                )
            )
        if where.version is not None:
            must.append(m.FieldCondition(key="version", match=m.MatchValue(value=where.version)))
        if where.not_version is not None:
            must_not.append(
                m.FieldCondition(key="version", match=m.MatchValue(value=where.not_version))
            )
        if not must and not must_not:
            return None
        return m.Filter(must=must or None, must_not=must_not or None)

    async def replace(self, name: str, doc: str, version: str, points: list[ChunkPoint]) -> None:
        from qdrant_client import models as m

        collection = self._collection(name)
        structs = [
            m.PointStruct(
                id=p.id,
                vector={
                    DENSE: p.dense,
                    SPARSE: m.SparseVector(indices=p.sparse.indices, values=p.sparse.values),
                },
                payload=p.payload,
            )
            for p in points
        ]
        try:
            for i in range(0, len(structs), 256):
                await self.client.upsert(collection, structs[i : i + 256], wait=True)
        except Exception:
            # nothing half-indexed: take back what this version wrote
            await self.client.delete(
                collection,
                m.FilterSelector(filter=self._filter(Where(doc=doc, version=version))),
                wait=True,
            )
            raise
        await self.client.delete(
            collection,
            m.FilterSelector(filter=self._filter(Where(doc=doc, not_version=version))),
            wait=True,
        )

    async def delete(self, name: str, where: Where) -> None:
        from qdrant_client import models as m

        flt = self._filter(where)
        if flt is None:
            raise ValueError("refusing to delete without a filter")
        await self.client.delete(self._collection(name), m.FilterSelector(filter=flt), wait=True)

    async def count(self, name: str, where: Where | None = None) -> int:
        result = await self.client.count(
            self._collection(name), count_filter=self._filter(where or Where()), exact=True
        )
        return int(result.count)

    async def query(
        self,
        name: str,
        *,
        dense: list[float] | None,
        sparse: Sparse | None,
        where: Where,
        limit: int,
        candidates: int,
        with_vectors: bool = False,
        fusion: str = "rrf",
    ) -> list[Found]:
        from qdrant_client import models as m

        flt = self._filter(where)
        queries: list[tuple[Any, str]] = []
        if dense is not None:
            queries.append((dense, DENSE))
        if sparse is not None:
            queries.append((m.SparseVector(indices=sparse.indices, values=sparse.values), SPARSE))
        vectors: Any = [DENSE, SPARSE] if with_vectors else False
        if len(queries) == 2:
            response = await self.client.query_points(
                self._collection(name),
                prefetch=[
                    m.Prefetch(query=q, using=u, filter=flt, limit=candidates) for q, u in queries
                ],
                query=m.FusionQuery(fusion=m.Fusion.DBSF if fusion == "dbsf" else m.Fusion.RRF),
                query_filter=flt,
                limit=limit,
                with_payload=True,
                with_vectors=vectors,
            )
        else:
            q, using = queries[0]
            response = await self.client.query_points(
                self._collection(name),
                query=q,
                using=using,
                query_filter=flt,
                limit=limit,
                with_payload=True,
                with_vectors=vectors,
            )
        return [_found(p.id, p.score, p.payload, p.vector) for p in response.points]

    async def close(self) -> None:
        await self.client.close()
