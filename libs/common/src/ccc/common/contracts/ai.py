"""The OpenAI shapes the ai service speaks, as pydantic models.

Shared here because RAG and agents call these endpoints through the bus with typed
requests, and services never import each other. Every model allows extra fields: a
request field we do not name (``tools``, ``response_format``, ``seed``, ...) is passed to
the provider untouched, and a provider's extra answer fields reach the caller.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"


def openai_error(message: str, code: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    """OpenAI's ``error`` object, added beside our problem fields so OpenAI clients show it."""
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``: any OpenAI chat parameter is accepted and passed on."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="A model id, alias or group from GET /v1/models")
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None

    def upstream_body(self, model: str) -> dict[str, Any]:
        """The body for a provider: the caller's fields with the provider's model name."""
        body = self.model_dump(exclude_none=True)
        body["model"] = model
        return body


class ChatCompletion(BaseModel):
    """A ``chat.completion`` object, as the provider answered it."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class EmbeddingsRequest(BaseModel):
    """``POST /v1/embeddings``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(default=DEFAULT_EMBEDDING_MODEL, min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, gt=0)
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: dict[str, int] = Field(default_factory=lambda: {"prompt_tokens": 0, "total_tokens": 0})


class ImageGenerationRequest(BaseModel):
    """``POST /v1/images/generations``: passed to a provider that offers images."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1)
    model: str | None = Field(
        default=None, description="Omitted: the first provider that offers images, its default"
    )
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None


class ImagesResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    created: int
    data: list[dict[str, Any]]


class ModelsRequest(BaseModel):
    """``GET /v1/models`` takes no parameters."""

    model_config = ConfigDict(extra="ignore")


class ModelCard(BaseModel):
    """An OpenAI ``model`` object plus where it is served and what it can do."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    providers: list[str] = Field(description="Providers that serve this model, in routing order")
    capabilities: list[str] = Field(description="chat, embeddings")
    kind: Literal["model", "alias", "group"] = "model"
    description: str = ""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ProvidersRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ProviderStatus(BaseModel):
    """A provider as this instance sees it: what it serves, and whether it is cooling down."""

    name: str
    kind: str
    capabilities: list[str]
    models: list[str]
    cooling_until: float | None = Field(None, description="Epoch seconds; null when usable")
    cooling_reason: str | None = None
    latency_ms: dict[str, float] = Field(
        default_factory=dict, description="Recent average per model, successful calls"
    )


class ProviderList(BaseModel):
    providers: list[ProviderStatus]


class Budget(BaseModel):
    """A spending limit per API key; None means no limit of that kind."""

    max_usd: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)


class BudgetSet(Budget):
    key_id: str = Field(min_length=1)


class UsageGet(BaseModel):
    key_id: str = Field(min_length=1)


class Usage(BaseModel):
    """What one API key has spent, and its budget."""

    key_id: str
    usd: float = 0.0
    tokens: int = 0
    requests: int = 0
    budget: Budget | None = None


class UsageEvent(BaseModel):
    """``ccc.evt.ai.usage``: one request's tokens and cost, published off the request path."""

    key_id: str | None
    model: str
    provider: str
    provider_model: str
    capability: Literal["chat", "embeddings", "images", "audio_transcription", "speech"]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    latency_ms: float
    stream: bool = False
    fallbacks: int = 0


class StreamSummary(BaseModel):
    """The reply to a streamed request, sent after its final frame."""

    object: Literal["ccc.stream.summary"] = "ccc.stream.summary"
    id: str
    frames: int = Field(description="Frames published to the inbox, the final one included")
    outcome: Literal["done", "error"]
    provider: str | None = None
    usage: dict[str, Any] | None = None


class UploadedFile(BaseModel):
    """A file of a multipart request, as the gateway converts it to JSON."""

    filename: str | None = None
    content_type: str | None = None
    content_base64: str


class TranscriptionRequest(BaseModel):
    """``POST /v1/audio/transcriptions`` (multipart at the edge; the gateway sends JSON):
    passed to a provider that lists ``audio_transcription``. Other form fields
    (``timestamp_granularities[]``, ``chunking_strategy``, ...) are passed on."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    file: list[UploadedFile] = Field(min_length=1, max_length=1, description="The audio file")
    language: str | None = None
    prompt: str | None = None
    response_format: (
        Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"] | None
    ) = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    stream: bool | None = None


class Transcription(BaseModel):
    """A transcription as the provider answered it (``json`` and ``verbose_json``)."""

    model_config = ConfigDict(extra="allow")

    text: str
    usage: dict[str, Any] | None = None


class SpeechRequest(BaseModel):
    """``POST /v1/audio/speech``: passed to a provider that lists ``speech``; the answer is
    the audio bytes."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str = Field(min_length=1, max_length=4096)
    voice: str | dict[str, Any]
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    instructions: str | None = None
    stream_format: Literal["audio", "sse"] | None = None
