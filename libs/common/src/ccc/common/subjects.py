"""Names on the bus: subjects, streams, buckets, headers and default HTTP routes.

One module owns the naming scheme so no service or gateway spells a subject by hand.
"""

from __future__ import annotations

import re

TOKEN = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED_DOMAINS = frozenset({"evt", "cmd"})

COMMANDS_STREAM = "CCC_COMMANDS"
EVENTS_STREAM = "CCC_EVENTS"

# Headers the runtime understands, beside W3C traceparent/tracestate.
CALLER_HEADER = "Ccc-Caller"
ROLES_HEADER = "Ccc-Roles"
PARAMS_HEADER = "Ccc-Params"
STATUS_HEADER = "Ccc-Status"
CORRELATION_HEADER = "Ccc-Correlation-Id"
MSG_ID_HEADER = "Nats-Msg-Id"


def check_domain(domain: str) -> str:
    if not TOKEN.match(domain) or domain in RESERVED_DOMAINS:
        raise ValueError(f"domain {domain!r} must be a lower_snake token and not evt/cmd")
    return domain


def check_op(op: str) -> str:
    if not all(TOKEN.match(part) for part in op.split(".")):
        raise ValueError(f"operation {op!r} must be dotted lower_snake tokens")
    return op


def request_subject(domain: str, op: str) -> str:
    return f"ccc.{domain}.{op}"


def command_subject(domain: str, op: str) -> str:
    return f"ccc.cmd.{domain}.{op}"


def event_subject(domain: str, event: str) -> str:
    return f"ccc.evt.{domain}.{event}"


def state_bucket(domain: str) -> str:
    return f"ccc_{domain}"


def default_route(domain: str, op: str) -> tuple[str, str]:
    """``cluster.create`` of ``talos_k8s`` → ``POST /v1/orchestrate/talos_k8s/cluster/create``."""
    return "POST", f"/v1/orchestrate/{domain}/{op.replace('.', '/')}"


def parse_target(target: str) -> tuple[str, str]:
    """``rag.search`` → (``rag``, ``search``); ``k.node.add`` → (``k``, ``node.add``)."""
    domain, _, op = target.partition(".")
    if not op:
        raise ValueError(f"target {target!r} must look like <domain>.<op>")
    return check_domain(domain), check_op(op)
