"""Dense vectors from the ai service (``ai.embeddings``, OpenAI-shaped, base64 floats)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence

import numpy as np

from ccc.common import Context, Invalid

EMBED_TIMEOUT = 120.0


async def embed(
    ctx: Context, model: str, texts: Sequence[str], *, batch: int = 64, parallel: int = 2
) -> list[list[float]]:
    """Vectors for ``texts`` in order, ``batch`` texts a call, ``parallel`` calls at once."""
    if not texts:
        return []
    sem = asyncio.Semaphore(parallel)

    async def one(part: Sequence[str]) -> list[list[float]]:
        async with sem:
            answer = await ctx.call(
                "ai.embeddings",
                {"model": model, "input": list(part), "encoding_format": "base64"},
                timeout=EMBED_TIMEOUT,
            )
        data = sorted(answer["data"], key=lambda d: d["index"])
        if len(data) != len(part):
            raise Invalid(f"ai.embeddings answered {len(data)} vectors for {len(part)} texts")
        out: list[list[float]] = []
        for item in data:
            value = item["embedding"]
            if isinstance(value, str):
                out.append(np.frombuffer(base64.b64decode(value), dtype="<f4").tolist())
            else:
                out.append([float(x) for x in value])
        return out

    parts = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    results = await asyncio.gather(*(one(p) for p in parts))
    return [v for r in results for v in r]
