"""The durable door: commands on JetStream, exactly-one effect, redelivery after a crash."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import nats
from fleet_service import build

from ccc.common.natsserver import free_port
from ccc.common.testing import running, subprocess_service, wait_until

HERE = Path(__file__).parent


async def _collect(nc, subject: str) -> list[dict]:
    seen: list[dict] = []

    async def on_msg(msg):
        seen.append({"subject": msg.subject, **json.loads(msg.data), "headers": msg.headers})

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    return seen


async def test_command_with_same_msg_id_twice_has_one_effect(nats_url, service_name):
    service = build(service_name)
    async with running(service, nats_url):
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        results = await _collect(nc, f"ccc.evt.{service_name}.count.>")
        body = json.dumps({"counter": "orders"}).encode()
        first = await js.publish(
            f"ccc.cmd.{service_name}.count", body, headers={"Nats-Msg-Id": "order-1"}
        )
        second = await js.publish(
            f"ccc.cmd.{service_name}.count", body, headers={"Nats-Msg-Id": "order-1"}
        )
        assert not first.duplicate and second.duplicate
        await js.publish(f"ccc.cmd.{service_name}.count", body, headers={"Nats-Msg-Id": "order-2"})
        await wait_until(lambda: len(results) >= 2)
        await asyncio.sleep(0.3)  # a wrongly delivered duplicate would show up here
        await nc.close()
        assert len(results) == 2
        assert {r["correlation_id"] for r in results} == {"order-1", "order-2"}
        assert all(r["subject"].endswith(".count.completed") for r in results)
        assert await service.state.get("counter.orders") == 2


async def test_command_failure_is_published_with_the_problem(nats_url, service_name):
    async with running(build(service_name), nats_url):
        nc = await nats.connect(nats_url)
        results = await _collect(nc, f"ccc.evt.{service_name}.count.>")
        await nc.jetstream().publish(
            f"ccc.cmd.{service_name}.count",
            b'{"counter": "Not Valid!"}',
            headers={"Ccc-Correlation-Id": "bad-1"},
        )
        await wait_until(lambda: results)
        await nc.close()
    assert results[0]["subject"].endswith(".count.failed")
    assert results[0]["correlation_id"] == "bad-1"
    assert results[0]["error"]["status"] == 422
    assert results[0]["error"]["errors"][0]["loc"] == "counter"


async def test_command_with_a_binary_answer_publishes_it_as_base64_with_its_media_type(
    nats_url, service_name
):
    async with running(build(service_name), nats_url):
        nc = await nats.connect(nats_url)
        results = await _collect(nc, f"ccc.evt.{service_name}.wave.>")
        await nc.jetstream().publish(
            f"ccc.cmd.{service_name}.wave", b'{"ticks": 5}', headers={"Nats-Msg-Id": "w-1"}
        )
        await wait_until(lambda: results)
        await nc.close()
    assert results[0]["subject"].endswith(".wave.completed")
    result = results[0]["result"]
    assert result["content_type"] == "audio/wav" and result["size"] == 9
    assert base64.b64decode(result["data_base64"]) == b"RIFF" + bytes(range(5))
    assert result["sha256"] == hashlib.sha256(b"RIFF" + bytes(range(5))).hexdigest()


async def test_command_redelivered_after_crash_completes(nats_url, service_name, tmp_path):
    """The first process dies mid-handler; the command is not lost: the next one finishes it."""
    marker = tmp_path / "crashed"
    env = {"CCC_NATS_URL": nats_url, "CCC_COMMAND_ACK_WAIT": "1.5", "CCC_LOG_JSON": "false"}
    nc = await nats.connect(nats_url)
    results = await _collect(nc, f"ccc.evt.{service_name}.count.>")
    args = [str(HERE / "fleet_service.py"), service_name]

    port = free_port()
    with subprocess_service(args, {**env, "CCC_METRICS_PORT": str(port)}, ready_port=port) as first:
        await nc.jetstream().publish(
            f"ccc.cmd.{service_name}.count",
            json.dumps({"counter": "crashy", "crash_marker": str(marker)}).encode(),
            headers={"Nats-Msg-Id": "crash-1"},
        )
        await wait_until(lambda: first.poll() is not None, timeout=10)
    assert first.returncode == 17 and marker.exists()
    assert results == []

    port = free_port()
    with subprocess_service(args, {**env, "CCC_METRICS_PORT": str(port)}, ready_port=port):
        await wait_until(lambda: results, timeout=15)
    await nc.close()
    assert results[0]["subject"].endswith(".count.completed")
    assert results[0]["result"] == {"counter": "crashy", "value": 1}
