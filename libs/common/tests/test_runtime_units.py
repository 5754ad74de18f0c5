"""Unit tests of the runtime's pure parts: errors, subjects, decoding, slots, tracing."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel, Field

from ccc.common import Binary, Context, Service, subjects, tracing
from ccc.common.endpoint import build_spec
from ccc.common.errors import (
    BadRequest,
    Invalid,
    NotFound,
    RateLimited,
    Timeout,
    error_from_reply,
)
from ccc.common.slots import Slots


class Req(BaseModel):
    name: str
    size: int = Field(1, ge=1)


class Resp(BaseModel):
    ok: bool


async def handler(req: Req, ctx: Context) -> Resp:
    """Does a thing.

    In detail."""
    return Resp(ok=True)


def spec():
    return build_spec(
        "demo",
        "thing.make",
        handler,
        http=None,
        roles=("reader",),
        timeout=5,
        operation=False,
        resumable=False,
    )


def test_typed_error_survives_the_bus_round_trip():
    original = RateLimited("slow down", retry_after=2.5, extra={"key": "k1"})
    rebuilt = error_from_reply(original.headers(), original.problem_bytes())
    assert isinstance(rebuilt, RateLimited)
    assert rebuilt.detail == "slow down" and rebuilt.retry_after == 2.5
    assert rebuilt.problem()["key"] == "k1"
    assert error_from_reply({"Nats-Service-Error-Code": "504"}, b"").__class__ is Timeout
    assert error_from_reply({}, b"{}") is None


def test_error_header_is_one_line():
    headers = NotFound("line one\nline two").headers()
    assert headers["Nats-Service-Error"] == "line one line two"
    assert headers["Nats-Service-Error-Code"] == "404"


def test_subject_and_route_naming():
    assert subjects.default_route("talos_k8s", "cluster.create") == (
        "POST",
        "/v1/orchestrate/talos_k8s/cluster/create",
    )
    assert subjects.parse_target("talos_k8s.cluster.create") == ("talos_k8s", "cluster.create")
    for bad in ("evt", "Cap", "a-b"):
        with pytest.raises(ValueError):
            subjects.check_domain(bad)
    with pytest.raises(ValueError):
        subjects.parse_target("nodot")


def test_spec_reads_models_route_and_docstring():
    s = spec()
    assert s.request_model is Req and s.response_type is Resp
    assert (s.http_method, s.http_path) == ("POST", "/v1/orchestrate/demo/thing/make")
    meta = s.metadata()
    assert meta["roles"] == "reader" and meta["http"].startswith("POST ")
    assert '"size"' in meta["request_schema"] and '"ok"' in meta["response_schema"]
    assert s.description.startswith("Does a thing.")


async def either(req: Req, ctx: Context) -> Resp | Binary:
    """JSON or bytes."""
    return Resp(ok=True)


async def raw_bytes(req: Req, ctx: Context) -> Binary:
    """Bytes."""
    return Binary(data=b"x", content_type="text/plain")


def test_binary_answers_are_announced_as_such():
    options = {"http": None, "roles": ("reader",), "timeout": 5, "operation": False}
    only = build_spec("demo", "raw", raw_bytes, resumable=False, **options).metadata()
    assert only["response_content"] == "binary" and "response_schema" not in only
    mixed = build_spec("demo", "either", either, resumable=False, **options).metadata()
    assert mixed["response_content"] == "json-or-binary"
    assert '"ok"' in mixed["response_schema"] and "content_type" not in mixed["response_schema"]


def test_decoding_merges_params_and_names_fields():
    s = spec()
    assert s.parse(b'{"name": "a"}', None) == Req(name="a")
    merged = s.parse(b'{"name": "a"}', {subjects.PARAMS_HEADER: '{"name": "b", "size": "3"}'})
    assert merged == Req(name="b", size=3), "path/query params win and are coerced"
    with pytest.raises(BadRequest):
        s.parse(b'{"name": ', None)
    with pytest.raises(Invalid) as err:
        s.parse(b'{"name": "a", "size": 0}', None)
    assert err.value.errors is not None and err.value.errors[0]["loc"] == "size"
    with pytest.raises(Invalid):
        s.parse(b"[1, 2]", {subjects.PARAMS_HEADER: "{}"})


def test_bad_declarations_are_refused_at_import_time():
    service = Service("demo")
    with pytest.raises(ValueError):
        service.endpoint("x", roles=("superuser",))(handler)
    with pytest.raises(ValueError):
        service.endpoint("x", http="FETCH /v1/x")(handler)

    async def untyped(req, ctx):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(TypeError):
        service.endpoint("y")(untyped)
    service.endpoint("z")(handler)
    with pytest.raises(ValueError):
        service.endpoint("z")(handler)


async def test_slots_bound_concurrency_and_hand_over_in_order():
    slots = Slots(2)
    await slots.acquire()
    await slots.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await slots.acquire()
        order.append(i)

    waiters = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert order == [] and slots.busy == 2
    slots.release()
    slots.release()
    await asyncio.sleep(0.01)
    assert order == [0, 1]
    slots.release()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]


def test_remote_trace_context_becomes_current():
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with tracing.server_span("x", {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}):
        assert tracing.current_trace_id() == trace_id
        outgoing: dict[str, str] = {}
        tracing.inject(outgoing)
        assert trace_id in outgoing["traceparent"]
    with tracing.server_span("y", {"traceparent": "garbage"}):
        fresh = tracing.current_trace_id()
    assert fresh and fresh != trace_id


def test_a_span_a_handler_starts_continues_the_request_trace():
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    caller = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    with (
        tracing.server_span("x", caller),
        tracing.tracer("handler").start_as_current_span("own work"),
    ):
        assert tracing.current_trace_id() == trace_id
        outgoing: dict[str, str] = {}
        tracing.inject(outgoing)
        assert outgoing["traceparent"].split("-")[1] == trace_id
