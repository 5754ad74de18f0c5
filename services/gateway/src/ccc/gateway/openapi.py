"""The OpenAPI 3.1 document of the live catalog: built-in routes plus announced ones.

Announced schemas are JSON Schema 2020-12 with local ``$defs``; OpenAPI resolves
``#/...`` against its own root, so the ``$defs`` are hoisted into
``components/schemas`` (named ``<domain>.<Model>``) and their references rewritten.
"""

from __future__ import annotations

import copy
from typing import Any

from .routes import Route, RouteTable


def _hoist(schema: dict[str, Any], prefix: str, components: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(schema)
    defs = schema.pop("$defs", {})

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                node["$ref"] = f"#/components/schemas/{prefix}.{ref[len('#/$defs/') :]}"
            for value in node.values():
                rewrite(value)
        elif isinstance(node, list):
            for value in node:
                rewrite(value)
        return node

    for name, definition in defs.items():
        components[f"{prefix}.{name}"] = rewrite(definition)
    rewritten: dict[str, Any] = rewrite(schema)
    return rewritten


def _operation(route: Route, components: dict[str, Any]) -> dict[str, Any]:
    request = _hoist(route.request_schema, route.domain, components)
    properties: dict[str, Any] = request.get("properties", {})
    required = set(request.get("required", []))
    parameters = [
        {"name": p, "in": "path", "required": True, "schema": properties.get(p, {"type": "string"})}
        for p in route.params
    ]
    op: dict[str, Any] = {
        "operationId": f"{route.domain}.{route.op}",
        "summary": (route.description.splitlines() or [f"{route.domain}.{route.op}"])[0],
        "description": route.description,
        "tags": [route.domain],
        "parameters": parameters,
        "security": [{"bearer": []}, {"apiKey": []}],
        "x-ccc-roles": sorted(route.roles),
        "x-ccc-subject": route.subject,
        "x-ccc-timeout": route.timeout,
        "responses": {
            "400": {"$ref": "#/components/responses/Problem"},
            "401": {"$ref": "#/components/responses/Problem"},
            "403": {"$ref": "#/components/responses/Problem"},
            "422": {"$ref": "#/components/responses/Problem"},
            "503": {"$ref": "#/components/responses/Problem"},
            "504": {"$ref": "#/components/responses/Problem"},
        },
    }
    if route.method in ("GET", "DELETE"):
        for name, prop in properties.items():
            if name not in route.params:
                parameters.append(
                    {"name": name, "in": "query", "required": name in required, "schema": prop}
                )
    else:
        op["requestBody"] = {
            "required": bool(required - set(route.params)),
            "content": {"application/json": {"schema": request}},
        }
    if route.kind == "operation":
        op["responses"]["202"] = {
            "description": "Accepted: an operation record; poll /v1/operations/{id}",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Operation"}}},
        }
    elif route.binary:
        op["responses"]["200"] = {
            "description": "OK: raw bytes; Content-Type says which media type",
            "content": {"application/octet-stream": {"schema": BINARY}},
        }
    else:
        response = route.response_schema or {}
        content: dict[str, Any] = {
            "application/json": {"schema": _hoist(response, route.domain, components)}
        }
        if route.maybe_binary:
            content["application/octet-stream"] = {"schema": BINARY}
        op["responses"]["200"] = {
            "description": "OK: JSON, or raw bytes for some requests (Content-Type says which)"
            if route.maybe_binary
            else "OK",
            "content": content,
        }
    return op


BINARY = {"type": "string", "format": "binary"}


def build(base: dict[str, Any], table: RouteTable) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    components.setdefault("securitySchemes", {}).update(
        {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    )
    components.setdefault("responses", {})["Problem"] = {
        "description": "RFC 9457 problem",
        "content": {"application/problem+json": {"schema": {"type": "object"}}},
    }
    paths = doc.setdefault("paths", {})
    for route in table.all_routes():
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    doc["tags"] = [
        {"name": s.name, "description": s.description} for s in table.services
    ] + doc.get("tags", [])
    return doc
