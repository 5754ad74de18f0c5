"""The ai service's endpoints: OpenAI's paths on the bus, plus budgets and usage.

``ccc.ai.chat`` is ``POST /v1/chat/completions``, ``ccc.ai.embeddings`` is
``POST /v1/embeddings`` and ``ccc.ai.models`` is ``GET /v1/models``: the official openai
client pointed at the gateway works unchanged. ``stream: true`` streams over the bus to
the inbox named in ``Ccc-Stream-Inbox`` (see ``streaming``).
"""

from __future__ import annotations

from ccc.common import Binary, Context, Forbidden, Invalid, Service, Unavailable
from ccc.common.contracts.ai import (
    Budget,
    BudgetSet,
    ChatCompletion,
    ChatCompletionRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ImageGenerationRequest,
    ImagesResponse,
    ModelList,
    ModelsRequest,
    ProviderList,
    ProvidersRequest,
    SpeechRequest,
    StreamSummary,
    Transcription,
    TranscriptionRequest,
    Usage,
    UsageGet,
    openai_error,
)
from ccc.common.streaming import INBOX_HEADER

from .config import AIConfig, AISettings, load_config, with_env_providers
from .runtime import ModelGateway


class AIService(Service):
    """The ai service; ``ai`` is this instance's running model gateway."""

    ai: ModelGateway | None = None


def build_service(config: AIConfig | None = None, settings: AISettings | None = None) -> AIService:
    """A new ai service; ``config`` defaults to the file at ``CCC_AI_CONFIG`` (read at start)."""
    ai_settings = settings or AISettings()
    service = AIService(
        "ai",
        description="OpenAI-compatible model gateway: chat, embeddings and models over any "
        "litellm provider, OpenAI-compatible server or Ollama, with local CPU models by default",
    )

    def gateway() -> ModelGateway:
        if service.ai is None:
            raise Unavailable("the ai service is starting")
        return service.ai

    @service.on_startup
    async def start(svc: Service) -> None:
        gw = ModelGateway(
            config=with_env_providers(
                config if config is not None else load_config(ai_settings.config), ai_settings
            ),
            settings=ai_settings,
            state=svc.state,
            bus=svc.bus,
            instance=svc.instance,
            data_dir=svc.settings.data_dir,
        )
        await gw.start()
        service.ai = gw

    @service.on_shutdown
    async def stop(svc: Service) -> None:
        gw, service.ai = service.ai, None
        if gw is not None:
            await gw.stop()

    @service.endpoint(
        "chat",
        http="POST /v1/chat/completions",
        roles=("reader",),
        timeout=ai_settings.request_timeout,
        streams=True,
    )
    async def chat(req: ChatCompletionRequest, ctx: Context) -> ChatCompletion | StreamSummary:
        """Create a chat completion (OpenAI-compatible; tools and any other parameter are
        passed to the provider). Falls back to the next provider of the model at once on
        a provider failure. ``stream: true`` needs the ``Ccc-Stream-Inbox`` header (bus)."""
        if req.stream:
            inbox = ctx.headers.get(INBOX_HEADER)
            if not inbox:
                detail = (
                    "stream: true needs the Ccc-Stream-Inbox header naming the caller's inbox; "
                    "over HTTP, the gateway does not relay streams yet: send stream: false"
                )
                raise Invalid(
                    detail,
                    errors=[
                        {"loc": "stream", "msg": "streaming needs a stream inbox", "type": "stream"}
                    ],
                    extra=openai_error(detail, "stream_unsupported"),
                )
            return await gateway().stream(req, ctx.caller.key_id, ctx.bus.nc, inbox)
        return await gateway().chat(req, ctx.caller.key_id)

    @service.endpoint("embeddings", http="POST /v1/embeddings", roles=("reader",), timeout=120.0)
    async def embeddings(req: EmbeddingsRequest, ctx: Context) -> EmbeddingsResponse:
        """Create embeddings (OpenAI-compatible). The default model, all-minilm-l6-v2, runs
        on this machine's CPU (384 dimensions)."""
        return await gateway().embeddings(req, ctx.caller.key_id)

    @service.endpoint(
        "images", http="POST /v1/images/generations", roles=("reader",), timeout=180.0
    )
    async def images(req: ImageGenerationRequest, ctx: Context) -> ImagesResponse:
        """Generate images (OpenAI-compatible) with a provider that offers them; with none
        configured, a 400 problem names the capability and the providers."""
        return await gateway().images(req, ctx.caller.key_id)

    @service.endpoint(
        "audio.transcriptions",
        http="POST /v1/audio/transcriptions",
        roles=("reader",),
        timeout=300.0,
    )
    async def transcriptions(req: TranscriptionRequest, ctx: Context) -> Transcription | Binary:
        """Transcribe audio (OpenAI-compatible; multipart at the gateway) with a provider
        that lists ``audio_transcription``: JSON for json/verbose_json, text for text, srt
        and vtt. With none configured, a 400 problem names the capability and providers."""
        return await gateway().transcription(req, ctx.caller.key_id)

    @service.endpoint(
        "audio.speech", http="POST /v1/audio/speech", roles=("reader",), timeout=180.0
    )
    async def speech(req: SpeechRequest, ctx: Context) -> Binary:
        """Text to speech (OpenAI-compatible) with a provider that lists ``speech``: the
        answer is the audio bytes (audio/mpeg for mp3). With none configured, a 400 problem
        names the capability and providers."""
        return await gateway().speech(req, ctx.caller.key_id)

    @service.endpoint("models", http="GET /v1/models", roles=("reader",))
    async def models(req: ModelsRequest, ctx: Context) -> ModelList:
        """List the models served now: aliases and groups from the config, and every model
        a provider serves (static or discovered), with the providers that serve each."""
        return gateway().models()

    @service.endpoint("providers", http="GET /v1/ai/providers", roles=("operator",))
    async def providers(req: ProvidersRequest, ctx: Context) -> ProviderList:
        """Providers as this instance sees them: models served, cooldown (shared by every
        instance), recent latency."""
        return gateway().provider_status()

    @service.endpoint("budget.set", http="PUT /v1/ai/budgets/{key_id}", roles=("admin",))
    async def budget_set(req: BudgetSet, ctx: Context) -> Usage:
        """Set an API key's budget (USD and/or tokens); calls answer 429 once it is spent."""
        gw = gateway()
        await gw.accounting.set_budget(
            req.key_id, Budget(max_usd=req.max_usd, max_tokens=req.max_tokens)
        )
        return await gw.accounting.usage(req.key_id)

    @service.endpoint("usage.get", http="GET /v1/ai/usage/{key_id}", roles=("reader",))
    async def usage_get(req: UsageGet, ctx: Context) -> Usage:
        """What an API key has spent and its budget; a key may read its own, an operator any."""
        caller = ctx.caller
        if caller.key_id != req.key_id and not caller.may(frozenset({"operator"})):
            raise Forbidden(f"key {caller.key_id} may read only its own usage")
        return await gateway().accounting.usage(req.key_id)

    return service


service = build_service()
