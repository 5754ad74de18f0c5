"""A ``litellm`` provider: litellm translates, the router still falls back at once."""

from __future__ import annotations

from ccc.common.bus import Bus
from ccc.common.streaming import read_stream

from .conftest import ai_instance, unique
from .test_routing import chat


async def test_litellm_provider_chat_stream_and_fallback(nats_url: str, fake) -> None:
    broken, good = unique("litellm_down"), unique("litellm")
    down, down_url = await fake(broken, ["gpt-fake"], mode="error500", api_key="sk-test")
    up, up_url = await fake(good, ["gpt-fake"], api_key="sk-test")
    config = {
        "providers": [
            {
                "name": broken,
                "kind": "litellm",
                "base_url": f"{down_url}/v1",
                "models": ["openai/gpt-fake"],
                "api_key": "sk-test",
            },
            {
                "name": good,
                "kind": "litellm",
                "base_url": f"{up_url}/v1",
                "models": ["openai/gpt-fake"],
                "api_key": "sk-test",
            },
        ],
        "models": [
            {
                "name": "via-litellm",
                "routing": "ordered",
                "deployments": [
                    {"provider": broken, "model": "openai/gpt-fake"},
                    {"provider": good, "model": "openai/gpt-fake"},
                ],
            }
        ],
    }
    async with ai_instance(nats_url, config) as svc:
        bus = Bus(svc.nc)
        answer = await bus.call("ai.chat", chat("via-litellm"))
        assert answer["choices"][0]["message"]["content"].startswith(f"Hello from {good}")
        assert answer["usage"]["completion_tokens"] == 8
        assert down.calls == 1  # litellm's own retries are off: no second try of the failing one

        chunks = [c async for c in read_stream(bus, "ccc.ai.chat", chat("via-litellm"))]
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert text == f"Hello from {good}, a fake model"
    assert down.calls == 1 and up.calls == 2
