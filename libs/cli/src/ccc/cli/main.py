"""Entry point of ``ccc``; argparse keeps the CLI free of another dependency."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import buscommands, keys
from .up import up


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ccc", description="Consciousness Control Center")
    sub = p.add_subparsers(dest="command", required=True)
    gateway_default = os.environ.get(
        "CCC_GATEWAY_URL", f"http://127.0.0.1:{os.environ.get('CCC_GATEWAY_PORT', '8080')}"
    )

    s = sub.add_parser("up", help="start the bus (if needed), every service and the gateway")
    s.add_argument(
        "--root", type=Path, default=Path.cwd(), help="repository root (holds services/)"
    )
    s.add_argument("--only", nargs="*", help="start only these services (plus the gateway)")

    s = sub.add_parser("services", help="the live catalog from discovery")
    s.add_argument("-v", "--verbose", action="store_true", help="list every endpoint")

    s = sub.add_parser("call", help="request-reply to <domain>.<op> with a JSON body")
    s.add_argument("target")
    s.add_argument("body", nargs="?", default="{}")
    s.add_argument("--timeout", type=float, default=30.0)

    s = sub.add_parser(
        "publish", help="publish JSON to a subject (durably under ccc.evt./ccc.cmd.)"
    )
    s.add_argument("subject")
    s.add_argument("body", nargs="?", default="null")
    s.add_argument("--msg-id", help="Nats-Msg-Id: a second publish with the same id has no effect")

    s = sub.add_parser("events", help="tail the event stream")
    s.add_argument("subject", nargs="?", default="ccc.evt.>")
    s.add_argument("--since", default="now", help="now | all | last")

    s = sub.add_parser("watch", help="follow an operation with a progress bar")
    s.add_argument("operation_id")

    w = sub.add_parser("workflows", help="workflow runs")
    wsub = w.add_subparsers(dest="workflows_command", required=True)
    wsub.add_parser("watch", help="a live progress bar of a run").add_argument("run_id")

    a = sub.add_parser("agents", help="agent runs")
    asub = a.add_subparsers(dest="agents_command", required=True)
    asub.add_parser("show", help="a run's steps: messages, tool calls, tokens").add_argument(
        "run_id"
    )

    k = sub.add_parser("keys", help="API keys (through the gateway, as admin)")
    k.add_argument("--gateway", default=gateway_default)
    ksub = k.add_subparsers(dest="keys_command", required=True)
    c = ksub.add_parser("create")
    c.add_argument(
        "--role", action="append", required=True, choices=["reader", "operator", "admin"]
    )
    c.add_argument("--name", default="cli")
    c.add_argument("--rate", type=float, help="requests per second for this key")
    ksub.add_parser("list")
    r = ksub.add_parser("revoke")
    r.add_argument("key_id")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    code: int
    match args.command:
        case "up":
            code = up(args.root, args.only)
        case "services":
            code = buscommands.run(buscommands.services(args.verbose))
        case "call":
            code = buscommands.run(buscommands.call(args.target, args.body, args.timeout))
        case "publish":
            code = buscommands.run(buscommands.publish(args.subject, args.body, args.msg_id))
        case "events":
            code = buscommands.run(buscommands.events(args.subject, args.since))
        case "watch":
            code = buscommands.run(buscommands.watch(args.operation_id))
        case "workflows":
            code = _workflows_watch(args.run_id)
        case "agents":
            code = _agents_show(args.run_id)
        case "keys":
            if args.keys_command == "create":
                code = keys.create(args.gateway, args.name, args.role, args.rate)
            elif args.keys_command == "list":
                code = keys.list_keys(args.gateway)
            else:
                code = keys.revoke(args.gateway, args.key_id)
        case _:
            code = 2
    sys.exit(code)


def _workflows_watch(run_id: str) -> int:
    """Drawn by the workflow package, which knows its run history; imported only here
    so the rest of the CLI does not need it installed."""
    try:
        from ccc.workflow.watch import watch
    except ImportError:
        print("ccc workflows needs the ccc-workflow package (uv sync --all-packages)")
        return 2
    from ccc.common.errors import CCCError

    try:
        status = watch(run_id)
    except CCCError as exc:
        print(f"{exc.status} {exc.detail}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0 if status == "succeeded" else 1


def _agents_show(run_id: str) -> int:
    """Drawn by the agents package; imported only here, like workflows."""
    try:
        from ccc.agents.show import show
    except ImportError:
        print("ccc agents needs the ccc-agents package (uv sync --all-packages)")
        return 2
    from ccc.common.errors import CCCError

    try:
        status = show(run_id)
    except CCCError as exc:
        print(f"{exc.status} {exc.detail}")
        return 1
    return 0 if status == "completed" else 1


if __name__ == "__main__":
    main()
