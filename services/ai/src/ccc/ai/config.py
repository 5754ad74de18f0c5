"""Where models come from: settings (``CCC_AI_*``) and the provider file (``CCC_AI_CONFIG``).

The file is YAML (JSON is YAML too)::

    providers:
      - name: openai
        kind: openai                 # openai | ollama | litellm | local-embeddings | local-chat
        base_url: https://api.openai.com/v1
        api_key_env: OPENAI_API_KEY
        models: [gpt-4o-mini]        # served statically; discover: true polls /v1/models
      - name: lab
        kind: ollama
        base_url: http://127.0.0.1:11434
      - name: claude
        kind: litellm                # any litellm model string, litellm translates
        models: [anthropic/claude-3-5-haiku-latest]
        api_key_env: ANTHROPIC_API_KEY
    models:                          # aliases and groups
      - name: fast
        routing: weighted            # weighted | latency | ordered
        deployments:
          - {provider: openai, model: gpt-4o-mini, weight: 3}
          - {provider: lab, model: llama3.2, weight: 1}
    budgets:
      <api key id>: {max_usd: 5.0, max_tokens: 1000000}

With no file, the built-in local providers (ONNX embeddings, and the llama.cpp chat model
when its optional extra is installed) serve everything, offline.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ccc.common.contracts.ai import Budget

ProviderKind = Literal["openai", "ollama", "litellm", "local-embeddings", "local-chat"]
NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class AISettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CCC_AI_", extra="ignore")

    config: Path | None = None
    """The provider file; unset means the built-in local providers only."""
    cooldown_seconds: float = 5.0
    """How long a provider that failed (5xx, timeout, refused) is skipped by every instance;
    a 429's Retry-After wins. 5 s is litellm's default: long enough to stop hammering a
    failing provider, short enough that a lone provider's blip is not a long outage."""
    discovery_interval: float = 30.0
    """Seconds between polls of each discovering provider's model list."""
    provider_timeout: float = 60.0
    """Seconds a provider may take to answer (to the first chunk for a stream)."""
    connect_timeout: float = 2.0
    stream_idle_timeout: float = 30.0
    """Seconds without a chunk before a stream counts as cut."""
    request_timeout: float = 300.0
    """The bus deadline of ai.chat, long enough for a whole stream."""
    local_embeddings: bool = True
    local_chat: bool = True
    """Serve the llama.cpp chat model when the ``local-chat`` extra is installed."""
    local_chat_threads: int = 2
    ollama_url: str | None = None
    """An Ollama server to add as provider ``ollama`` (its models discovered), e.g.
    ``http://127.0.0.1:11434``."""
    openai_base_url: str | None = None
    """An OpenAI-compatible server to add as provider ``openai`` (models discovered); its
    key from ``CCC_AI_OPENAI_API_KEY`` or ``OPENAI_API_KEY``."""
    openai_api_key: SecretStr | None = None


class ProviderConfig(BaseModel):
    name: str
    kind: ProviderKind
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    models: list[str] = Field(default_factory=list)
    capabilities: (
        list[Literal["chat", "embeddings", "images", "audio_transcription", "speech"]] | None
    ) = None
    """What the provider offers; default chat and embeddings (images, audio_transcription
    and speech must be listed). Audio is served by the openai and ollama kinds."""
    discover: bool | None = None
    """Poll the provider's model list (default: yes for openai and ollama kinds)."""
    timeout: float | None = None
    cooldown_seconds: float | None = None
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    """Prices for models litellm's cost map does not know (local servers: leave unset, 0)."""
    extra: dict[str, object] = Field(default_factory=dict)
    """Extra keyword arguments for litellm (litellm kind only)."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("provider names are letters, digits, '-' and '_'")
        return value

    @model_validator(mode="after")
    def _needs_url(self) -> ProviderConfig:
        if self.kind in ("openai", "ollama") and not self.base_url:
            raise ValueError(f"provider {self.name}: kind {self.kind} needs base_url")
        return self

    @property
    def discovers(self) -> bool:
        return self.discover if self.discover is not None else self.kind in ("openai", "ollama")

    def secret(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return None


class DeploymentConfig(BaseModel):
    provider: str
    model: str
    weight: float = Field(default=1.0, gt=0)


class GroupConfig(BaseModel):
    name: str = Field(min_length=1)
    routing: Literal["weighted", "latency", "ordered"] = "weighted"
    deployments: list[DeploymentConfig] = Field(min_length=1)
    description: str = ""


class AIConfig(BaseModel):
    providers: list[ProviderConfig] = Field(default_factory=list)
    models: list[GroupConfig] = Field(default_factory=list)
    budgets: dict[str, Budget] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> AIConfig:
        names = [p.name for p in self.providers]
        if len(names) != len(set(names)):
            raise ValueError("provider names must be unique")
        for group in self.models:
            for dep in group.deployments:
                if dep.provider not in names and dep.provider not in BUILTIN_PROVIDERS:
                    raise ValueError(f"model {group.name}: unknown provider {dep.provider!r}")
        return self


LOCAL_EMBEDDINGS = "local-embeddings"
LOCAL_CHAT = "local-chat"
BUILTIN_PROVIDERS = (LOCAL_EMBEDDINGS, LOCAL_CHAT)


def load_config(path: Path | None) -> AIConfig:
    if path is None:
        return AIConfig()
    raw = yaml.safe_load(path.read_text()) or {}
    return AIConfig.model_validate(raw)


def with_env_providers(config: AIConfig, settings: AISettings) -> AIConfig:
    """The file's providers plus those the environment names (unless the file has them)."""
    names = {p.name for p in config.providers}
    extra: list[ProviderConfig] = []
    if settings.ollama_url and "ollama" not in names:
        extra.append(ProviderConfig(name="ollama", kind="ollama", base_url=settings.ollama_url))
    if settings.openai_base_url and "openai" not in names:
        extra.append(
            ProviderConfig(
                name="openai",
                kind="openai",
                base_url=settings.openai_base_url,
                api_key=settings.openai_api_key,
                api_key_env=None if settings.openai_api_key else "OPENAI_API_KEY",
            )
        )
    if not extra:
        return config
    return config.model_copy(update={"providers": [*config.providers, *extra]})
