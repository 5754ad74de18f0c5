"""Cron triggers fire in their time zone, once per scheduled time, under an injected clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from ccc.common.testing import running, wait_until
from ccc.workflow.clock import ManualClock
from ccc.workflow.definition import Trigger
from ccc.workflow.service import create_service
from ccc.workflow.triggers import latest_due

from .conftest import FAST, Target, put, unique


async def test_cron_fires_at_nine_in_paris_once_per_day(nats_url: str, wftarget: Target) -> None:
    # 07:59:30 UTC on a winter day is 08:59:30 in Paris (UTC+1)
    clock = ManualClock(datetime(2031, 1, 15, 7, 59, 30, tzinfo=UTC).timestamp())
    service = create_service(settings=FAST, cron_clock=clock)
    async with running(service, nats_url):
        bus = service.bus
        name = unique("cron")
        await put(
            bus,
            name,
            {
                "triggers": [
                    {
                        "cron": "0 9 * * *",
                        "timezone": "Europe/Paris",
                        "params": {"at": "${{ trigger.scheduled_at }}"},
                    }
                ],
                "steps": [{"id": "a", "call": "wftarget.echo", "with": {"at": "${{ params.at }}"}}],
            },
        )

        async def runs() -> list[dict[str, object]]:
            page = await bus.call("workflow.run.list", {"workflow": name})
            return list(page["runs"])

        await wait_until(lambda: service.state.get(f"cron.{name}.0"), timeout=5)
        await clock.advance(20)  # 08:59:50 Paris: not yet
        await asyncio.sleep(0.3)
        assert await runs() == []

        await clock.advance(15)  # 09:00:05 Paris: due
        await wait_until(lambda: _count(runs, 1), timeout=5)
        run = await bus.call("workflow.run.get", {"run_id": (await runs())[0]["id"]})
        assert run["params"] == {"at": "2031-01-15T09:00:00+01:00"}
        assert run["trigger"]["type"] == "cron"

        await clock.advance(3600)  # 10:00 Paris: nothing new
        await asyncio.sleep(0.3)
        assert len(await runs()) == 1

        await clock.advance(86400)  # the next day after nine: one more
        await wait_until(lambda: _count(runs, 2), timeout=5)
        await asyncio.sleep(0.3)
        assert len(await runs()) == 2


async def _count(runs: object, n: int) -> bool:
    return len(await runs()) == n  # type: ignore[operator]


def test_missed_fires_collapse_into_the_latest_one() -> None:
    trigger = Trigger(cron="*/10 * * * *", timezone="UTC")
    start = datetime(2031, 3, 1, 12, 0, tzinfo=UTC).timestamp()
    due = latest_due(trigger, start, start + 3600 + 5)  # an hour down: six missed fires
    assert due == start + 3600
    assert latest_due(trigger, start, start + 599) is None


def test_daylight_saving_change_is_respected() -> None:
    # 2031-03-30: Paris moves from UTC+1 to UTC+2; 09:00 local is 07:00 UTC that day
    trigger = Trigger(cron="0 9 * * *", timezone="Europe/Paris")
    before = datetime(2031, 3, 30, 6, 0, tzinfo=UTC).timestamp()
    due = latest_due(trigger, before, before + 2 * 3600)
    assert due == datetime(2031, 3, 30, 7, 0, tzinfo=UTC).timestamp()
