"""A protocol-faithful fake of an OpenAI-compatible model server (and Ollama's model list).

Same paths, payloads and error shapes as OpenAI's API reference: ``GET /v1/models``,
``POST /v1/chat/completions`` (JSON or SSE ``data:`` chunks ending in ``data: [DONE]``,
usage chunk when ``stream_options.include_usage``; tool calls when ``tools`` are given),
``POST /v1/embeddings`` (float or base64), ``POST /v1/images/generations`` (with
``images=True``), ``POST /v1/audio/transcriptions`` (multipart in; ``{"text"}`` JSON, or
text/plain for ``text``/``srt``/``vtt``) and ``POST /v1/audio/speech`` (JSON in, audio
bytes out, ``audio/mpeg`` for mp3) with ``audio=True``, errors as ``{"error": {...}}``
with 429's ``Retry-After``; plus Ollama's ``GET /api/tags``. ``api_key`` makes it check
``Authorization: Bearer``; ``legacy=True`` refuses ``stream_options`` with a 400 as older
servers do. Behaviour is switched at run time:

- ``healthy``: answers everything;
- ``error500`` / ``error429``: every model call fails that way;
- ``cut``: streams stop half-way, the connection dropped without ``[DONE]``;
- ``truncate``: streams stop half-way with a clean end of the body, no ``[DONE]``.

A plain ASGI app (no framework), served by uvicorn in the test's event loop or as its own
process (``python tests/fakes/openai_compatible.py --port N``) for benchmarks. Tests only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import struct
import time
import uuid
import wave
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fakes.serving import free_port, send_json, serving  # noqa: F401

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
MODES = ("healthy", "error500", "error429", "cut", "truncate")
MODEL_PATHS = ("/v1/chat/completions", "/v1/embeddings", "/v1/images/generations")
AUDIO_PATHS = ("/v1/audio/transcriptions", "/v1/audio/speech")
# OpenAI's media type of each speech format.
SPEECH_MEDIA = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
# A valid 1x1 transparent PNG.
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


class FakeOpenAI:
    def __init__(
        self,
        name: str = "fake",
        models: list[str] | None = None,
        *,
        mode: str = "healthy",
        api_key: str | None = None,
        delay: float = 0.0,
        chunks: int = 6,
        images: bool = False,
        audio: bool = False,
        legacy: bool = False,
    ) -> None:
        self.name = name
        self.models = list(models or ["fake-model"])
        self.mode = mode
        self.api_key = api_key
        self.delay = delay
        self.chunks = chunks
        self.images = images
        self.audio = audio
        self.legacy = legacy  # an older server: refuses stream_options with a 400
        self.hits: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []

    @property
    def calls(self) -> int:
        """Model calls received (chat, embeddings, images, audio), whatever their outcome."""
        return sum(self.hits[p] for p in (*MODEL_PATHS, *AUDIO_PATHS))

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        self.hits[path] += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.api_key is not None and path.startswith("/v1/"):
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            if auth != f"Bearer {self.api_key}":
                await self._error(
                    send,
                    401,
                    "Incorrect API key provided.",
                    "invalid_request_error",
                    "invalid_api_key",
                )
                return
        if method == "GET" and path == "/v1/models":
            await send_json(send, 200, self._model_list())
        elif method == "GET" and path == "/api/tags":
            await send_json(send, 200, self._tags())
        elif method == "POST" and path == "/v1/audio/transcriptions" and self.audio:
            await self._transcription(scope, body, send)
        elif method == "POST" and path == "/v1/audio/speech" and self.audio:
            await self._speech(body, send)
        elif method == "POST" and path in MODEL_PATHS and (self.images or "images" not in path):
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                await self._error(
                    send,
                    400,
                    "We could not parse the JSON body of your request.",
                    "invalid_request_error",
                    None,
                )
                return
            self.bodies.append(request)
            if self.delay:
                await asyncio.sleep(self.delay)
            if await self._failing(send):
                return
            if path.endswith("/generations"):
                if request.get("model", self.models[0]) not in self.models:
                    await self._error(
                        send,
                        404,
                        "The model does not exist.",
                        "invalid_request_error",
                        "model_not_found",
                    )
                else:
                    await send_json(send, 200, self._image(request))
            elif self.legacy and "stream_options" in request:
                await self._error(
                    send,
                    400,
                    "Unrecognized request argument supplied: stream_options",
                    "invalid_request_error",
                    None,
                )
            elif request.get("model") not in self.models:
                await self._error(
                    send,
                    404,
                    f"The model `{request.get('model')}` does not exist "
                    "or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                )
            elif path == "/v1/embeddings":
                await send_json(send, 200, self._embeddings(request))
            elif request.get("stream"):
                await self._stream(send, request)
            else:
                await send_json(send, 200, self._completion(request))
        else:
            await self._error(
                send,
                404,
                f"Unknown request URL: {method} {path}.",
                "invalid_request_error",
                "unknown_url",
            )

    # -- audio ----------------------------------------------------------------------------

    async def _transcription(self, scope: Scope, body: bytes, send: Send) -> None:
        from starlette.datastructures import UploadFile
        from starlette.requests import Request

        async def replay() -> MutableMapping[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        ctype = dict(scope["headers"]).get(b"content-type", b"").decode()
        if not ctype.startswith("multipart/form-data"):
            await self._error(
                send,
                400,
                "Invalid Content-Type header; expected multipart/form-data.",
                "invalid_request_error",
                None,
            )
            return
        form = await Request(scope, replay).form()
        fields: dict[str, Any] = {}
        audio: tuple[str, bytes] | None = None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name == "file":
                    audio = (value.filename or "", await value.read())
            else:
                fields[name] = value
        await form.close()
        self.bodies.append({**fields, "file": audio[0] if audio else None})
        if self.delay:
            await asyncio.sleep(self.delay)
        if await self._failing(send):
            return
        fmt = fields.get("response_format") or "json"
        problem: tuple[int, str, str | None] | None = None
        if audio is None:
            problem = (400, "you must provide a file", "file")
        elif not fields.get("model"):
            problem = (400, "you must provide a model parameter", "model")
        elif fields["model"] not in self.models:
            problem = (404, "The model does not exist or you do not have access to it.", None)
        elif fmt not in TRANSCRIPTION_FORMATS:
            problem = (400, f"Invalid value for 'response_format': {fmt!r}.", "response_format")
        if problem is not None or audio is None:
            status, message, param = problem or (400, "you must provide a file", "file")
            code = "model_not_found" if status == 404 else None
            error = {"message": message, "type": "invalid_request_error", "param": param}
            await send_json(send, status, {"error": {**error, "code": code}})
            return
        filename, data = audio
        text = f"{self.name} heard {len(data)} bytes of {filename}."
        seconds = max(1, len(data) // 16000)
        if fmt == "json":
            await send_json(
                send, 200, {"text": text, "usage": {"type": "duration", "seconds": seconds}}
            )
        elif fmt == "verbose_json":
            segment = {"id": 0, "seek": 0, "start": 0.0, "end": float(seconds), "text": text}
            answer = {
                "task": "transcribe",
                "language": fields.get("language") or "english",
                "duration": float(seconds),
                "text": text,
                "segments": [segment],
            }
            await send_json(send, 200, answer)
        else:
            if fmt == "srt":
                out = f"1\n00:00:00,000 --> 00:00:0{min(seconds, 9)},000\n{text}\n\n"
            elif fmt == "vtt":
                out = f"WEBVTT\n\n00:00:00.000 --> 00:00:0{min(seconds, 9)}.000\n{text}\n\n"
            else:
                out = text + "\n"
            await _send_bytes(send, 200, out.encode(), b"text/plain; charset=utf-8")

    async def _speech(self, body: bytes, send: Send) -> None:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            await self._error(
                send,
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            )
            return
        self.bodies.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if await self._failing(send):
            return
        fmt = request.get("response_format") or "mp3"
        for param in ("model", "input", "voice"):
            if not request.get(param):
                await send_json(
                    send,
                    400,
                    {
                        "error": {
                            "message": f"Missing required parameter: '{param}'.",
                            "type": "invalid_request_error",
                            "param": param,
                            "code": "missing_required_parameter",
                        }
                    },
                )
                return
        if request["model"] not in self.models:
            await self._error(
                send,
                404,
                f"The model `{request['model']}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
            return
        if fmt not in SPEECH_MEDIA:
            await send_json(
                send,
                400,
                {
                    "error": {
                        "message": f"Invalid value for 'response_format': {fmt!r}.",
                        "type": "invalid_request_error",
                        "param": "response_format",
                        "code": None,
                    }
                },
            )
            return
        audio = fake_audio(fmt, f"{self.name}:{request['voice']}:{request['input']}")
        # OpenAI streams the audio (chunked, no Content-Length).
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", SPEECH_MEDIA[fmt].encode())],
            }
        )
        half = len(audio) // 2
        await send({"type": "http.response.body", "body": audio[:half], "more_body": True})
        await send({"type": "http.response.body", "body": audio[half:], "more_body": False})

    async def _failing(self, send: Send) -> bool:
        if self.mode == "error500":
            await self._error(
                send,
                500,
                "The server had an error while processing your request.",
                "server_error",
                None,
            )
            return True
        if self.mode == "error429":
            await self._error(
                send,
                429,
                "Rate limit reached for requests.",
                "requests",
                "rate_limit_exceeded",
                headers=[(b"retry-after", b"2")],
            )
            return True
        return False

    async def _error(
        self,
        send: Send,
        status: int,
        message: str,
        kind: str,
        code: str | None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        await send_json(send, status, body, headers)

    # -- payloads -------------------------------------------------------------------------

    def _model_list(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": self.name}
                for m in self.models
            ],
        }

    def _tags(self) -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": m,
                    "model": m,
                    "modified_at": "2026-11-01T10:00:00.000000000Z",
                    "size": 1_000_000,
                    "digest": hashlib.sha256(m.encode()).hexdigest(),
                    "details": {
                        "format": "gguf",
                        "family": "fake",
                        "parameter_size": "1M",
                        "quantization_level": "Q4_K_M",
                    },
                }
                for m in self.models
            ]
        }

    def _words(self) -> list[str]:
        return f"Hello from {self.name}, a fake model server answering.".split()

    @staticmethod
    def _prompt_tokens(request: dict[str, Any]) -> int:
        return sum(len(str(m.get("content", "")).split()) for m in request.get("messages", [])) + 3

    def _completion(self, request: dict[str, Any]) -> dict[str, Any]:
        words = self._words()
        message: dict[str, Any] = {"role": "assistant", "content": " ".join(words), "refusal": None}
        finish = "stop"
        if request.get("tools"):
            tool = request["tools"][0]["function"]["name"]
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{uuid.uuid4().hex[:24]}",
                        "type": "function",
                        "function": {"name": tool, "arguments": json.dumps({"from": self.name})},
                    }
                ],
            }
            finish = "tool_calls"
        prompt = self._prompt_tokens(request)
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
                "completion_tokens": len(words),
                "total_tokens": prompt + len(words),
            },
        }

    async def _stream(self, send: Send, request: dict[str, Any]) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            body = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": request["model"],
                "system_fingerprint": f"fp_{self.name}",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            return b"data: " + json.dumps(body).encode() + b"\n\n"

        words = self._words()[: self.chunks]
        frames = [chunk({"role": "assistant", "content": ""})]
        frames += [chunk({"content": (" " if i else "") + w}) for i, w in enumerate(words)]
        frames.append(chunk({}, "stop"))
        if (request.get("stream_options") or {}).get("include_usage"):
            prompt = self._prompt_tokens(request)
            usage = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": request["model"],
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": len(words),
                    "total_tokens": prompt + len(words),
                },
            }
            frames.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
        if self.mode == "truncate":
            for frame in frames[: len(frames) // 2]:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if self.mode == "cut":
            for frame in frames[: len(frames) // 2]:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                await asyncio.sleep(0.01)
            # Drop the connection mid-stream, as a crashed or killed upstream does.
            raise ConnectionAbortedError(f"{self.name} cuts the stream (test fake)")
        for frame in frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    def _image(self, request: dict[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {"revised_prompt": request.get("prompt")}
        if request.get("response_format") == "url":
            item["url"] = f"https://images.invalid/{uuid.uuid4().hex}.png"
        else:
            item["b64_json"] = base64.b64encode(TINY_PNG).decode()
        return {"created": int(time.time()), "data": [item] * int(request.get("n") or 1)}

    def _embeddings(self, request: dict[str, Any]) -> dict[str, Any]:
        raw = request.get("input")
        texts = [raw] if isinstance(raw, str) else list(raw or [])
        data = []
        for i, text in enumerate(texts):
            digest = hashlib.sha256(str(text).encode()).digest()
            vector = [b / 255.0 for b in digest[:8]]
            if request.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(len(str(t).split()) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": request["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def fake_audio(fmt: str, text: str) -> bytes:
    """Deterministic bytes in the format's container (real WAV; the others start with
    their format's magic bytes), one byte of "audio" per character of ``text``."""
    payload = hashlib.sha256(text.encode()).digest() * (1 + len(text) // 32)
    payload = payload[: max(32, len(text))]
    if fmt == "wav":
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(24000)
            w.writeframes(payload if len(payload) % 2 == 0 else payload + b"\0")
        return out.getvalue()
    magic = {
        "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
        "opus": b"OggS\x00\x02",
        "aac": b"\xff\xf1\x50\x80",
        "flac": b"fLaC",
        "pcm": b"",
    }[fmt]
    return magic + payload


async def _send_bytes(send: Send, status: int, data: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="fake")
    parser.add_argument("--models", default="fake-model")
    parser.add_argument("--mode", choices=MODES, default="healthy")
    args = parser.parse_args()
    import uvicorn

    app = FakeOpenAI(args.name, args.models.split(","), mode=args.mode)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        lifespan="off",
        access_log=False,
        log_level="warning",
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
