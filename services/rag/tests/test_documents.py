"""Collections and the life of a document: add, skip when unchanged, replace, delete."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ccc.common import Conflict, Forbidden, Invalid, NotFound, UnsupportedMediaType, subjects
from ccc.common import Service as RagService
from ccc.common.bus import Bus
from ccc.rag.service import index as opened_index

from .conftest import by_source, ingest

GUIDE_V1 = """# Flux guide

## Setup

The flux capacitor needs 1.21 gigawatts. Connect it to the main bus before start.

## Cooling

Keep the coil below 40 degrees with the blue coolant pump.
"""

GUIDE_V2 = GUIDE_V1.replace("blue coolant pump", "green coolant valve")


async def test_collection_records_model_and_dimension(bus: Bus) -> None:
    view = await bus.call("rag.collection.create", {"name": "crud", "description": "d"})
    assert view["embedding_model"] == "all-minilm-l6-v2"
    assert view["dimensions"] == 384  # measured from the model, not assumed
    assert view["engine"] == "qdrant-edge"
    again = await bus.call("rag.collection.create", {"name": "crud"})
    assert again["created_at"] == view["created_at"]
    with pytest.raises(Conflict):
        await bus.call("rag.collection.create", {"name": "crud", "embedding_model": "other"})
    names = [c["name"] for c in (await bus.call("rag.collection.list", {}))["collections"]]
    assert "crud" in names
    await bus.call("rag.collection.delete", {"collection": "crud"})
    with pytest.raises(NotFound):
        await bus.call("rag.collection.get", {"collection": "crud"})
    with pytest.raises(Invalid):
        await bus.call("rag.collection.create", {"name": "Bad Name!"})


async def chunks_of(rag: RagService, collection: str) -> int:
    return await opened_index().count(collection)


async def test_unchanged_is_a_no_op_changed_replaces_deleted_leaves(
    bus: Bus, rag: RagService
) -> None:
    await bus.call("rag.collection.create", {"name": "life"})
    events: list[tuple[str, dict[str, Any]]] = []

    async def seen(msg: Any) -> None:
        events.append((msg.subject.rsplit(".", 1)[-1], json.loads(msg.data)))

    sub = await bus.nc.subscribe("ccc.evt.rag.document.*", cb=seen)
    doc = {"source": "guide.md", "text": GUIDE_V1, "content_type": "text/markdown"}
    first = await ingest(bus, {"collection": "life", "texts": [doc]})
    assert first["added"] == 1 and first["chunks_indexed"] >= 2
    total = await chunks_of(rag, "life")
    assert total == by_source(first)["guide.md"]["chunks"]

    # the same bytes again: nothing parsed, embedded or written
    embeddings_before = _embedding_calls(rag)
    second = await ingest(bus, {"collection": "life", "texts": [doc]})
    assert by_source(second)["guide.md"]["status"] == "unchanged"
    assert second["chunks_indexed"] == 0
    assert await chunks_of(rag, "life") == total
    assert _embedding_calls(rag) == embeddings_before

    # changed: new chunks in, every old one out
    hits = await bus.call("rag.search", {"collection": "life", "query": "blue coolant pump"})
    assert any("blue coolant pump" in h["text"] for h in hits["hits"])
    doc2 = {**doc, "text": GUIDE_V2}
    third = await ingest(bus, {"collection": "life", "texts": [doc2]})
    assert by_source(third)["guide.md"]["status"] == "updated"
    assert await chunks_of(rag, "life") == by_source(third)["guide.md"]["chunks"]
    hits = await bus.call("rag.search", {"collection": "life", "query": "coolant", "limit": 20})
    texts = " ".join(h["text"] for h in hits["hits"])
    assert "green coolant valve" in texts and "blue coolant pump" not in texts
    record = await bus.call("rag.document.get", {"collection": "life", "source": "guide.md"})
    assert record["ingested_at"] != record["updated_at"]

    # deleted: out of the index and the records
    gone = await bus.call("rag.document.delete", {"collection": "life", "source": "guide.md"})
    assert gone["chunks"] == by_source(third)["guide.md"]["chunks"]
    assert await chunks_of(rag, "life") == 0
    hits = await bus.call("rag.search", {"collection": "life", "query": "coolant"})
    assert hits["hits"] == []
    with pytest.raises(NotFound):
        await bus.call("rag.document.get", {"collection": "life", "source": "guide.md"})
    await asyncio.sleep(0.2)
    await sub.unsubscribe()
    kinds = [k for k, e in events if e["collection"] == "life"]
    assert kinds == ["ingested", "updated", "deleted"]


def _embedding_calls(rag: RagService) -> int:
    """How many requests the ai service's embeddings endpoint has served (NATS micro)."""
    return int(_ai_stats["embeddings"]()) if "embeddings" in _ai_stats else 0


_ai_stats: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _count_embeddings(ai: Any) -> None:
    endpoint = next(e for e in ai._micro._endpoints if e._name == "embeddings")
    _ai_stats["embeddings"] = lambda: endpoint._num_requests


async def test_unknown_collection_and_unsupported_type_answer_at_once(bus: Bus) -> None:
    with pytest.raises(NotFound, match="nowhere"):
        await bus.call(
            "rag.ingest", {"collection": "nowhere", "texts": [{"source": "a", "text": "x"}]}
        )
    await bus.call("rag.collection.create", {"name": "types"})
    upload = {"filename": "tool.exe", "content_base64": "TVqQAAMAAAAEAAAA"}
    with pytest.raises(UnsupportedMediaType) as refused:
        await bus.call("rag.ingest", {"collection": "types", "files": [upload]})
    for name in ("txt", "md", "html", "pdf", "docx"):
        assert name in refused.value.detail
    with pytest.raises(NotFound):
        await bus.call("rag.search", {"collection": "nowhere", "query": "x"})
    reader = {subjects.CALLER_HEADER: "k1", subjects.ROLES_HEADER: "reader"}
    with pytest.raises(Forbidden):  # the role is checked before anything is looked up
        await bus.call(
            "rag.ingest",
            {"collection": "nowhere", "texts": [{"source": "a", "text": "x"}]},
            headers=reader,
        )
    with pytest.raises(Invalid):
        await bus.call("rag.ingest", {"collection": "types"})


async def test_tenants_do_not_see_each_other(bus: Bus) -> None:
    await bus.call("rag.collection.create", {"name": "tenants"})
    secret = "The vault combination of Acme is 4-8-15-16-23-42."
    other = "Globex stores its vault combination in the manager's office."
    await ingest(
        bus,
        {
            "collection": "tenants",
            "tenant": "acme",
            "texts": [{"source": "vault.txt", "text": secret}],
        },
    )
    await ingest(
        bus,
        {
            "collection": "tenants",
            "tenant": "globex",
            "texts": [{"source": "vault.txt", "text": other}],
        },
    )
    for mode in ("hybrid", "dense", "sparse"):
        for tenant, mine, _theirs in (("acme", secret, other), ("globex", other, secret)):
            found = await bus.call(
                "rag.search",
                {
                    "collection": "tenants",
                    "tenant": tenant,
                    "query": "vault combination",
                    "mode": mode,
                },
            )
            texts = [h["text"] for h in found["hits"]]
            assert texts == [mine], (mode, tenant, texts)
    nobody = await bus.call(
        "rag.search", {"collection": "tenants", "tenant": "initech", "query": "vault"}
    )
    assert nobody["hits"] == []
    docs = await bus.call("rag.document.list", {"collection": "tenants", "tenant": "acme"})
    assert [d["source"] for d in docs["documents"]] == ["vault.txt"]
