"""Settings of the agents service: ``CCC_AGENTS_*`` beside the common ``CCC_*``."""

from __future__ import annotations

from pydantic import Field

from ccc.common.settings import Settings

DANGEROUS = ["*.apply", "*.transfer", "*.drop", "*.delete", "*.destroy"]


class AgentsSettings(Settings):
    agents_dangerous: list[str] = Field(default_factory=lambda: list(DANGEROUS))
    """Globs over ``<domain>.<op>``: a tool call matching one pauses the run until a human
    approves or rejects it (``CCC_AGENTS_DANGEROUS='["*.apply","db.*"]'``)."""
    agents_catalog_ttl: float = 5.0
    """Seconds the live tool catalog (NATS micro discovery) is reused before re-reading."""
    agents_tool_timeout: float = 60.0
    """Bus deadline of one tool call; a tool answering 202 is then followed to its end."""
    agents_operation_wait: float = 600.0
    """Longest wait for a tool's operation, a delegated run or a plan's workflow run."""
    agents_poll_interval: float = 0.25
    """How often a waiting run looks at an approval, an operation or a workflow run."""
    agents_model_timeout: float = 300.0
    agents_run_retention_days: float = 30.0
    """Finished runs (and their steps) are deleted after this many days; 0 keeps them."""
    agents_max_depth: int = 4
    """How deep delegation may nest (a supervisor's specialist's specialist...)."""
    agents_max_result_chars: int = 20_000
    """A tool result longer than this is cut before it is fed to the model."""
