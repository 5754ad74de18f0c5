"""A scripted OpenAI-compatible model server: chat completions answered from a script.

Same paths, payloads and error shapes as OpenAI's API reference (``GET /v1/models``,
``POST /v1/chat/completions`` with ``tools`` and ``tool_calls`` answers, errors as
``{"error": {...}}``), so it is used through the real ai service exactly as a provider.

A script is a list of turns under a model name. The answer to a request is the turn whose
index is the number of assistant messages already in the request's ``messages``, so the
server keeps no state: the same conversation always gets the same answer, which is what a
run resumed after a crash needs (it asks again only what had not been answered). A turn is

- ``{"tool_calls": [{"name": "rag__search", "arguments": {...}, "id": "call_1"}]}``, or
- ``{"content": "the final answer"}``;

past the end of the script the last turn repeats (a model stuck in a loop). ``"delay"``
(seconds) in a turn holds that answer back. Every request body is kept in ``requests``
per model for the test to read. Tests only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fakes.serving import free_port, send_json, serving  # noqa: F401

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Turn = dict[str, Any]


class ScriptedModel:
    """ASGI app; ``models`` are the names served, each given a script with ``script()``."""

    def __init__(self, name: str = "scripted", models: list[str] | None = None) -> None:
        self.name = name
        self.models = list(models or [f"scripted-{i}" for i in range(40)])
        self.scripts: dict[str, list[Turn]] = {}
        self.requests: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self._free = iter(self.models)

    def script(self, turns: list[Turn], model: str | None = None) -> str:
        """Give a model (the next unused one by default) a script; returns its name."""
        model = model or next(self._free)
        self.scripts[model] = list(turns)
        return model

    def turns_asked(self, model: str) -> list[int]:
        """The turn index of every request the model received, in order."""
        return [_turn_index(body) for body in self.requests[model]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if method == "GET" and path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": self.name}
                for m in self.models
            ]
            await send_json(send, 200, {"object": "list", "data": data})
            return
        if method != "POST" or path != "/v1/chat/completions":
            await _error(send, 404, f"Unknown request URL: {method} {path}.", "unknown_url")
            return
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            await _error(send, 400, "We could not parse the JSON body of your request.", None)
            return
        model = request.get("model")
        if model not in self.scripts:
            await _error(
                send,
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "model_not_found",
            )
            return
        self.requests[model].append(request)
        if request.get("stream"):
            await _error(send, 400, "this scripted server does not stream", None)
            return
        script = self.scripts[model]
        turn = script[min(_turn_index(request), len(script) - 1)]
        if turn.get("delay"):
            await asyncio.sleep(float(turn["delay"]))
        await send_json(send, 200, self._completion(request, turn))

    def _completion(self, request: dict[str, Any], turn: Turn) -> dict[str, Any]:
        index = _turn_index(request)
        message: dict[str, Any] = {"role": "assistant", "content": turn.get("content")}
        finish = "stop"
        if turn.get("tool_calls"):
            counter = itertools.count()
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": call.get("id") or f"call_{index}_{next(counter)}",
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        "arguments": json.dumps(call.get("arguments") or {}),
                    },
                }
                for call in turn["tool_calls"]
            ]
            finish = "tool_calls"
        prompt = sum(len(str(m.get("content") or "").split()) for m in request["messages"]) + 3
        completion = len(json.dumps(message).split())
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request["model"],
            "system_fingerprint": f"fp_{self.name}",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }


def _turn_index(request: dict[str, Any]) -> int:
    return sum(1 for m in request.get("messages", []) if m.get("role") == "assistant")


async def _error(send: Send, status: int, message: str, code: str | None) -> None:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    await send_json(send, status, body)
