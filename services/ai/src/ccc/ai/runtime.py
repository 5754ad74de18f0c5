"""The model gateway of one ai instance: providers, catalog, fallback, streaming, usage.

One call goes: resolve the name → order its deployments (skipping providers in the shared
cooldown) → try each once, at once falling to the next on a provider failure (no retry of
the failing one: litellm's Router spends 4.7 s retrying before it falls back) → account
the usage off the request path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client as NATS

from ccc.common import (
    BadRequest,
    Binary,
    CCCError,
    Invalid,
    NotFound,
    RateLimited,
    Unavailable,
)
from ccc.common.bus import Bus
from ccc.common.contracts.ai import (
    ChatCompletion,
    ChatCompletionRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ImageGenerationRequest,
    ImagesResponse,
    ModelList,
    ProviderList,
    ProviderStatus,
    SpeechRequest,
    StreamSummary,
    Transcription,
    TranscriptionRequest,
    UsageEvent,
    openai_error,
)
from ccc.common.state import StateStore
from ccc.common.streaming import StreamWriter

from . import costs
from .accounting import Accounting
from .config import AIConfig, AISettings, ProviderConfig
from .discovery import Discovery
from .local_models import LocalChatProvider, LocalEmbeddingsProvider, local_chat_available
from .providers import (
    MEDIA_TYPE,
    LiteLLMProvider,
    OpenAICompatible,
    Provider,
    ProviderError,
    Raw,
    Upload,
)
from .routing import Catalog, Deployment, Resolved
from .shared import Cooldowns

log = logging.getLogger(__name__)
Answer = dict[str, Any]
T = TypeVar("T")
# OpenAI's media types per speech format (when a provider does not send a usable one).
SPEECH_MEDIA = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def build_providers(config: AIConfig, settings: AISettings, data_dir: Path) -> list[Provider]:
    providers: list[Provider] = []
    for item in config.providers:
        providers.append(make_provider(item, settings, data_dir))
    names = {p.name for p in providers}
    if settings.local_embeddings and "local-embeddings" not in names:
        providers.append(LocalEmbeddingsProvider())
    if settings.local_chat and "local-chat" not in names and local_chat_available():
        providers.append(LocalChatProvider(settings, data_dir))
    return providers


def make_provider(item: ProviderConfig, settings: AISettings, data_dir: Path) -> Provider:
    if item.kind in ("openai", "ollama"):
        return OpenAICompatible(item, settings)
    if item.kind == "litellm":
        return LiteLLMProvider(item, settings)
    if item.kind == "local-embeddings":
        return LocalEmbeddingsProvider()
    return LocalChatProvider(settings, data_dir)


class ModelGateway:
    def __init__(
        self,
        *,
        config: AIConfig,
        settings: AISettings,
        state: StateStore,
        bus: Bus,
        instance: str,
        data_dir: Path,
    ) -> None:
        self.config = config
        self.settings = settings
        self.bus = bus
        self.providers = build_providers(config, settings, data_dir)
        self.catalog = Catalog(self.providers, config.models)
        self.cooldowns = Cooldowns(state, instance)
        self.accounting = Accounting(state, bus, config.budgets)
        self.discovery = Discovery(self.catalog, settings.discovery_interval)

    async def start(self) -> None:
        await self.cooldowns.start()
        await self.accounting.start()
        # Load local models and litellm now, not on the first request; a provider that
        # cannot load is logged and stays listed (its calls fail over).
        results = await asyncio.gather(*(p.start() for p in self.providers), return_exceptions=True)
        for provider, result in zip(self.providers, results, strict=True):
            if isinstance(result, BaseException):
                log.error("provider %s did not start: %s", provider.name, result)
        await self.discovery.start()

    async def stop(self) -> None:
        await self.discovery.stop()
        await self.accounting.stop()
        await self.cooldowns.stop()
        for provider in self.providers:
            try:
                await provider.close()
            except Exception:
                log.exception("closing provider %s", provider.name)

    # -- routing ---------------------------------------------------------------------

    def resolve(self, name: str, capability: str) -> Resolved:
        resolved = self.catalog.resolve(name)
        if resolved is None or not resolved.deployments:
            names = self.catalog.names()
            detail = (
                f"model {name!r} is not served here; GET /v1/models lists the {len(names)} that are"
            )
            raise NotFound(
                detail,
                extra={
                    "model": name,
                    "available": names[:50],
                    **openai_error(detail, "model_not_found"),
                },
            )
        able = [d for d in resolved.deployments if capability in d.provider.capabilities]
        if not able:
            providers = sorted({d.provider.name for d in resolved.deployments})
            detail = (
                f"model {name!r} does not offer {capability}: no provider of it does "
                f"(providers: {', '.join(providers)})"
            )
            raise BadRequest(
                detail,
                extra={
                    "model": name,
                    "capability": capability,
                    "providers": providers,
                    **openai_error(detail, "unsupported_capability"),
                },
            )
        resolved.deployments = able
        return resolved

    def offering(self, capability: str) -> list[Provider]:
        """The providers that offer ``capability``; a 400 problem naming it and the
        providers when none does."""
        able = [p for p in self.providers if capability in p.capabilities]
        if not able:
            names = [p.name for p in self.providers]
            detail = f"no configured provider offers {capability} (providers: {', '.join(names)})"
            raise BadRequest(
                detail,
                extra={
                    "capability": capability,
                    "providers": names,
                    **openai_error(detail, "unsupported_capability"),
                },
            )
        return able

    def candidates(self, resolved: Resolved) -> list[Deployment]:
        ordered = self.catalog.order(resolved)
        ready = [d for d in ordered if self.cooldowns.until(d.provider.name) is None]
        if ready:
            return ready
        soonest = min(self.cooldowns.until(d.provider.name) or 0.0 for d in ordered)
        wait = max(0.0, soonest - time.time())
        detail = (
            f"every provider of {resolved.name!r} is cooling down after failures "
            f"({', '.join(sorted({d.provider.name for d in ordered}))}); retry in {wait:.1f}s"
        )
        raise Unavailable(
            detail,
            retry_after=wait,
            extra={
                "model": resolved.name,
                "cooling": [d.provider.name for d in ordered],
                **openai_error(detail, "providers_cooling", "api_error"),
            },
        )

    def failed(self, dep: Deployment, exc: ProviderError, tried: list[dict[str, Any]]) -> None:
        """Note a failure; cool the provider down; raise at once if it is the caller's fault."""
        tried.append(
            {
                "provider": dep.provider.name,
                "model": dep.model,
                "status": exc.status,
                "error": exc.message,
            }
        )
        if not exc.fallback:
            cls = Invalid if exc.status == 422 else BadRequest
            raise cls(
                exc.message,
                extra={
                    "provider": dep.provider.name,
                    "model": dep.model,
                    **openai_error(exc.message, "provider_rejected"),
                },
            )
        if exc.cool:
            seconds = (
                exc.retry_after
                or dep.provider.config.cooldown_seconds
                or self.settings.cooldown_seconds
            )
            self.cooldowns.trip(dep.provider.name, seconds, exc.message)
        log.warning("falling back from %s: %s", dep.key, exc.message)

    @staticmethod
    def exhausted(resolved: Resolved, capability: str, tried: list[dict[str, Any]]) -> CCCError:
        summary = "; ".join(f"{t['provider']}: {t['error']}" for t in tried)
        detail = f"no provider could serve {capability} for {resolved.name!r}: {summary}"
        extra = {"model": resolved.name, "capability": capability, "tried": tried}
        if tried and all(t["status"] == 429 for t in tried):
            return RateLimited(
                detail, extra={**extra, **openai_error(detail, "rate_limited", "rate_limit_error")}
            )
        return Unavailable(
            detail, extra={**extra, **openai_error(detail, "providers_failed", "api_error")}
        )

    async def _call(
        self,
        resolved: Resolved,
        capability: str,
        call: Callable[[Deployment], Awaitable[T]],
        *,
        key_id: str | None,
        requested: str,
        usage: Callable[[T], dict[str, Any] | None],
    ) -> T:
        """One answer through failover, accounted to the caller's key (``usage`` reads
        the provider's usage from the answer)."""
        tried: list[dict[str, Any]] = []
        for dep in self.candidates(resolved):
            started = time.perf_counter()
            try:
                answer = await call(dep)
            except ProviderError as exc:
                self.failed(dep, exc, tried)
                continue
            elapsed = time.perf_counter() - started
            self.catalog.latency.observe(dep.key, elapsed)
            self.account(
                key_id=key_id,
                requested=requested,
                dep=dep,
                capability=capability,
                usage=usage(answer),
                elapsed=elapsed,
                fallbacks=len(tried),
            )
            return answer
        raise self.exhausted(resolved, capability, tried)

    # -- usage -----------------------------------------------------------------------

    def account(
        self,
        *,
        key_id: str | None,
        requested: str,
        dep: Deployment,
        capability: str,
        usage: dict[str, Any] | None,
        elapsed: float,
        stream: bool = False,
        fallbacks: int = 0,
    ) -> None:
        usage = usage or {}
        # Chat and embeddings say prompt/completion; the audio models say input/output.
        prompt = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
        completion = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
        total = int(usage.get("total_tokens") or prompt + completion)
        config = dep.provider.config
        price = costs.cost(
            dep.model,
            prompt,
            completion,
            (config.input_cost_per_token, config.output_cost_per_token),
        )
        self.accounting.record(
            UsageEvent(
                key_id=key_id,
                model=requested,
                provider=dep.provider.name,
                provider_model=dep.model,
                capability=capability,
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=total,
                cost_usd=price,
                latency_ms=round(elapsed * 1000, 3),
                stream=stream,
                fallbacks=fallbacks,
            )
        )

    # -- the calls ---------------------------------------------------------------------

    async def chat(self, req: ChatCompletionRequest, key_id: str | None) -> ChatCompletion:
        resolved = self.resolve(req.model, "chat")
        self.accounting.check(key_id)
        answer = await self._call(
            resolved,
            "chat",
            lambda d: d.provider.chat(req.upstream_body(d.model)),
            key_id=key_id,
            requested=req.model,
            usage=_usage,
        )
        return ChatCompletion.model_validate(answer)

    async def embeddings(self, req: EmbeddingsRequest, key_id: str | None) -> EmbeddingsResponse:
        resolved = self.resolve(req.model, "embeddings")
        self.accounting.check(key_id)

        def body(dep: Deployment) -> Answer:
            out = req.model_dump(exclude_none=True)
            out["model"] = dep.model
            return out

        answer = await self._call(
            resolved,
            "embeddings",
            lambda d: d.provider.embeddings(body(d)),
            key_id=key_id,
            requested=req.model,
            usage=_usage,
        )
        return EmbeddingsResponse.model_validate(answer)

    async def images(self, req: ImageGenerationRequest, key_id: str | None) -> ImagesResponse:
        if req.model is not None:
            resolved = self.resolve(req.model, "images")
        else:
            able = self.offering("images")
            resolved = Resolved("images", "ordered", [Deployment(p, "") for p in able])
        self.accounting.check(key_id)

        def body(dep: Deployment) -> Answer:
            out = req.model_dump(exclude_none=True)
            if dep.model:
                out["model"] = dep.model
            return out

        answer = await self._call(
            resolved,
            "images",
            lambda d: d.provider.images(body(d)),
            key_id=key_id,
            requested=req.model or "images",
            usage=_usage,
        )
        return ImagesResponse.model_validate(answer)

    async def transcription(
        self, req: TranscriptionRequest, key_id: str | None
    ) -> Transcription | Binary:
        """JSON (json, verbose_json) as a ``Transcription``; text, srt and vtt as the
        provider's text with its media type. Accounted like any call: tokens where the
        provider reports them (gpt-4o-transcribe does; whisper reports seconds, so 0)."""
        self.offering("audio_transcription")
        resolved = self.resolve(req.model, "audio_transcription")
        if req.stream:
            detail = "stream: true is not supported for transcriptions here; send stream: false"
            raise Invalid(
                detail,
                errors=[{"loc": "stream", "msg": "streaming is not supported", "type": "stream"}],
                extra=openai_error(detail, "stream_unsupported"),
            )
        audio = req.file[0]
        try:
            data = base64.b64decode(audio.content_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Invalid(
                f"file is not valid base64: {exc}",
                errors=[{"loc": "file", "msg": "not valid base64", "type": "base64"}],
            ) from None
        upload = Upload(
            audio.filename or "audio", audio.content_type or "application/octet-stream", data
        )
        self.accounting.check(key_id)

        def fields(dep: Deployment) -> Answer:
            out = req.model_dump(exclude_none=True, exclude={"file", "stream"})
            out["model"] = dep.model
            return out

        answer = await self._call(
            resolved,
            "audio_transcription",
            lambda d: d.provider.transcriptions(fields(d), upload),
            key_id=key_id,
            requested=req.model,
            usage=lambda a: None if isinstance(a, Raw) else _usage(a),
        )
        if isinstance(answer, Raw):
            return Binary(data=answer.data, content_type=answer.content_type)
        return Transcription.model_validate(answer)

    async def speech(self, req: SpeechRequest, key_id: str | None) -> Binary:
        """The provider's audio bytes with their media type."""
        self.offering("speech")
        resolved = self.resolve(req.model, "speech")
        if req.stream_format == "sse":
            detail = "stream_format sse is not supported here; send stream_format audio"
            raise Invalid(
                detail,
                errors=[{"loc": "stream_format", "msg": "sse is not supported", "type": "stream"}],
                extra=openai_error(detail, "stream_unsupported"),
            )
        self.accounting.check(key_id)

        def body(dep: Deployment) -> Answer:
            out = req.model_dump(exclude_none=True)
            out["model"] = dep.model
            return out

        answer = await self._call(
            resolved,
            "speech",
            lambda d: d.provider.speech(body(d)),
            key_id=key_id,
            requested=req.model,
            usage=lambda _a: None,  # a call, no tokens: providers price speech per character
        )
        media = answer.content_type
        if not MEDIA_TYPE.match(media) or media == "application/octet-stream":
            media = SPEECH_MEDIA[req.response_format or "mp3"]
        return Binary(data=answer.data, content_type=media)

    def models(self) -> ModelList:
        return ModelList(data=self.catalog.cards())

    def provider_status(self) -> ProviderList:
        out = []
        for provider in self.providers:
            record = self.cooldowns.record(provider.name)
            prefix = f"{provider.name}/"
            out.append(
                ProviderStatus(
                    name=provider.name,
                    kind=provider.kind,
                    capabilities=sorted(provider.capabilities),
                    models=self.catalog.served(provider),
                    cooling_until=record.get("until") if record else None,
                    cooling_reason=record.get("reason") if record else None,
                    latency_ms={
                        key[len(prefix) :]: round(seconds * 1000, 3)
                        for key, seconds in self.catalog.latency.average.items()
                        if key.startswith(prefix)
                    },
                )
            )
        return ProviderList(providers=out)

    async def stream(
        self, req: ChatCompletionRequest, key_id: str | None, nc: NATS, inbox: str
    ) -> StreamSummary:
        """Stream to ``inbox`` (see ``streaming``); fall back only before the first chunk."""
        resolved = self.resolve(req.model, "chat")
        self.accounting.check(key_id)
        wants_usage = bool((req.stream_options or {}).get("include_usage"))
        tried: list[dict[str, Any]] = []
        for dep in self.candidates(resolved):
            body = req.upstream_body(dep.model)
            body["stream"] = True
            asked_usage = dep.provider.kind in ("openai", "ollama") and not wants_usage
            if asked_usage:
                # Ask for the usage chunk to account the call; the caller gets it only if asked.
                body["stream_options"] = {**(req.stream_options or {}), "include_usage": True}
            started = time.perf_counter()
            opened = await self._open_stream(dep, body, asked_usage)
            if isinstance(opened, ProviderError):
                self.failed(dep, opened, tried)
                continue
            first, chunks = opened
            summary = await self._relay(req, dep, first, chunks, nc, inbox, wants_usage)
            elapsed = time.perf_counter() - started
            if summary.outcome == "done":
                self.catalog.latency.observe(dep.key, elapsed)
            self.account(
                key_id=key_id,
                requested=req.model,
                dep=dep,
                capability="chat",
                usage=summary.usage,
                elapsed=elapsed,
                stream=True,
                fallbacks=len(tried),
            )
            return summary
        raise self.exhausted(resolved, "chat", tried)

    async def _open_stream(
        self, dep: Deployment, body: Answer, asked_usage: bool
    ) -> tuple[Answer, AsyncGenerator[Answer, None]] | ProviderError:
        """The first chunk and the rest, or why the stream could not start."""
        for attempt in (1, 2):
            chunks = dep.provider.stream(body)
            try:
                return await anext(chunks), chunks
            except StopAsyncIteration:
                return ProviderError(f"{dep.provider.name} sent an empty stream")
            except ProviderError as exc:
                await chunks.aclose()
                if attempt == 1 and asked_usage and exc.status == 400:
                    # An older server refusing the stream_options we added, not the caller's
                    # request: ask again as the caller did (usage then goes unaccounted).
                    body = {k: v for k, v in body.items() if k != "stream_options"}
                    continue
                return exc
        raise AssertionError("unreachable")

    async def _relay(
        self,
        req: ChatCompletionRequest,
        dep: Deployment,
        first: Answer,
        chunks: AsyncGenerator[Answer, None],
        nc: NATS,
        inbox: str,
        wants_usage: bool,
    ) -> StreamSummary:
        writer = StreamWriter(nc, inbox, str(first.get("id") or f"chatcmpl-{uuid.uuid4().hex}"))
        usage: dict[str, Any] | None = None
        chunk: Answer | None = first
        try:
            while chunk is not None:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if wants_usage or chunk.get("choices") or not chunk.get("usage"):
                    await writer.chunk(chunk)
                chunk = await anext(chunks, None)
        except ProviderError as exc:
            if exc.cool:
                self.cooldowns.trip(
                    dep.provider.name,
                    dep.provider.config.cooldown_seconds or self.settings.cooldown_seconds,
                    exc.message,
                )
            error = Unavailable(
                exc.message,
                extra={
                    "provider": dep.provider.name,
                    "model": dep.model,
                    "frames_sent": writer.frames,
                },
            )
            await writer.error(error)
            log.warning("stream of %s broke: %s", dep.key, exc.message)
            return StreamSummary(
                id=writer.stream_id,
                frames=writer.frames,
                outcome="error",
                provider=dep.provider.name,
                usage=usage,
            )
        finally:
            await chunks.aclose()
        await writer.done()
        return StreamSummary(
            id=writer.stream_id,
            frames=writer.frames,
            outcome="done",
            provider=dep.provider.name,
            usage=usage,
        )


def _usage(answer: Answer) -> dict[str, Any] | None:
    """The ``usage`` object of an OpenAI-shaped JSON answer."""
    usage: dict[str, Any] | None = answer.get("usage")
    return usage
