"""rag: ingest throughput, search latency and q/s, and retrieval quality. Asserts nothing.

One process: a throwaway nats-server, the real ai service (local all-MiniLM-L6-v2 on
ONNX Runtime) and the rag service, both in this event loop, talking over the bus.

1. Ingest, end to end: CCC_BENCH_RAG_CHUNKS (default 10000) chunks of text made from the
   project's own docs, as documents over 10 tenants, through ``rag.ingest`` (parse, chunk,
   embed through ``ai.embeddings``, BM25, write): chunks/s.
2. Search at that size, with and without a payload filter (one tenant, 10 %):
   - the engine alone (the embedded Qdrant Edge shard; then after ``optimize`` builds
     its HNSW index; then qdrant-client's local mode holding the same points): p50, p99,
     q/s of sequential hybrid and dense queries;
   - end to end (``rag.search`` on the bus, query embedding included), sequential and
     with 8 in flight.
3. Quality: the project's docs (README, docs/, services/*/README.md) as a collection, a
   labelled question set (question → the file that answers it), recall@10 and nDCG@10 at
   document level for BM25 only (the baseline), dense only, hybrid (RRF) and hybrid with
   the rerank step.
CCC_BENCH_RAG_100K=1 adds the engine alone at 100k chunks (random unit vectors, BM25 of
generated text). CCC_BENCH_RAG_CLIENT=0 skips the qdrant-client local-mode comparison.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHUNKS = int(os.environ.get("CCC_BENCH_RAG_CHUNKS", "10000"))
INGEST = int(os.environ.get("CCC_BENCH_RAG_INGEST", "600"))
BIG = os.environ.get("CCC_BENCH_RAG_100K", "0") == "1"
CLIENT = os.environ.get("CCC_BENCH_RAG_CLIENT", "1") == "1"
TENANTS = 10
SECONDS = 3.0  # per latency measurement

# (question, the file that answers it, a phrase the answering chunk contains)
LABELLED: list[tuple[str, str, str]] = [
    (
        "How are API keys stored by the gateway?",
        "docs/adr/0004-keys-roles-limits-audit.md",
        "sha256(key)",
    ),
    ("CCC_RATE_LIMIT_RPS", "docs/adr/0004-keys-roles-limits-audit.md", "CCC_RATE_LIMIT_RPS"),
    (
        "Does a revoked key stop working on every gateway replica?",
        "docs/adr/0004-keys-roles-limits-audit.md",
        "revocation",
    ),
    (
        "What happens when a handler crashes before the command is acknowledged?",
        "docs/adr/0005-commands-and-operations.md",
        "redelivers",
    ),
    (
        "CCC_COMMAND_MAX_DELIVER",
        "docs/adr/0005-commands-and-operations.md",
        "CCC_COMMAND_MAX_DELIVER",
    ),
    (
        "Which headers carry an error reply across the bus?",
        "docs/adr/0003-errors.md",
        "Nats-Service-Error-Code",
    ),
    (
        "Why was structlog not chosen for logging?",
        "docs/adr/0006-telemetry-logs-cli.md",
        "structlog",
    ),
    (
        "Which library draws the tables and progress bars of the command line tool?",
        "docs/adr/0006-telemetry-logs-cli.md",
        "rich for tables",
    ),
    (
        "Why would a handler that awaits 10 ms be limited to about 95 requests per second?",
        "docs/adr/0001-service-runtime.md",
        "95 req/s",
    ),
    (
        "What does the edge answer when the service behind a route has no live instance?",
        "docs/adr/0002-edge-gateway.md",
        "no live instance",
    ),
    (
        "How fast does the model gateway fall back when a provider fails?",
        "docs/adr/0300-ai-model-gateway.md",
        "fallback costs one failed call",
    ),
    (
        "LITELLM_LOCAL_MODEL_COST_MAP",
        "docs/adr/0300-ai-model-gateway.md",
        "LITELLM_LOCAL_MODEL_COST_MAP",
    ),
    (
        "How is a database backup verified before it is trusted?",
        "docs/adr/0100-database-backups.md",
        "scratch restore",
    ),
    ("pg_dump --snapshot", "docs/adr/0100-database-backups.md", "--snapshot="),
    (
        "How does another instance take over a workflow run whose owner died?",
        "docs/adr/0200-workflow-engine.md",
        "claims a run",
    ),
    ("wait_event replay of CCC_EVENTS", "docs/adr/0200-workflow-engine.md", "replays"),
    (
        "Can the containers run with a read-only root filesystem?",
        "docs/adr/0400-containers.md",
        "read-only root works",
    ),
    ("make dockerfiles-check", "docs/adr/0400-containers.md", "dockerfiles-check"),
    ("Which pod security level does Talos enforce?", "docs/deploy.md", "Pod Security"),
    (
        "Which retry options can a workflow step have?",
        "services/workflow/README.md",
        "max_attempts",
    ),
    (
        "How do I point the official openai client at the platform?",
        "services/ai/README.md",
        "base_url=",
    ),
    ("backup.prune", "services/database/README.md", "backup.prune"),
]


def corpus_files() -> list[Path]:
    # not ADR 0500: it describes this benchmark and quotes its questions
    docs = [f for f in sorted((ROOT / "docs").rglob("*.md")) if not f.name.startswith("0500-")]
    files = [ROOT / "README.md", *docs]
    files += sorted((ROOT / "services").glob("*/README.md"))
    return [f for f in files if f.is_file()]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(fn: Callable[[int], Any], seconds: float = SECONDS) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, q/s) of calling fn(i) sequentially for ``seconds``."""
    lat: list[float] = []
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds or i < 20:
        t = time.perf_counter()
        fn(i)
        lat.append((time.perf_counter() - t) * 1000)
        i += 1
    total = time.perf_counter() - start
    return percentile(lat, 50), percentile(lat, 99), i / total


def row(label: str, p50: float, p99: float, qps: float) -> None:
    print(f"  {label:<44} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  {qps:9.1f} q/s")


def synthetic_documents(target_chunks: int) -> list[dict[str, Any]]:
    """Documents of ~10 paragraphs each, sentences drawn from the project's docs."""
    sentences: list[str] = []
    for f in corpus_files():
        text = re.sub(r"[`#*|]", " ", f.read_text())
        sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) > 5]
    rng = random.Random(7)
    docs = []
    paragraphs_per_doc = 10
    n_docs = max(1, target_chunks // paragraphs_per_doc)
    for d in range(n_docs):
        paras = []
        for p in range(paragraphs_per_doc):
            words = " ".join(rng.choice(sentences) for _ in range(8)).split()[:100]
            paras.append(f"## Part {p}\n\n" + " ".join(words) + f" (ref DOC{d}-P{p})")
        docs.append(
            {
                "source": f"synthetic/{d}.md",
                "text": f"# Document {d}\n\n" + "\n\n".join(paras),
                "content_type": "text/markdown",
                "tenant": f"t{d % TENANTS}",
            }
        )
    return docs


def fill(index: Any, target: int) -> None:
    """Top the bench collection up to ``target`` chunks: each new point copies a real
    point's payload and BM25 vector and perturbs its dense vector (cosine ~0.95)."""
    import numpy as np
    import qdrant_edge as qe

    from ccc.rag.index import ChunkPoint
    from ccc.rag.sparse import Sparse

    shard = index._shard("bench")
    records: list[Any] = []
    offset = None
    while True:
        page, offset = shard.scroll(
            qe.ScrollRequest(offset=offset, limit=1000, with_payload=True, with_vector=True)
        )
        records += page
        if offset is None:
            break
    rng = np.random.default_rng(3)
    have = len(records)
    batch: list[ChunkPoint] = []
    for n in range(max(0, target - have)):
        r = records[n % have]
        v = np.asarray(r.vector["dense"], dtype=np.float32)
        v = v + rng.standard_normal(v.shape[0]).astype(np.float32) * 0.017
        v /= np.linalg.norm(v)
        payload = {**dict(r.payload), "doc": f"fill{n // 10}", "version": "fill"}
        payload["tenant"] = f"t{(n // 10) % TENANTS}"
        bm25 = r.vector["bm25"]
        batch.append(
            ChunkPoint(
                f"00000000-0000-4000-9000-{n:012d}",
                v.tolist(),
                Sparse(list(bm25.indices), list(bm25.values)),
                payload,
            )
        )
        if len(batch) == 2000:
            index._replace("bench", f"fill-{n}", "fill", batch)
            batch = []
    if batch:
        index._replace("bench", "fill-last", "fill", batch)


def relevant_chunks(index: Any, labelled: list[tuple[str, str, str]]) -> list[set[str]]:
    """For each question, the ids of the chunks of its file that contain its phrase."""
    import qdrant_edge as qe

    shard = index._shard("projdocs")
    records: list[Any] = []
    offset = None
    while True:
        page, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=1000, with_payload=True))
        records += page
        if offset is None:
            break
    out = []
    for _, source, phrase in labelled:
        ids = {
            str(r.id)
            for r in records
            if r.payload["source"] == source and phrase in r.payload["text"]
        }
        if not ids:
            raise RuntimeError(f"no chunk of {source} contains {phrase!r}")
        out.append(ids)
    return out


async def main() -> None:
    from ccc.ai.config import AIConfig, AISettings
    from ccc.ai.service import build_service
    from ccc.common.bus import Bus
    from ccc.common.testing import running, temporary_server
    from ccc.rag import sparse
    from ccc.rag.index import EdgeIndex, Where
    from ccc.rag.service import service as rag

    print(
        f"rag benchmark: {CHUNKS} chunks, python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at start"
    )
    with temporary_server() as url, tempfile.TemporaryDirectory() as tmp:
        ai = build_service(
            AIConfig.model_validate({}),
            AISettings(config=None, local_chat=False, local_embeddings=True),
        )
        async with (
            running(ai, url, log_level="WARNING"),
            running(rag, url, data_dir=Path(tmp), log_level="WARNING"),
        ):
            bus = Bus(rag.nc, 600.0)

            async def ingest(request: dict[str, Any]) -> dict[str, Any]:
                op = await bus.call("rag.ingest", request)
                while op["status"] not in ("succeeded", "failed"):
                    await asyncio.sleep(0.1)
                    op = await bus.call("rag.operation.get", {"id": op["id"]})
                if op["status"] != "succeeded":
                    raise RuntimeError(op["error"])
                return dict(op["result"])

            # -- 1. ingest ----------------------------------------------------------------
            await bus.call("rag.collection.create", {"name": "bench"})
            docs = synthetic_documents(INGEST)
            by_tenant: dict[str, list[dict[str, Any]]] = {}
            for d in docs:
                by_tenant.setdefault(d.pop("tenant"), []).append(d)
            started = time.perf_counter()
            total_chunks = 0
            for tenant, items in by_tenant.items():
                for i in range(0, len(items), 50):
                    result = await ingest(
                        {"collection": "bench", "tenant": tenant, "texts": items[i : i + 50]}
                    )
                    total_chunks += result["chunks_indexed"]
            elapsed = time.perf_counter() - started
            print(
                "\n1. ingest, end to end (rag.ingest -> parse, chunk, ai.embeddings, BM25, "
                "write; real MiniLM on this CPU)"
            )
            print(
                f"  {len(docs)} documents, {total_chunks} chunks in {elapsed:.1f} s: "
                f"{total_chunks / elapsed:.0f} chunks/s"
            )
            started = time.perf_counter()
            again = 0
            for tenant, items in by_tenant.items():
                for i in range(0, len(items), 50):
                    r = await ingest(
                        {"collection": "bench", "tenant": tenant, "texts": items[i : i + 50]}
                    )
                    again += r["unchanged"]
            print(
                f"  re-ingest of the same {again} documents (all unchanged): "
                f"{time.perf_counter() - started:.1f} s"
            )

            # -- fill to CHUNKS: copies of the real points with perturbed vectors -------
            index = rag.index
            assert isinstance(index, EdgeIndex)
            started = time.perf_counter()
            await asyncio.to_thread(fill, index, CHUNKS)
            print(
                f"  filled to {await index.count('bench')} chunks for the search figures "
                f"(perturbed copies of the real vectors, written straight into the shard: "
                f"{time.perf_counter() - started:.1f} s)"
            )

            # -- 2. search ---------------------------------------------------------------
            queries = [q for q, _, _ in LABELLED] + [
                "how are operations resumed after a restart",
                "what is stored in the KV bucket of a service",
            ]
            vectors = [
                d["embedding"]
                for d in (await bus.call("ai.embeddings", {"input": queries}))["data"]
            ]
            sparse_q = [sparse.query(q) for q in queries]
            n_points = await index.count("bench")
            print(
                f"\n2. search at {n_points} chunks (filter: tenant = t3, "
                f"{await index.count('bench', Where(tenant='t3'))} chunks)"
            )
            tenant_filter = Where(tenant="t3")

            def engine_rows(label: str, run: Callable[..., Any]) -> None:
                for flt_name, where in (("no filter", Where()), ("filtered", tenant_filter)):
                    for mode in ("hybrid", "dense"):

                        def call(i: int, where: Where = where, mode: str = mode) -> Any:
                            k = i % len(queries)
                            return run(
                                dense=vectors[k],
                                sparse=sparse_q[k] if mode == "hybrid" else None,
                                where=where,
                                limit=10,
                                candidates=50,
                            )

                        row(f"{label}, {mode}, {flt_name}", *timed(call))

            def edge(**kw: Any) -> Any:
                return index.query_sync("bench", with_vectors=True, **kw)

            engine_rows("edge (plain segments)", edge)
            t = time.perf_counter()
            index.optimize("bench")
            print(f"  optimize (HNSW + sparse index build): {time.perf_counter() - t:.1f} s")
            engine_rows("edge (optimized)", edge)

            if CLIENT:
                await client_local(index, n_points, engine_rows)

            async def e2e(body: dict[str, Any], concurrency: int) -> tuple[float, float, float]:
                lat: list[float] = []
                stop = time.perf_counter() + SECONDS
                counter = 0

                async def worker() -> None:
                    nonlocal counter
                    while time.perf_counter() < stop:
                        counter += 1
                        q = queries[counter % len(queries)]
                        t = time.perf_counter()
                        await bus.call("rag.search", {**body, "query": q})
                        lat.append((time.perf_counter() - t) * 1000)

                start = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                total = time.perf_counter() - start
                return percentile(lat, 50), percentile(lat, 99), len(lat) / total

            for conc in (1, 8):
                for flt_name, extra in (("no filter", {}), ("filtered", {"tenant": "t3"})):
                    body = {"collection": "bench", "limit": 10, **extra}
                    row(
                        f"rag.search on the bus, {conc} in flight, {flt_name}",
                        *(await e2e(body, conc)),
                    )

            # -- 3. quality --------------------------------------------------------------
            await bus.call("rag.collection.create", {"name": "projdocs"})
            files = corpus_files()
            texts = [
                {
                    "source": str(f.relative_to(ROOT)),
                    "text": f.read_text(),
                    "content_type": "text/markdown",
                }
                for f in files
            ]
            result = await ingest({"collection": "projdocs", "texts": texts})
            labelled = [item for item in LABELLED if (ROOT / item[1]).is_file()]
            relevant_ids = await asyncio.to_thread(relevant_chunks, index, labelled)
            print(
                f"\n3. quality: {len(files)} project docs, {result['chunks_indexed']} chunks, "
                f"{len(labelled)} labelled questions; relevant = the chunks of the answering "
                "file that contain the answer phrase"
            )
            for label, body in (
                ("BM25 only (sparse, baseline)", {"mode": "sparse"}),
                ("dense only", {"mode": "dense"}),
                ("hybrid (RRF)", {"mode": "hybrid"}),
                ("hybrid (DBSF)", {"mode": "hybrid", "fusion": "dbsf"}),
                ("hybrid (RRF) + rerank", {"mode": "hybrid", "rerank": True}),
                ("hybrid (DBSF) + rerank", {"mode": "hybrid", "fusion": "dbsf", "rerank": True}),
            ):
                recalls, ndcgs, firsts = [], [], []
                for (question, _, _), relevant in zip(labelled, relevant_ids, strict=True):
                    found = await bus.call(
                        "rag.search",
                        {"collection": "projdocs", "query": question, "limit": 10, **body},
                    )
                    ranked = [h["id"] for h in found["hits"]]
                    gains = [1.0 if i in relevant else 0.0 for i in ranked]
                    dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
                    ideal = sum(1 / math.log2(r + 2) for r in range(min(10, len(relevant))))
                    recalls.append(sum(gains) / len(relevant))
                    ndcgs.append(dcg / ideal)
                    firsts.append(1.0 if gains and gains[0] else 0.0)
                print(
                    f"  {label:<30} recall@10 {statistics.mean(recalls):.3f}  "
                    f"nDCG@10 {statistics.mean(ndcgs):.3f}  top-1 {statistics.mean(firsts):.3f}"
                )

    if BIG:
        big_engine()


async def client_local(index: Any, n_points: int, engine_rows: Callable[..., None]) -> None:
    """The same points in qdrant-client's local mode (filters evaluated in Python)."""
    import qdrant_edge as qe
    from qdrant_client import models

    from ccc.rag.index import ClientIndex

    shard = index._shard("bench")
    records: list[Any] = []
    offset = None
    while True:
        page, offset = shard.scroll(
            qe.ScrollRequest(offset=offset, limit=1000, with_payload=True, with_vector=True)
        )
        records += page
        if offset is None:
            break
    client = ClientIndex(":memory:")
    await client.create("bench", 384)
    t = time.perf_counter()
    structs = [
        models.PointStruct(
            id=str(r.id),
            vector={
                "dense": list(r.vector["dense"]),
                "bm25": models.SparseVector(
                    indices=list(r.vector["bm25"].indices), values=list(r.vector["bm25"].values)
                ),
            },
            payload=dict(r.payload),
        )
        for r in records
    ]
    for i in range(0, len(structs), 1000):
        await client.client.upsert("ccc_rag_bench", structs[i : i + 1000])
    print(
        f"  qdrant-client local mode: upsert {len(structs)} points in "
        f"{time.perf_counter() - t:.1f} s"
    )
    loop = asyncio.get_running_loop()

    def run(**kw: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(
            client.query("bench", with_vectors=True, **kw), loop
        ).result()

    # the timer is synchronous and the client needs this event loop: time from a thread
    await asyncio.to_thread(engine_rows, "qdrant-client local", run)
    await client.close()


def big_engine() -> None:
    """100k chunks straight into a Qdrant Edge shard: random unit vectors, BM25 of text."""
    import numpy as np

    from ccc.rag import sparse
    from ccc.rag.index import ChunkPoint, EdgeIndex, Where

    n = 100_000
    rng = np.random.default_rng(1)
    words = re.findall(r"[a-z]{4,}", (ROOT / "README.md").read_text().lower())
    with tempfile.TemporaryDirectory() as tmp:
        index = EdgeIndex(Path(tmp))
        index._create("big", 384)
        t = time.perf_counter()
        for start in range(0, n, 5000):
            vecs = rng.standard_normal((5000, 384)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            points = []
            for j in range(5000):
                i = start + j
                text = " ".join(words[(i * 7 + k * 13) % len(words)] for k in range(60))
                points.append(
                    ChunkPoint(
                        f"00000000-0000-4000-8000-{i:012d}",
                        vecs[j].tolist(),
                        sparse.document(text),
                        {
                            "tenant": f"t{i % TENANTS}",
                            "doc": f"d{i // 10}",
                            "version": "v",
                            "text": text,
                            "ingested_at": "2026-11-25T10:00:00Z",
                        },
                    )
                )
            index._replace("big", f"batch{start}", "v", points)
        print(f"\n4. engine alone at {n} chunks: upsert {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        index.optimize("big")
        print(f"  optimize: {time.perf_counter() - t:.1f} s")
        q = rng.standard_normal((50, 384)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        sq = [sparse.query(" ".join(words[i : i + 4])) for i in range(50)]
        for flt_name, where in (("no filter", Where()), ("filtered", Where(tenant="t3"))):
            for mode in ("hybrid", "dense"):

                def call(i: int, where: Where = where, mode: str = mode) -> Any:
                    return index.query_sync(
                        "big",
                        dense=q[i % 50].tolist(),
                        sparse=sq[i % 50] if mode == "hybrid" else None,
                        where=where,
                        limit=10,
                        candidates=50,
                    )

                row(f"edge 100k, {mode}, {flt_name}", *timed(call))


if __name__ == "__main__":
    asyncio.run(main())
