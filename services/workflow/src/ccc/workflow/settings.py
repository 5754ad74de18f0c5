"""Settings of the workflow service: ``CCC_WORKFLOW_*`` beside the common ``CCC_*``."""

from __future__ import annotations

from pydantic import Field

from ccc.common.settings import Settings


class WorkflowSettings(Settings):
    workflow_lease: float = Field(15.0, gt=0.2)
    """Seconds a run's owner may go silent before another instance takes the run over."""
    workflow_call_timeout: float = 30.0
    """Timeout of a ``call`` step that sets none itself."""
    workflow_max_steps_in_flight: int = 512
    """Step attempts one instance runs at once (across all its runs)."""
    workflow_max_items: int = 2_000
    """Largest ``for_each`` list (every item has its state in the run's record)."""
    workflow_max_record_bytes: int = 900_000
    """A run record must fit one NATS message (1 MB by default): past this, the run fails."""
    workflow_history_max_age_days: float = 30.0
    workflow_history_max_bytes: int = 1 << 30
    workflow_progress_interval: float = 0.5
    """At most one ``run.progress`` event per run per this many seconds."""
    workflow_run_retention_days: float = 30.0
    """Finished runs older than this are deleted from KV (their history ages out of the
    stream by ``workflow_history_max_age_days``); 0 keeps them for ever."""
    workflow_janitor_interval: float = 3600.0
    workflow_webhook_attempts: int = 5
    workflow_cron_poll: float = 1.0
    """Longest sleep of the cron scheduler between looks at the definitions."""
