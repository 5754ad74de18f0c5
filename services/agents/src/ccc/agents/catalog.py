"""Tools from the fleet: every endpoint announced on the bus is a function-calling tool.

The live catalog is NATS micro discovery (``$SRV.INFO``), re-read at most every
``agents_catalog_ttl`` seconds, so tools appear and disappear with their services. An
endpoint's announced ``request_schema`` is the tool's JSON Schema and its docstring the
description. OpenAI function names must match ``^[a-zA-Z0-9_-]{1,64}$``: ``rag.search``
becomes ``rag__search``; the mapping back goes through the catalog's table, never by
parsing the name, so a name cut to 64 characters (with a hash) still resolves.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS

from ccc.common import roles as role_rules
from ccc.common.discovery import discover

NAME_OK = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# The runtime's own operation endpoints: waiting on an operation is done for the model.
HIDDEN_OPS = frozenset({"operation.get", "operation.list", "operation.cancel"})


def tool_name(target: str) -> str:
    """``rag.search`` → ``rag__search``; cut to 64 characters with a hash when longer."""
    name = target.replace(".", "__")
    if len(name) <= 64:
        return name
    digest = hashlib.sha256(target.encode()).hexdigest()[:8]
    return f"{name[:55]}_{digest}"


@dataclass(frozen=True)
class Tool:
    name: str
    target: str
    description: str
    roles: frozenset[str]
    parameters: dict[str, Any]
    kind: str = "request"

    def function(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description[:1024],
                "parameters": self.parameters,
            },
        }


def _parameters(raw: str | None) -> dict[str, Any]:
    try:
        schema = json.loads(raw) if raw else {}
    except ValueError:
        schema = {}
    if not isinstance(schema, dict) or schema.get("type") != "object":
        schema = {"type": "object", "properties": {}}
    schema.pop("title", None)
    return schema


def _description(target: str, meta: dict[str, str]) -> str:
    text = meta.get("description") or f"Call {target} on the bus."
    if meta.get("kind") == "operation":
        text += " (Long work: the result comes when the operation ends.)"
    return f"[{target}] {text}"


def matches(target: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(target, p) for p in patterns)


@dataclass
class Catalog:
    """The fleet's endpoints as tools, cached for ``ttl`` seconds."""

    nc: NATS
    ttl: float = 5.0
    _tools: dict[str, Tool] = field(default_factory=dict)
    _read_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def tools(self, *, fresh: bool = False) -> dict[str, Tool]:
        """Every endpoint of the fleet as a tool, by target (``<domain>.<op>``)."""
        async with self._lock:
            if fresh or time.monotonic() - self._read_at > self.ttl:
                self._tools = await self._read()
                self._read_at = time.monotonic()
            return self._tools

    async def _read(self) -> dict[str, Tool]:
        out: dict[str, Tool] = {}
        for svc in await discover(self.nc):
            for ep in svc.endpoints:
                meta = ep.metadata
                op = meta.get("op") or ep.name
                if op in HIDDEN_OPS:
                    continue
                target = f"{svc.name}.{op}"
                name = tool_name(target)
                if not NAME_OK.match(name) or any(t.name == name for t in out.values()):
                    continue  # cannot be offered under a valid, unambiguous name
                roles = frozenset(r for r in meta.get("roles", "").split(",") if r)
                out[target] = Tool(
                    name=name,
                    target=target,
                    description=_description(target, meta),
                    roles=roles,
                    parameters=_parameters(meta.get("request_schema")),
                    kind=meta.get("kind", "request"),
                )
        return out

    async def for_agent(
        self, patterns: Iterable[str], caller_roles: frozenset[str] | None, *, fresh: bool = False
    ) -> dict[str, Tool]:
        """The tools an agent may use for this caller, by function name: its globs over the
        catalog, minus what the caller's roles could not call anyway."""
        patterns = list(patterns)
        out: dict[str, Tool] = {}
        for target, tool in (await self.tools(fresh=fresh)).items():
            if not matches(target, patterns):
                continue
            if caller_roles is not None and not role_rules.allowed(caller_roles, tool.roles):
                continue
            out[tool.name] = tool
        return out
