"""Unit tests of the gateway's pure parts: route table, rate limiter, OpenAPI hoisting."""

from __future__ import annotations

import json

from ccc.common.discovery import EndpointSummary, ServiceSummary
from ccc.gateway.openapi import build
from ccc.gateway.ratelimit import RateLimiter
from ccc.gateway.routes import RouteTable, operation_subject


def service(name: str, *routes: str) -> ServiceSummary:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "tag": {"$ref": "#/$defs/Tag"}},
        "$defs": {"Tag": {"type": "string", "enum": ["a", "b"]}},
    }
    return ServiceSummary(
        name=name,
        versions=["1.0.0"],
        instances=["i1"],
        endpoints=[
            EndpointSummary(
                name=f"ep{i}",
                subject=f"ccc.{name}.ep{i}",
                metadata={
                    "op": f"ep{i}",
                    "http": route,
                    "roles": "reader",
                    "timeout": "3",
                    "kind": "request",
                    "request_schema": json.dumps(schema),
                },
            )
            for i, route in enumerate(routes)
        ],
    )


def test_routes_match_static_and_templated_paths():
    table = RouteTable()
    table.rebuild([service("rag", "POST /v1/rag/search", "GET /v1/rag/collections/{name}")])
    route, params = table.match("GET", "/v1/rag/collections/docs")  # type: ignore[misc]
    assert route.subject == "ccc.rag.ep1" and params == {"name": "docs"}
    assert table.match("POST", "/v1/rag/search") is not None
    assert table.match("GET", "/v1/rag/collections/a/b") is None
    assert table.allows_other_method("/v1/rag/search") == ["POST"]


def test_a_vanished_service_is_remembered_as_gone():
    table = RouteTable()
    table.rebuild([service("rag", "GET /v1/rag/collections/{name}")])
    v = table.version
    assert table.rebuild([]) is True and table.version == v + 1
    assert table.match("GET", "/v1/rag/collections/x") is None
    gone = table.match_gone("GET", "/v1/rag/collections/x")
    assert gone is not None and gone.domain == "rag"
    table.rebuild([service("rag", "GET /v1/rag/collections/{name}")])
    assert table.match_gone("GET", "/v1/rag/collections/x") is None


def test_first_announcer_of_a_route_keeps_it():
    table = RouteTable()
    table.rebuild([service("a", "POST /v1/x"), service("b", "POST /v1/x")])
    route, _ = table.match("POST", "/v1/x")  # type: ignore[misc]
    assert route.domain == "a"


def test_rate_limiter_allows_burst_then_asks_to_wait():
    limiter = RateLimiter(rate=1.0, burst=3)
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("k")
    assert 0 < wait <= 1.0
    assert limiter.take("other") == 0.0


def test_openapi_hoists_defs_into_components():
    table = RouteTable()
    table.rebuild([service("rag", "POST /v1/rag/search", "GET /v1/rag/collections/{name}")])
    doc = build({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}}, table)
    body = doc["paths"]["/v1/rag/search"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["tag"]["$ref"] == "#/components/schemas/rag.Tag"
    assert "rag.Tag" in doc["components"]["schemas"]
    params = doc["paths"]["/v1/rag/collections/{name}"]["get"]["parameters"]
    assert {(p["name"], p["in"]) for p in params} == {("name", "path"), ("tag", "query")}


def test_operation_ids_route_to_their_service():
    assert operation_subject("talos_k8s-0a1b2c3d") == "ccc.talos_k8s.operation.get"
    assert operation_subject("nodash") is None
    assert operation_subject("Bad-123") is None
