"""Streaming over the bus: numbered frames to the caller's inbox, a final frame, explicit
error frames for a cut stream. Read here with nats-py directly, as the gateway will."""

from __future__ import annotations

import json

import nats
import pytest

from ccc.common import Invalid, Unavailable
from ccc.common.bus import Bus
from ccc.common.streaming import StreamBroken, read_stream

from .conftest import ai_instance, unique
from .test_routing import chat, provider


async def collect(
    nc: nats.NATS, body: dict[str, object]
) -> tuple[list[nats.aio.msg.Msg], nats.aio.msg.Msg]:
    """Send a streamed request with nats-py; return every inbox frame and the reply."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    reply = await nc.request(
        "ccc.ai.chat",
        json.dumps({**body, "stream": True}).encode(),
        timeout=10,
        headers={"Ccc-Stream-Inbox": inbox},
    )
    frames = []
    while True:
        try:
            frames.append(await sub.next_msg(timeout=0.5))
        except nats.errors.TimeoutError:
            break
    await sub.unsubscribe()
    return frames, reply


async def test_stream_frames_are_numbered_and_end_with_done(nats_url: str, fake) -> None:
    name = unique("streamer")
    _, url = await fake(name, ["m"])
    async with ai_instance(nats_url, {"providers": [provider(name, url, ["m"])]}):
        nc = await nats.connect(nats_url)
        try:
            frames, reply = await collect(nc, chat("m"))
        finally:
            await nc.close()
    seqs = [int(f.headers["Ccc-Stream-Seq"]) for f in frames]
    assert seqs == list(range(len(frames)))
    assert len({f.headers["Ccc-Stream-Id"] for f in frames}) == 1
    *data, last = frames
    assert last.headers["Ccc-Stream-End"] == "done" and last.data == b""
    assert all("Ccc-Stream-End" not in f.headers for f in data)
    chunks = [json.loads(f.data) for f in data]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == f"Hello from {name}, a fake model"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # The usage chunk was asked upstream for accounting, but the caller did not ask for it.
    assert all(c["choices"] for c in chunks)
    summary = json.loads(reply.data)
    assert summary["object"] == "ccc.stream.summary" and summary["outcome"] == "done"
    assert summary["frames"] == len(frames) and summary["usage"]["completion_tokens"] == 6


async def test_usage_chunk_is_relayed_when_asked(nats_url: str, fake) -> None:
    name = unique("streamer")
    _, url = await fake(name, ["m"])
    async with ai_instance(nats_url, {"providers": [provider(name, url, ["m"])]}) as svc:
        chunks = [
            c
            async for c in read_stream(
                Bus(svc.nc), "ccc.ai.chat", {**chat("m"), "stream_options": {"include_usage": True}}
            )
        ]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("mode", ["cut", "truncate"])
async def test_cut_stream_ends_with_an_error_frame(nats_url: str, fake, mode: str) -> None:
    name = unique("cutter")
    cutter, url = await fake(name, ["m"], mode=mode)
    async with ai_instance(nats_url, {"providers": [provider(name, url, ["m"])]}) as svc:
        nc = await nats.connect(nats_url)
        try:
            frames, reply = await collect(nc, chat("m"))
        finally:
            await nc.close()
        *data, last = frames
        assert [int(f.headers["Ccc-Stream-Seq"]) for f in frames] == list(range(len(frames)))
        assert 1 <= len(data) < 8
        assert last.headers["Ccc-Stream-End"] == "error"
        assert last.headers["Ccc-Stream-Error-Code"] == "503"
        problem = json.loads(last.data)
        assert problem["status"] == 503 and "cut the stream" in problem["detail"]
        assert problem["provider"] == name
        assert json.loads(reply.data)["outcome"] == "error"
        # The caller-side reader turns the error frame into an exception, never a short text.
        svc.ai.cooldowns.mirror.values.clear()
        with pytest.raises(StreamBroken, match="cut the stream"):
            async for _ in read_stream(Bus(svc.nc), "ccc.ai.chat", chat("m")):
                pass
    assert cutter.calls == 2


async def test_failure_before_the_first_chunk_falls_back(nats_url: str, fake) -> None:
    bad_name, good_name = unique("bad"), unique("good")
    bad, bad_url = await fake(bad_name, ["m"], mode="error500")
    _, good_url = await fake(good_name, ["m"])
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
        chunks = [c async for c in read_stream(Bus(svc.nc), "ccc.ai.chat", chat("pair"))]
    assert bad.calls == 1
    assert chunks[0]["system_fingerprint"] == f"fp_{good_name}"


async def test_stream_that_cannot_start_is_an_error_reply_and_no_frame(nats_url: str, fake) -> None:
    name = unique("down")
    _, url = await fake(name, ["m"], mode="error500")
    async with ai_instance(nats_url, {"providers": [provider(name, url, ["m"])]}) as svc:
        nc = await nats.connect(nats_url)
        try:
            frames, reply = await collect(nc, chat("m"))
        finally:
            await nc.close()
        assert frames == []
        assert reply.headers["Nats-Service-Error-Code"] == "503"
        with pytest.raises(Unavailable):
            async for _ in read_stream(Bus(svc.nc), "ccc.ai.chat", chat("m")):
                pass


async def test_stream_without_an_inbox_is_refused(nats_url: str, fake) -> None:
    name = unique("streamer")
    _, url = await fake(name, ["m"])
    async with ai_instance(nats_url, {"providers": [provider(name, url, ["m"])]}) as svc:
        with pytest.raises(Invalid, match="Ccc-Stream-Inbox"):
            await Bus(svc.nc).call("ai.chat", {**chat("m"), "stream": True})


async def test_reader_detects_a_lost_frame_and_a_missing_end(nats_url: str) -> None:
    """The reference reader against a hand-made, broken streamer (what the gateway must catch)."""
    nc = await nats.connect(nats_url)
    bus = Bus(nc)

    async def streamer(msg: nats.aio.msg.Msg) -> None:
        inbox = msg.headers["Ccc-Stream-Inbox"]
        body = json.loads(msg.data)
        seqs = [0, 2] if body["case"] == "gap" else [0, 1]
        for seq in seqs:
            chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": "x"}}]}
            await nc.publish(
                inbox,
                json.dumps(chunk).encode(),
                headers={"Ccc-Stream-Id": "s", "Ccc-Stream-Seq": str(seq)},
            )
        await nc.publish(msg.reply, b'{"object": "ccc.stream.summary"}')  # and no end frame

    await nc.subscribe("ccc.brokenstream.chat", cb=streamer)
    try:
        with pytest.raises(StreamBroken, match="frame 1 was lost"):
            async for _ in read_stream(bus, "ccc.brokenstream.chat", {"case": "gap"}):
                pass
        received = []
        with pytest.raises(StreamBroken, match="without its final frame"):
            async for chunk in read_stream(bus, "ccc.brokenstream.chat", {"case": "no-end"}):
                received.append(chunk)
        assert len(received) == 2
    finally:
        await nc.close()


async def test_a_server_refusing_stream_options_still_streams(nats_url: str, fake) -> None:
    name = unique("legacy")
    old, url = await fake(name, ["m"], legacy=True)
    async with ai_instance(nats_url, {"providers": [provider(name, url, ["m"])]}) as svc:
        chunks = [c async for c in read_stream(Bus(svc.nc), "ccc.ai.chat", chat("m"))]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "stream_options" in old.bodies[0] and "stream_options" not in old.bodies[1]
