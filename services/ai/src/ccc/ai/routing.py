"""Which deployments can serve a model name, and in which order to try them.

A name is, in this order: an alias or group from the config file; ``<provider>/<model>``;
or a model id some provider serves (static list or discovery), grouped over every provider
that serves it. Order: ``weighted`` (random, proportional to weights), ``latency`` (fastest
recent average first; untried first) or ``ordered`` (as written). Providers in cooldown are
left out; the router tries the rest one after another, with no retry of the same one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ccc.common.contracts.ai import ModelCard

from .config import GroupConfig
from .providers import Provider


@dataclass(frozen=True)
class Deployment:
    provider: Provider
    model: str
    weight: float = 1.0

    @property
    def key(self) -> str:
        return f"{self.provider.name}/{self.model}"


@dataclass
class Resolved:
    name: str
    routing: str
    deployments: list[Deployment]
    kind: str = "model"
    description: str = ""


@dataclass
class Latency:
    """Exponentially weighted average of successful call latencies per deployment."""

    alpha: float = 0.3
    average: dict[str, float] = field(default_factory=dict)

    def observe(self, key: str, seconds: float) -> None:
        old = self.average.get(key)
        self.average[key] = seconds if old is None else old + self.alpha * (seconds - old)


class Catalog:
    def __init__(self, providers: Iterable[Provider], groups: Iterable[GroupConfig]) -> None:
        self.providers = {p.name: p for p in providers}
        self.groups = {g.name: g for g in groups}
        self.discovered: dict[str, list[str]] = {}
        self._serving_cache: dict[str, list[Provider]] | None = None
        self.latency = Latency()
        self.started = int(time.time())

    # -- what each provider serves ---------------------------------------------------

    def served(self, provider: Provider) -> list[str]:
        models = list(provider.config.models)
        for model in self.discovered.get(provider.name, []):
            if model not in models:
                models.append(model)
        return models

    def set_discovered(self, provider: str, models: list[str]) -> None:
        if self.discovered.get(provider) != models:
            self.discovered[provider] = models
            self._serving_cache = None

    def _serving(self) -> dict[str, list[Provider]]:
        """Model id → providers serving it; rebuilt only when discovery changes something."""
        if self._serving_cache is None:
            out: dict[str, list[Provider]] = {}
            for provider in self.providers.values():
                for model in self.served(provider):
                    out.setdefault(model, []).append(provider)
            self._serving_cache = out
        return self._serving_cache

    # -- resolving a name --------------------------------------------------------------

    def resolve(self, name: str) -> Resolved | None:
        group = self.groups.get(name)
        if group is not None:
            deployments = [
                Deployment(self.providers[d.provider], d.model, d.weight)
                for d in group.deployments
                if d.provider in self.providers
            ]
            kind = "group" if len(deployments) > 1 else "alias"
            return Resolved(name, group.routing, deployments, kind, group.description)
        serving = self._serving()
        if name in serving:
            return Resolved(name, "weighted", [Deployment(p, name) for p in serving[name]])
        prefix, _, model = name.partition("/")
        provider = self.providers.get(prefix)
        if provider is not None and model and model in self.served(provider):
            return Resolved(name, "ordered", [Deployment(provider, model)])
        return None

    def names(self) -> list[str]:
        return sorted({*self.groups, *self._serving()})

    def order(self, resolved: Resolved) -> list[Deployment]:
        deployments = list(resolved.deployments)
        if resolved.routing == "weighted" and len(deployments) > 1:
            # Efraimidis-Spirakis: a random order where the first is drawn in proportion
            # to the weights, then the next among the rest, and so on.
            return sorted(
                deployments, key=lambda d: random.random() ** (1.0 / d.weight), reverse=True
            )
        if resolved.routing == "latency":
            return sorted(deployments, key=lambda d: self.latency.average.get(d.key, 0.0))
        return deployments

    # -- GET /v1/models ------------------------------------------------------------------

    def cards(self) -> list[ModelCard]:
        cards: list[ModelCard] = []
        for name in self.names():
            resolved = self.resolve(name)
            if resolved is None or not resolved.deployments:
                continue
            providers = list(dict.fromkeys(d.provider.name for d in resolved.deployments))
            capabilities = sorted(
                {c for d in resolved.deployments for c in d.provider.capabilities}
            )
            description = resolved.description or next(
                (
                    d.provider.description(d.model)
                    for d in resolved.deployments
                    if d.provider.description(d.model)
                ),
                "",
            )
            cards.append(
                ModelCard(
                    id=name,
                    created=self.started,
                    owned_by=providers[0],
                    providers=providers,
                    capabilities=capabilities,
                    kind=resolved.kind,
                    description=description,
                )
            )
        return cards
