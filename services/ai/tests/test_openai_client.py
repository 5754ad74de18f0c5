"""The official openai client through the real gateway: HTTP → gateway → bus → ai → provider."""

from __future__ import annotations

import httpx
import openai
import pytest

from ccc.common.testing import refresh_catalog, wait_until

from .conftest import ai_instance, unique
from .test_routing import provider


def client(gateway: dict[str, str], key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{gateway['url']}/v1", api_key=key or gateway["admin_key"], max_retries=0
    )


async def test_chat_embeddings_and_models_through_the_gateway(
    nats_url: str, gateway: dict[str, str], fake
) -> None:
    name = unique("upstream")
    _, url = await fake(name, ["gpt-fake"])
    async with ai_instance(
        nats_url, {"providers": [provider(name, url, ["gpt-fake"])]}, local_embeddings=True
    ):
        await refresh_catalog()
        ai = client(gateway)

        completion = await ai.chat.completions.create(
            model="gpt-fake", messages=[{"role": "user", "content": "hello there"}]
        )
        assert (
            completion.choices[0].message.content
            == f"Hello from {name}, a fake model server answering."
        )
        assert completion.usage is not None and completion.usage.completion_tokens == 8

        tools = [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Look up",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ]
        called = await ai.chat.completions.create(
            model="gpt-fake",
            messages=[{"role": "user", "content": "use the tool"}],
            tools=tools,  # type: ignore[arg-type]
        )
        call = called.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert call.function.name == "lookup" and called.choices[0].finish_reason == "tool_calls"

        # The openai client asks for base64 by default and decodes it.
        vectors = await ai.embeddings.create(
            model="all-minilm-l6-v2", input=["the cat sits on the mat", "a dog runs"]
        )
        assert [len(d.embedding) for d in vectors.data] == [384, 384]
        assert vectors.usage.prompt_tokens > 0
        floats = await ai.embeddings.create(
            model="all-minilm-l6-v2", input="one text", encoding_format="float"
        )
        assert len(floats.data[0].embedding) == 384
        assert abs(sum(x * x for x in floats.data[0].embedding) - 1.0) < 1e-3

        models = {m.id: m for m in (await ai.models.list()).data}
        assert models["gpt-fake"].owned_by == name
        assert models["gpt-fake"].model_extra["providers"] == [name]  # type: ignore[index]
        assert models["all-minilm-l6-v2"].model_extra["capabilities"] == ["embeddings"]  # type: ignore[index]


async def test_errors_through_the_gateway_are_problems(
    nats_url: str, gateway: dict[str, str], fake
) -> None:
    name = unique("upstream")
    _, url = await fake(name, ["gpt-fake"])
    async with ai_instance(nats_url, {"providers": [provider(name, url, ["gpt-fake"])]}):
        await refresh_catalog()
        ai = client(gateway)
        with pytest.raises(openai.NotFoundError) as missing:
            await ai.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": "hi"}]
            )
        assert missing.value.status_code == 404
        assert missing.value.response.headers["content-type"] == "application/problem+json"
        body = missing.value.response.json()
        assert body["type"] == "urn:ccc:problem:not-found" and body["model"] == "no-such-model"
        assert "gpt-fake" in body["available"]
        assert "no-such-model" in missing.value.message


async def test_budget_spent_answers_429(nats_url: str, gateway: dict[str, str], fake) -> None:
    name = unique("upstream")
    _, url = await fake(name, ["gpt-fake"])
    admin = {"Authorization": f"Bearer {gateway['admin_key']}"}
    async with ai_instance(nats_url, {"providers": [provider(name, url, ["gpt-fake"])]}):
        await refresh_catalog()
        async with httpx.AsyncClient(base_url=gateway["url"]) as http:
            created = await http.post(
                "/v1/keys", json={"name": unique("budgeted"), "roles": ["reader"]}, headers=admin
            )
            assert created.status_code == 201, created.text
            key = created.json()
            limit = await http.put(
                f"/v1/ai/budgets/{key['id']}", json={"max_tokens": 20}, headers=admin
            )
            assert limit.status_code == 200, limit.text
            assert limit.json()["budget"]["max_tokens"] == 20

            ai = client(gateway, key["key"])
            ask = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hello"}]}
            first = await ai.chat.completions.create(**ask)  # type: ignore[call-overload]
            spent = first.usage.total_tokens
            assert spent > 0

            own = {"Authorization": f"Bearer {key['key']}"}

            async def charged() -> bool:
                usage = await http.get(f"/v1/ai/usage/{key['id']}", headers=own)
                return bool(usage.json()["tokens"] == spent)

            await wait_until(charged, timeout=5)
            await ai.chat.completions.create(**ask)  # 12 of 20 spent: still allowed
            await wait_until(lambda: _tokens(http, key["id"], own, 2 * spent), timeout=5)
            with pytest.raises(openai.RateLimitError) as limited:
                await ai.chat.completions.create(**ask)
            assert "spent its budget" in limited.value.message

            other = await http.get(f"/v1/ai/usage/{key['id']}x", headers=own)
            assert other.status_code == 403


async def _tokens(http: httpx.AsyncClient, key_id: str, headers: dict[str, str], want: int) -> bool:
    usage = await http.get(f"/v1/ai/usage/{key_id}", headers=headers)
    return bool(usage.json()["tokens"] >= want)


async def test_images_through_the_gateway_or_a_clear_problem(
    nats_url: str, gateway: dict[str, str], fake
) -> None:
    painter, plain = unique("painter"), unique("plain")
    _, painter_url = await fake(painter, ["img-fake"], images=True)
    _, plain_url = await fake(plain, ["gpt-fake"])
    with_images = {
        "providers": [provider(painter, painter_url, ["img-fake"], capabilities=["images"])]
    }
    async with ai_instance(nats_url, with_images):
        await refresh_catalog()
        picture = await client(gateway).images.generate(model="img-fake", prompt="a red square")
        assert picture.data and picture.data[0].b64_json
        default = await client(gateway).images.generate(prompt="a blue square", n=2)
        assert default.data is not None and len(default.data) == 2
    async with ai_instance(nats_url, {"providers": [provider(plain, plain_url, ["gpt-fake"])]}):
        await refresh_catalog()
        with pytest.raises(openai.BadRequestError) as refused:
            await client(gateway).images.generate(prompt="a green square")
        body = refused.value.response.json()
        assert body["capability"] == "images" and body["providers"] == [plain]
        assert "no configured provider offers images" in refused.value.message


async def test_streaming_through_the_gateway_with_the_openai_client(
    nats_url: str, gateway: dict[str, str], fake
) -> None:
    """stream: true as SSE, read by the official client; a stream cut half-way ends in an
    error the client raises, never a silently truncated answer."""
    healthy, cutter = unique("upstream"), unique("cutter")
    _, healthy_url = await fake(healthy, ["gpt-fake"])
    _, cut_url = await fake(cutter, ["gpt-cut"], mode="cut")
    config = {
        "providers": [
            provider(healthy, healthy_url, ["gpt-fake"]),
            provider(cutter, cut_url, ["gpt-cut"]),
        ]
    }
    async with ai_instance(nats_url, config):
        await refresh_catalog()
        ai = client(gateway)
        stream = await ai.chat.completions.create(
            model="gpt-fake", messages=[{"role": "user", "content": "hello there"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == f"Hello from {healthy}, a fake model"  # what the fake streams

        received: list[str] = []
        with pytest.raises(openai.APIError):
            stream = await ai.chat.completions.create(
                model="gpt-cut", messages=[{"role": "user", "content": "hello"}], stream=True
            )
            async for chunk in stream:
                if chunk.choices:
                    received.append(chunk.choices[0].delta.content or "")
        assert received, "the first half arrived before the cut"
