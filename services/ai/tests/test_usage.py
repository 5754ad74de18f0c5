"""Usage events off the request path: tokens, and cost from litellm's cost map."""

from __future__ import annotations

import asyncio
import json

import nats

from ccc.ai import costs
from ccc.common.bus import Bus
from ccc.common.testing import wait_until

from .conftest import ai_instance, unique
from .test_routing import chat, provider


async def test_usage_event_carries_tokens_and_cost(nats_url: str, fake) -> None:
    name, key = unique("priced"), unique("key")
    _, url = await fake(name, ["gpt-4o-mini"])
    nc = await nats.connect(nats_url)
    events: list[dict[str, object]] = []

    async def seen(msg: nats.aio.msg.Msg) -> None:
        events.append(json.loads(msg.data))

    await nc.subscribe("ccc.evt.ai.usage", cb=seen)
    try:
        async with ai_instance(
            nats_url, {"providers": [provider(name, url, ["gpt-4o-mini"])]}
        ) as svc:
            answer = await Bus(svc.nc).call(
                "ai.chat", chat("gpt-4o-mini"), headers={"Ccc-Caller": key, "Ccc-Roles": "reader"}
            )
            await wait_until(lambda: any(e["key_id"] == key for e in events), timeout=5)
            usage = await Bus(svc.nc).call("ai.usage.get", {"key_id": key})
    finally:
        await asyncio.sleep(0)
        await nc.close()
    event = next(e for e in events if e["key_id"] == key)
    tokens = answer["usage"]
    price_in, price_out = costs.prices("gpt-4o-mini") or (0.0, 0.0)
    assert price_in > 0 and price_out > 0
    expected = tokens["prompt_tokens"] * price_in + tokens["completion_tokens"] * price_out
    assert event["provider"] == name and event["capability"] == "chat"
    assert event["total_tokens"] == tokens["total_tokens"]
    assert abs(float(event["cost_usd"]) - expected) < 1e-12  # type: ignore[arg-type]
    assert usage["tokens"] == tokens["total_tokens"] and usage["requests"] == 1
    assert abs(usage["usd"] - expected) < 1e-12
