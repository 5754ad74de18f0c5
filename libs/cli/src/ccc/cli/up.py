"""``ccc up``: start the bus (if none answers), every service, then the gateway; stop all on Ctrl-C.

Each service runs as its own process in its own process group, so Ctrl-C reaches the
supervisor only, which then sends SIGTERM to every child (they drain their subscriptions
and in-flight work), waits, and kills what is left: no orphans.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
from rich.console import Console

from ccc.common import localsecrets, natsserver
from ccc.common.settings import Settings

console = Console()
METRICS_BASE_PORT = 9101


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns the file from here
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)


def discover_services(root: Path) -> list[str]:
    """Every ``services/<name>`` with a package that is installed in this environment."""
    names = []
    for path in sorted((root / "services").glob("*/pyproject.toml")):
        name = path.parent.name
        if name == "gateway":
            continue
        module = root / "services" / name / "src" / "ccc" / name / "__main__.py"
        if module.exists():
            names.append(name)
    return names


def ensure_bus(settings: Settings, data_dir: Path, logs: Path) -> subprocess.Popen[bytes] | None:
    """Use the server at CCC_NATS_URL if it answers; otherwise start one there."""
    url = urlparse(settings.nats_url)
    host, port = url.hostname or "127.0.0.1", url.port or 4222
    if natsserver.port_open(host, port):
        console.print(f"[green]✓[/] NATS answers at {settings.nats_url}")
        return None
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(
            f"NATS at {settings.nats_url} does not answer, and it is not local to start"
        )
    console.print(f"[yellow]…[/] no NATS at {settings.nats_url}: starting nats-server -js")
    proc = natsserver.start(port, data_dir / "nats", logs / "nats.log")
    console.print(f"[green]✓[/] nats-server started (store {data_dir / 'nats'})")
    return proc


def wait_ready(url: str, children: list[Child], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    with console.status("waiting for the gateway to be ready"):
        while time.monotonic() < deadline:
            if any(not c.alive() for c in children):
                return False
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    return False


def up(root: Path, only: list[str] | None = None) -> int:
    settings = Settings()
    data_dir = settings.data_dir.resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    nats_proc = ensure_bus(settings, data_dir, logs)

    admin_key = os.environ.get("CCC_ADMIN_KEY")
    if not admin_key:
        admin_key, created = localsecrets.admin_key(data_dir)
        if created:
            console.print(
                f"[green]✓[/] generated an admin key in {data_dir / 'admin.key'} (mode 600)"
            )
    port = int(os.environ.get("CCC_GATEWAY_PORT", "8080"))
    base_env = {**os.environ, "CCC_DATA_DIR": str(data_dir), "CCC_NATS_URL": settings.nats_url}

    children: list[Child] = []
    for i, name in enumerate(only or discover_services(root)):
        env = {
            **base_env,
            "CCC_METRICS_PORT": os.environ.get(
                f"CCC_{name.upper()}_METRICS_PORT", str(METRICS_BASE_PORT + i)
            ),
        }
        children.append(
            Child(name, [sys.executable, "-m", f"ccc.{name}"], env, logs / f"{name}.log")
        )
    gateway_env = {**base_env, "CCC_ADMIN_KEY": admin_key, "CCC_GATEWAY_PORT": str(port)}
    children.append(
        Child("gateway", [sys.executable, "-m", "ccc.gateway"], gateway_env, logs / "gateway.log")
    )

    stopping = False

    def request_stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    for child in children:
        child.start()
        console.print(
            f"[green]✓[/] started {child.name} (pid {child.proc.pid if child.proc else '?'}, "
            f"log {child.log})"
        )

    host = os.environ.get("CCC_GATEWAY_HOST", "127.0.0.1")
    url = f"http://{host}:{port}"
    if not wait_ready(url, children):
        console.print("[red]✗ the fleet did not come up; see the logs in[/]", logs)
        for child in children:
            if not child.alive():
                console.print(
                    f"  {child.name} exited with {child.proc.returncode if child.proc else '?'}"
                )
        _stop_all(children, nats_proc, settings.drain_timeout)
        return 1

    console.rule("[bold]Consciousness Control Center is up")
    console.print(f"  gateway     {url}")
    console.print(f"  API docs    {url}/docs")
    console.print(f"  catalog     {url}/v1/catalog")
    console.print(f"  metrics     {url}/metrics")
    console.print(f"  NATS        {settings.nats_url}")
    console.print(f"  admin key   [bold]{admin_key}[/]")
    console.print(f"  logs        {logs}")
    console.print(
        f"  try         curl -H 'Authorization: Bearer {admin_key}' {url}/v1/catalog",
        soft_wrap=True,
    )
    console.print("  stop        Ctrl-C (services drain in-flight work, then exit)")
    console.rule()

    while not stopping:
        time.sleep(0.5)
        for child in children:
            if not stopping and not child.alive():
                code = child.proc.returncode if child.proc else None
                if child.restarts >= 5:
                    console.print(f"[red]✗ {child.name} keeps exiting ({code}); giving up on it[/]")
                    continue
                child.restarts += 1
                console.print(
                    f"[yellow]! {child.name} exited with {code}; restarting ({child.restarts}/5)[/]"
                )
                child.start()
    console.print("\nstopping: draining services …")
    _stop_all(children, nats_proc, settings.drain_timeout)
    console.print("[green]✓[/] stopped")
    return 0


def _stop_all(
    children: list[Child], nats_proc: subprocess.Popen[bytes] | None, timeout: float
) -> None:
    # Gateway first, so no new HTTP work arrives while services drain.
    for child in reversed(children):
        child.terminate()
        if child.name == "gateway" and child.proc is not None:
            try:
                child.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
    deadline = time.monotonic() + timeout
    for child in children:
        while child.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        child.kill()
    if nats_proc is not None and nats_proc.poll() is None:
        nats_proc.terminate()
        try:
            nats_proc.wait(5)
        except subprocess.TimeoutExpired:
            nats_proc.kill()
