"""Discovery: each provider's model list (OpenAI /v1/models, Ollama /api/tags) is merged
into GET /v1/models; models appear and vanish with their provider."""

from __future__ import annotations

from typing import Any

import pytest

from ccc.common import NotFound
from ccc.common.bus import Bus
from ccc.common.testing import wait_until

from .conftest import ai_instance, fakes_module, unique


async def test_models_appear_and_vanish_with_their_providers(nats_url: str, fake) -> None:
    vllm, ollama = unique("vllm"), unique("ollama")
    compatible, compatible_url = await fake(vllm, ["qwen-small"])
    local = fakes_module.FakeOpenAI(ollama, ["llama3.2:1b", "qwen-small"])
    config = {
        "providers": [
            {"name": vllm, "kind": "openai", "base_url": f"{compatible_url}/v1"},
            {"name": ollama, "kind": "ollama", "base_url": "placeholder"},
        ]
    }
    async with fakes_module.serving(local) as ollama_url:
        config["providers"][1]["base_url"] = ollama_url
        async with ai_instance(nats_url, config, local_embeddings=True) as svc:
            bus = Bus(svc.nc)

            async def models() -> dict[str, Any]:
                listed = await bus.call("ai.models")
                return {m["id"]: m for m in listed["data"]}

            listed = await models()
            assert listed["qwen-small"]["providers"] == [vllm, ollama]
            assert listed["llama3.2:1b"]["providers"] == [ollama]
            assert listed["all-minilm-l6-v2"]["providers"] == ["local-embeddings"]
            assert local.hits["/api/tags"] >= 1 and compatible.hits["/v1/models"] >= 1
            # Ollama's model is served through its OpenAI-compatible /v1.
            answer = await bus.call(
                "ai.chat", {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]}
            )
            assert answer["system_fingerprint"] == f"fp_{ollama}"

            compatible.models.append("qwen-large")
            await wait_until(lambda: _has(models, "qwen-large"), timeout=5)
            compatible.models.remove("qwen-small")
            await wait_until(lambda: _providers(models, "qwen-small", [ollama]), timeout=5)

        # (the Ollama fake stops here while a fresh instance runs below)
    async with ai_instance(nats_url, config, local_embeddings=True) as svc:
        bus = Bus(svc.nc)
        listed = {m["id"] for m in (await bus.call("ai.models"))["data"]}
        assert "llama3.2:1b" not in listed and "qwen-large" in listed
        with pytest.raises(NotFound):
            await bus.call(
                "ai.chat", {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]}
            )


async def test_a_provider_that_stops_answering_loses_its_models(nats_url: str) -> None:
    name = unique("gone")
    app = fakes_module.FakeOpenAI(name, ["ephemeral"])
    async with fakes_module.serving(app) as url:
        config = {"providers": [{"name": name, "kind": "openai", "base_url": f"{url}/v1"}]}
        svc_cm = ai_instance(nats_url, config)
        svc = await svc_cm.__aenter__()
        try:
            bus = Bus(svc.nc)
            assert "ephemeral" in {m["id"] for m in (await bus.call("ai.models"))["data"]}
        except BaseException:
            await svc_cm.__aexit__(None, None, None)
            raise
    try:

        async def vanished() -> bool:
            listed = await bus.call("ai.models")
            return "ephemeral" not in {m["id"] for m in listed["data"]}

        await wait_until(vanished, timeout=5)
    finally:
        await svc_cm.__aexit__(None, None, None)


async def _has(models: Any, name: str) -> bool:
    return name in await models()


async def _providers(models: Any, name: str, providers: list[str]) -> bool:
    listed = await models()
    return name in listed and listed[name]["providers"] == providers
