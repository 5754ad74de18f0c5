"""Routing: weights, ordered fallback at once, errors that say what was tried."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from ccc.common import BadRequest, NotFound, RateLimited, Unavailable
from ccc.common.bus import Bus

from .conftest import ai_instance, unique


def provider(name: str, url: str, models: list[str], **kw: object) -> dict[str, object]:
    return {
        "name": name,
        "kind": "openai",
        "base_url": f"{url}/v1",
        "models": models,
        "discover": False,
        **kw,
    }


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "say hello"}]}


async def test_weighted_group_splits_traffic_by_weight(nats_url: str, fake) -> None:
    a_name, b_name = unique("heavy"), unique("light")
    a, a_url = await fake(a_name, ["m"])
    b, b_url = await fake(b_name, ["m"])
    config = {
        "providers": [provider(a_name, a_url, ["m"]), provider(b_name, b_url, ["m"])],
        "models": [
            {
                "name": "split",
                "routing": "weighted",
                "deployments": [
                    {"provider": a_name, "model": "m", "weight": 3},
                    {"provider": b_name, "model": "m", "weight": 1},
                ],
            }
        ],
    }
    async with ai_instance(nats_url, config) as svc:
        bus = Bus(svc.nc)
        served: Counter[str] = Counter()
        for _ in range(200):
            answer = await bus.call("ai.chat", chat("split"))
            served[answer["system_fingerprint"]] += 1
    assert served[f"fp_{a_name}"] + served[f"fp_{b_name}"] == 200
    ratio = served[f"fp_{a_name}"] / max(1, served[f"fp_{b_name}"])
    assert 2.0 < ratio < 4.8, served  # 3:1 expected; bounds are > 4 sigma for n=200
    assert a.calls + b.calls == 200


async def test_failing_provider_falls_back_at_once_and_cools_down(nats_url: str, fake) -> None:
    bad_name, good_name = unique("bad"), unique("good")
    bad, bad_url = await fake(bad_name, ["m"], mode="error500")
    good, good_url = await fake(good_name, ["m"])
    config = {
        "providers": [provider(bad_name, bad_url, ["m"]), provider(good_name, good_url, ["m"])],
        "models": [
            {
                "name": "pair",
                "routing": "ordered",
                "deployments": [
                    {"provider": bad_name, "model": "m"},
                    {"provider": good_name, "model": "m"},
                ],
            }
        ],
    }
    async with ai_instance(nats_url, config) as svc:
        bus = Bus(svc.nc)
        started = time.perf_counter()
        answer = await bus.call("ai.chat", chat("pair"))
        first = time.perf_counter() - started
        assert answer["system_fingerprint"] == f"fp_{good_name}"
        assert first < 0.5, f"fallback took {first:.3f}s"
        for _ in range(5):
            answer = await bus.call("ai.chat", chat("pair"))
            assert answer["system_fingerprint"] == f"fp_{good_name}"
    assert bad.calls == 1, "a provider in cooldown must not be called again"
    assert good.calls == 6


async def test_every_provider_failing_is_a_503_naming_each(nats_url: str, fake) -> None:
    one, two = unique("down"), unique("down")
    _, url1 = await fake(one, ["m"], mode="error500")
    _, url2 = await fake(two, ["m"], mode="error500")
    config = {"providers": [provider(one, url1, ["m"]), provider(two, url2, ["m"])]}
    async with ai_instance(nats_url, config) as svc:
        bus = Bus(svc.nc)
        with pytest.raises(Unavailable) as failed:
            await bus.call("ai.chat", chat("m"))
        tried = failed.value.extra["tried"]
        assert {t["provider"] for t in tried} == {one, two}
        assert all(t["status"] == 500 for t in tried)
        assert failed.value.extra["capability"] == "chat"
        # Both now cool down: the next call is refused without calling either.
        with pytest.raises(Unavailable) as cooling:
            await bus.call("ai.chat", chat("m"))
        assert "cooling down" in cooling.value.detail
        assert cooling.value.retry_after is not None and cooling.value.retry_after > 20


async def test_rate_limited_everywhere_is_a_429_with_the_providers_retry_after(
    nats_url: str, fake
) -> None:
    name = unique("busy")
    busy, url = await fake(name, ["m"], mode="error429")
    async with ai_instance(nats_url, {"providers": [provider(name, url, ["m"])]}) as svc:
        bus = Bus(svc.nc)
        with pytest.raises(RateLimited) as limited:
            await bus.call("ai.chat", chat("m"))
        assert limited.value.extra["tried"][0]["status"] == 429
        with pytest.raises(Unavailable) as cooling:
            await bus.call("ai.chat", chat("m"))
        # The fake's Retry-After (2 s) sets the cooldown, not the 30 s default.
        assert cooling.value.retry_after is not None and cooling.value.retry_after <= 2.0
    assert busy.calls == 1


async def test_unknown_model_and_missing_capability(nats_url: str, fake) -> None:
    name = unique("only")
    _, url = await fake(name, ["m"])
    async with ai_instance(
        nats_url, {"providers": [provider(name, url, ["m"])]}, local_embeddings=True
    ) as svc:
        bus = Bus(svc.nc)
        with pytest.raises(NotFound) as missing:
            await bus.call("ai.chat", chat("no-such-model"))
        assert missing.value.extra["model"] == "no-such-model"
        assert "m" in missing.value.extra["available"]
        with pytest.raises(BadRequest) as unable:
            await bus.call("ai.chat", chat("all-minilm-l6-v2"))
        assert unable.value.extra["capability"] == "chat"
        assert unable.value.extra["providers"] == ["local-embeddings"]


async def test_provider_qualified_name_pins_one_provider(nats_url: str, fake) -> None:
    one, two = unique("p"), unique("p")
    first, url1 = await fake(one, ["m"])
    second, url2 = await fake(two, ["m"])
    config = {"providers": [provider(one, url1, ["m"]), provider(two, url2, ["m"])]}
    async with ai_instance(nats_url, config) as svc:
        bus = Bus(svc.nc)
        for _ in range(5):
            answer = await bus.call("ai.chat", chat(f"{two}/m"))
            assert answer["system_fingerprint"] == f"fp_{two}"
    assert first.calls == 0 and second.calls == 5


async def test_latency_routing_prefers_the_faster_provider(nats_url: str, fake) -> None:
    slow_name, fast_name = unique("slow"), unique("fast")
    slow, slow_url = await fake(slow_name, ["m"], delay=0.05)
    fast, fast_url = await fake(fast_name, ["m"])
    config = {
        "providers": [provider(slow_name, slow_url, ["m"]), provider(fast_name, fast_url, ["m"])],
        "models": [
            {
                "name": "quick",
                "routing": "latency",
                "deployments": [
                    {"provider": slow_name, "model": "m"},
                    {"provider": fast_name, "model": "m"},
                ],
            }
        ],
    }
    async with ai_instance(nats_url, config) as svc:
        bus = Bus(svc.nc)
        for _ in range(20):
            await bus.call("ai.chat", chat("quick"))
    # Each is tried once while unmeasured; then the faster one takes the traffic.
    assert slow.calls == 1
    assert fast.calls == 19


async def test_a_provider_that_times_out_is_skipped_for_the_next(nats_url: str, fake) -> None:
    stuck_name, good_name = unique("stuck"), unique("good")
    stuck, stuck_url = await fake(stuck_name, ["m"], delay=1.5)
    good, good_url = await fake(good_name, ["m"])
    config = {
        "providers": [
            provider(stuck_name, stuck_url, ["m"], timeout=0.2),
            provider(good_name, good_url, ["m"]),
        ],
        "models": [
            {
                "name": "pair",
                "routing": "ordered",
                "deployments": [
                    {"provider": stuck_name, "model": "m"},
                    {"provider": good_name, "model": "m"},
                ],
            }
        ],
    }
    async with ai_instance(nats_url, config) as svc:
        bus = Bus(svc.nc)
        started = time.perf_counter()
        answer = await bus.call("ai.chat", chat("pair"))
        took = time.perf_counter() - started
        assert answer["system_fingerprint"] == f"fp_{good_name}"
        assert 0.2 <= took < 1.4
        assert "timed out" in svc.ai.cooldowns.record(stuck_name)["reason"]
        await bus.call("ai.chat", chat("pair"))
    assert stuck.hits["/v1/chat/completions"] == 1 and good.calls == 2
