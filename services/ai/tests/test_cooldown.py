"""The cooldown of a failing provider is shared by every ai instance through JetStream KV."""

from __future__ import annotations

from ccc.common.bus import Bus
from ccc.common.testing import wait_until

from .conftest import ai_instance, unique
from .test_routing import chat, provider


async def test_cooldown_is_shared_between_two_instances(nats_url: str, fake) -> None:
    bad_name, good_name = unique("flaky"), unique("steady")
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
    async with ai_instance(nats_url, config) as first, ai_instance(nats_url, config) as second:
        bus = Bus(first.nc)
        answer = await bus.call("ai.chat", chat("pair"))
        assert answer["system_fingerprint"] == f"fp_{good_name}"
        assert bad.calls == 1

        def cooling(svc) -> bool:  # type: ignore[no-untyped-def]
            return svc.ai.cooldowns.until(bad_name) is not None

        # Whichever instance saw the failure, both now skip the provider.
        await wait_until(lambda: cooling(first) and cooling(second), timeout=5)
        status = {p["name"]: p for p in (await bus.call("ai.providers"))["providers"]}
        assert status[bad_name]["cooling_until"] is not None
        assert "HTTP 500" in status[bad_name]["cooling_reason"]
        assert status[good_name]["cooling_until"] is None
        for _ in range(20):  # the queue group spreads these over both instances
            answer = await bus.call("ai.chat", chat("pair"))
            assert answer["system_fingerprint"] == f"fp_{good_name}"
        assert bad.calls == 1

    # A third instance started later reads the cooldown from KV at start.
    async with ai_instance(nats_url, config) as third:
        assert third.ai.cooldowns.until(bad_name) is not None
        await Bus(third.nc).call("ai.chat", chat("pair"))
    assert bad.calls == 1
    assert good.calls == 22
