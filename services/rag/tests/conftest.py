"""Fixtures of the rag tests: the real ai service (local ONNX MiniLM embeddings, chat
routed to a scripted OpenAI-compatible server), a rag instance with its embedded index
in a temporary directory, and a small website served on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ccc.ai.config import AIConfig, AISettings
from ccc.ai.service import build_service
from ccc.common import Service
from ccc.common.bus import Bus
from ccc.common.natsserver import free_port
from ccc.common.testing import running
from ccc.rag.service import service as rag_service

ROOT = Path(__file__).resolve().parents[3]
CHAT_MODEL = "scripted"


def _load_fakes() -> Any:
    name = "ccc_rag_test_fakes"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests/fakes/openai_compatible.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fakes = _load_fakes()


class ScriptedModel(fakes.FakeOpenAI):  # type: ignore[misc,name-defined]
    """An OpenAI-compatible chat server whose answer a test scripts from the prompt."""

    def __init__(self) -> None:
        super().__init__("scripted", [CHAT_MODEL])
        self.script: Callable[[str], str] = lambda prompt: "NOT_FOUND"
        self.prompts: list[str] = []

    def _completion(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = super()._completion(request)
        prompt = str(request["messages"][-1]["content"])
        self.prompts.append(prompt)
        answer["choices"][0]["message"]["content"] = self.script(prompt)
        return answer


@pytest.fixture(scope="session")
async def model() -> AsyncIterator[ScriptedModel]:
    app = ScriptedModel()
    async with fakes.serving(app) as url:
        app.url = url
        yield app


# Services run per test module, not per session: an ai instance with this test's provider
# must not stay on the shared bus and answer other directories' tests.


@pytest.fixture(scope="module")
async def ai(nats_url: str, model: ScriptedModel) -> AsyncIterator[Service]:
    """The real ai service: local all-MiniLM-L6-v2 (ONNX) for embeddings."""
    config = AIConfig.model_validate(
        {
            "providers": [
                {
                    "name": "scripted",
                    "kind": "openai",
                    "base_url": f"{model.url}/v1",
                    "models": [CHAT_MODEL],
                    "discover": False,
                }
            ]
        }
    )
    settings = AISettings(config=None, local_chat=False, local_embeddings=True)
    service = build_service(config, settings)
    async with running(service, nats_url):
        yield service


@pytest.fixture(scope="session")
def rag_data() -> Iterator[Path]:
    """One data dir for the session: the KV records of collections outlive a module."""
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module")
async def rag(nats_url: str, ai: Service, rag_data: Path) -> AsyncIterator[Service]:
    async with running(rag_service, nats_url, data_dir=rag_data, chat_model=CHAT_MODEL):
        yield rag_service


@pytest.fixture(scope="module")
def bus(rag: Service) -> Bus:
    return Bus(rag.nc, 60.0)


async def finished(bus: Bus, record: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Poll an operation until it ends; returns the final record."""
    deadline = time.monotonic() + timeout
    while True:
        op = await bus.call("rag.operation.get", {"id": record["id"]})
        if op["status"] in ("succeeded", "failed", "cancelled"):
            return dict(op)
        if time.monotonic() > deadline:
            raise AssertionError(f"operation {record['id']} still {op['status']}")
        await asyncio.sleep(0.05)


async def ingest(bus: Bus, request: dict[str, Any]) -> dict[str, Any]:
    """Run an ingest to the end; returns its result (fails the test if it failed)."""
    op = await finished(bus, await bus.call("rag.ingest", request))
    assert op["status"] == "succeeded", op
    return dict(op["result"])


def by_source(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["source"]: d for d in result["documents"]}


# -- a website on loopback ------------------------------------------------------------


class Site:
    """A tiny ASGI website whose pages a test can change between crawls."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, bytes]] = {}
        self.hits: list[str] = []
        self.times: list[float] = []
        self.url = ""

    def html(self, path: str, title: str, body: str) -> None:
        doc = f"<html><head><title>{title}</title></head><body>{body}</body></html>"
        self.pages[path] = ("text/html; charset=utf-8", doc.encode())

    def put(self, path: str, content_type: str, data: bytes) -> None:
        self.pages[path] = (content_type, data)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        path = scope["path"]
        self.hits.append(path)
        self.times.append(time.monotonic())
        found = self.pages.get(path)
        status, ctype, body = (200, *found) if found else (404, "text/plain", b"not found")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def serve_site(site: Site) -> AsyncIterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            site,
            host="127.0.0.1",
            port=port,
            lifespan="off",
            access_log=False,
            log_level="critical",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    site.url = f"http://127.0.0.1:{port}"
    try:
        yield site.url
    finally:
        server.should_exit = True
        await task


def passages(prompt: str) -> dict[int, str]:
    """The numbered context passages of an ask prompt."""
    found: dict[int, str] = {}
    for m in re.finditer(
        r"^\[(\d+)\] \(source: [^\n]*\)\n(.*?)(?=\n\n\[\d+\] |\n\nQuestion: )", prompt, re.S | re.M
    ):
        found[int(m.group(1))] = m.group(2)
    return found
