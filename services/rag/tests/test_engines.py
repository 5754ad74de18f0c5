"""The qdrant-client path (``CCC_QDRANT_URL``) behaves like the embedded default.

No registry ships a Qdrant server, so this runs qdrant-client's in-process local mode
(``:memory:``), which speaks the same client API as a server."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from ccc.rag import sparse
from ccc.rag.index import ChunkPoint, ClientIndex, EdgeIndex, VectorIndex, Where


def _points(doc: str, version: str, texts: list[str], tenant: str) -> list[ChunkPoint]:
    rng = np.random.default_rng(abs(hash(doc)) % 1000)
    out = []
    for i, text in enumerate(texts):
        v = rng.standard_normal(8).astype(np.float32)
        v /= np.linalg.norm(v)
        out.append(
            ChunkPoint(
                id=f"00000000-0000-4000-8000-{abs(hash((doc, version, i))) % 10**12:012d}",
                dense=v.tolist(),
                sparse=sparse.document(text),
                payload={
                    "tenant": tenant,
                    "doc": doc,
                    "version": version,
                    "source": doc,
                    "text": text,
                    "tags": ["t"],
                    "ingested_at": "2026-11-25T10:00:00Z",
                },
            )
        )
    return out


@pytest.mark.parametrize("engine", ["edge", "client"])
async def test_replace_query_and_delete(engine: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        index: VectorIndex = EdgeIndex(Path(tmp)) if engine == "edge" else ClientIndex(":memory:")
        await index.create("c", 8)
        v1 = _points("d1", "v1", ["alpha reactor manual", "beta cooling pump"], "a")
        await index.replace("c", "d1", "v1", v1)
        await index.replace("c", "d2", "v1", _points("d2", "v1", ["alpha reactor"], "b"))
        assert await index.count("c") == 3
        assert await index.count("c", Where(tenant="a")) == 2

        q = sparse.query("reactor")
        hits = await index.query(
            "c",
            dense=v1[0].dense,
            sparse=q,
            where=Where(tenant="a"),
            limit=5,
            candidates=10,
            with_vectors=True,
        )
        assert hits[0].payload["text"] == "alpha reactor manual"
        assert {h.payload["tenant"] for h in hits} == {"a"}
        assert hits[0].dense is not None and len(hits[0].dense) == 8

        v2 = _points("d1", "v2", ["gamma new text"], "a")
        await index.replace("c", "d1", "v2", v2)
        assert await index.count("c", Where(doc="d1")) == 1
        hits = await index.query(
            "c",
            dense=None,
            sparse=sparse.query("cooling pump"),
            where=Where(tenant="a"),
            limit=5,
            candidates=10,
        )
        assert hits == []
        await index.delete("c", Where(doc="d1"))
        assert await index.count("c") == 1
        await index.drop("c")
        await index.close()


@pytest.mark.parametrize("engine", ["edge", "client"])
async def test_a_failed_replacement_leaves_the_old_version_whole(engine: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        index: VectorIndex = EdgeIndex(Path(tmp)) if engine == "edge" else ClientIndex(":memory:")
        await index.create("c", 8)
        await index.replace("c", "d1", "v1", _points("d1", "v1", ["old one", "old two"], "a"))
        new = _points("d1", "v2", [f"new {i}" for i in range(300)], "a")
        broken = new[280]
        new[280] = ChunkPoint(broken.id, broken.dense[:4], broken.sparse, broken.payload)
        with pytest.raises(Exception):  # noqa: B017 - the engine's own error type
            await index.replace("c", "d1", "v2", new)
        assert await index.count("c", Where(doc="d1")) == 2
        assert await index.count("c", Where(doc="d1", version="v2")) == 0
        await index.close()
