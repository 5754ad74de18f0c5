"""The route table, rebuilt from discovery: HTTP method and path → bus subject.

A route whose service disappeared is remembered as *gone*: it answers 503 (the service
is down) rather than 404 (no such thing), while the catalog and OpenAPI drop it.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from ccc.common import subjects
from ccc.common.discovery import ServiceSummary

log = logging.getLogger(__name__)
# Paths the gateway serves itself: an announced route may never shadow them.
RESERVED_PATHS = (
    "/v1/keys",
    "/v1/events",
    "/v1/operations",
    "/v1/catalog",
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/openapi.json",
    "/mcp",
)
PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    domain: str
    op: str
    subject: str
    roles: frozenset[str]
    timeout: float
    kind: str
    description: str = ""
    streams: bool = False
    binary: bool = False
    """The answer is raw bytes with their own Content-Type."""
    maybe_binary: bool = False
    """The answer is JSON or, for some requests, raw bytes (``Model | Binary``)."""
    request_schema: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    response_schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    pattern: re.Pattern[str] | None = field(default=None, compare=False, hash=False)

    @property
    def params(self) -> list[str]:
        return PARAM.findall(self.path)


def _compile(path: str) -> re.Pattern[str] | None:
    if "{" not in path:
        return None
    regex = PARAM.sub(
        lambda m: f"(?P<{m.group(1)}>[^/]+)",
        re.escape(path).replace(r"\{", "{").replace(r"\}", "}"),
    )
    return re.compile(f"^{regex}$")


def routes_of(service: ServiceSummary) -> list[Route]:
    out = []
    for ep in service.endpoints:
        meta = ep.metadata
        http = meta.get("http")
        if not http:
            continue
        method, _, path = http.partition(" ")
        try:
            request_schema = json.loads(meta.get("request_schema") or "{}")
            response_schema = (
                json.loads(meta["response_schema"]) if "response_schema" in meta else None
            )
            timeout = float(meta.get("timeout") or 10)
        except ValueError:
            log.warning("endpoint %s of %s announces bad metadata; skipped", ep.name, service.name)
            continue
        out.append(
            Route(
                method=method,
                path=path,
                domain=service.name,
                op=meta.get("op", ep.name),
                subject=ep.subject,
                roles=frozenset(r for r in meta.get("roles", "admin").split(",") if r),
                timeout=timeout,
                kind=meta.get("kind", "request"),
                description=meta.get("description", ""),
                streams=meta.get("stream") == "sse",
                binary=meta.get("response_content") == "binary",
                maybe_binary=meta.get("response_content") == "json-or-binary",
                request_schema=request_schema,
                response_schema=response_schema,
                pattern=_compile(path),
            )
        )
    return out


class RouteTable:
    def __init__(self) -> None:
        self.static: dict[tuple[str, str], Route] = {}
        self.templated: list[Route] = []
        self.services: list[ServiceSummary] = []
        self.gone: dict[tuple[str, str], Route] = {}
        self.version = 0

    def rebuild(self, services: list[ServiceSummary]) -> bool:
        """Swap in the routes of ``services``; returns True when anything changed."""
        static: dict[tuple[str, str], Route] = {}
        templated: list[Route] = []
        for service in services:
            for route in routes_of(service):
                if route.path.startswith(RESERVED_PATHS):
                    log.warning(
                        "%s announces %s %s, which belongs to the gateway; ignored",
                        service.name,
                        route.method,
                        route.path,
                    )
                    continue
                key = (route.method, route.path)
                if key in static or any((r.method, r.path) == key for r in templated):
                    log.warning("route %s %s announced twice; keeping the first", *key)
                    continue
                if route.pattern is None:
                    static[key] = route
                else:
                    templated.append(route)
        before = set(self.static) | {(r.method, r.path) for r in self.templated}
        after = set(static) | {(r.method, r.path) for r in templated}
        for key in before - after:
            old = self.static.get(key) or next(
                r for r in self.templated if (r.method, r.path) == key
            )
            self.gone[key] = old
        for key in after:
            self.gone.pop(key, None)
        changed = before != after or [s.model_dump() for s in self.services] != [
            s.model_dump() for s in services
        ]
        self.static, self.templated, self.services = static, templated, services
        if changed:
            self.version += 1
        return changed

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        route = self.static.get((method, path))
        if route is not None:
            return route, {}
        for route in self.templated:
            if route.method == method and route.pattern is not None:
                m = route.pattern.match(path)
                if m:
                    return route, m.groupdict()
        return None

    def match_gone(self, method: str, path: str) -> Route | None:
        route = self.gone.get((method, path))
        if route is not None:
            return route
        for (m, _), route in self.gone.items():
            if m == method and route.pattern is not None and route.pattern.match(path):
                return route
        return None

    def allows_other_method(self, path: str) -> list[str]:
        methods = [m for (m, p) in self.static if p == path]
        methods += [
            r.method for r in self.templated if r.pattern is not None and r.pattern.match(path)
        ]
        return sorted(set(methods))

    def all_routes(self) -> list[Route]:
        return sorted([*self.static.values(), *self.templated], key=lambda r: (r.path, r.method))


def operation_subject(op_id: str, action: str = "get") -> str | None:
    """``/v1/operations/{id}`` goes to the service named by the id's prefix."""
    domain, sep, rest = op_id.partition("-")
    if not sep or not rest:
        return None
    try:
        subjects.check_domain(domain)
    except ValueError:
        return None
    return subjects.request_subject(domain, f"operation.{action}")
