"""The `ccc` command as a user runs it: `ccc up` (what `make run` calls) and the bus verbs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fleet_service import build

from ccc.common.natsserver import free_port
from ccc.common.testing import running

ROOT = Path(__file__).resolve().parents[2]
CCC = str(Path(sys.executable).parent / "ccc")


async def ccc(*args: str, nats_url: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI without blocking the loop the in-process test service runs on."""
    proc = await asyncio.create_subprocess_exec(
        CCC,
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "CCC_NATS_URL": nats_url, "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


async def test_call_services_publish(nats_url, service_name):
    async with running(build(service_name), nats_url):
        out = await ccc(
            "call", f"{service_name}.echo", '{"text": "hi", "repeat": 2}', nats_url=nats_url
        )
        assert out.returncode == 0, out.stderr
        assert '"hihi"' in out.stdout

        out = await ccc("call", f"{service_name}.echo", '{"text": 5}', nats_url=nats_url)
        assert out.returncode == 1 and "422" in out.stdout

        out = await ccc("services", "-v", nats_url=nats_url)
        assert out.returncode == 0 and service_name in out.stdout
        assert f"POST /v1/orchestrate/{service_name}/echo" in out.stdout

        out = await ccc("publish", f"ccc.evt.{service_name}.note", '{"a": 1}', nats_url=nats_url)
        assert out.returncode == 0 and "stream sequence" in out.stdout

        out = await ccc("call", f"{service_name}.job", '{"steps": 3}', nats_url=nats_url)
        assert out.returncode == 0, out.stdout + out.stderr
        assert '"succeeded"' in out.stdout


def test_ccc_up_starts_the_fleet_and_stops_it_cleanly(tmp_path):
    """`make run` in miniature: no bus at the URL, so `ccc up` starts one; every service
    under services/ starts; Ctrl-C leaves no process behind."""
    nats_port, gateway_port = free_port(), free_port()
    env = {
        **os.environ,
        "CCC_NATS_URL": f"nats://127.0.0.1:{nats_port}",
        "CCC_GATEWAY_PORT": str(gateway_port),
        "CCC_DATA_DIR": str(tmp_path / ".ccc"),
        "COLUMNS": "200",
    }
    env.pop("CCC_ADMIN_KEY", None)
    for name in os.listdir(ROOT / "services"):  # keep metrics ports off the machine's 9101+
        env[f"CCC_{name.upper()}_METRICS_PORT"] = str(free_port())
    proc = subprocess.Popen(
        [CCC, "up", "--root", str(ROOT)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "stop " in line and "Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "is up" in text, text
        key_file = tmp_path / ".ccc" / "admin.key"
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        key = key_file.read_text().strip()
        assert key in text, "the admin key is printed"
        r = httpx.get(f"http://127.0.0.1:{gateway_port}/readyz", timeout=5)
        assert r.status_code == 200
        catalog = httpx.get(
            f"http://127.0.0.1:{gateway_port}/v1/catalog",
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        ).json()
        started = {s["name"] for s in catalog["services"]}
        expected = {
            p.name
            for p in (ROOT / "services").iterdir()
            if (p / "src" / "ccc" / p.name / "__main__.py").exists()
        } - {"gateway"}
        for _ in range(50):
            if expected <= started:
                break
            time.sleep(0.2)
            catalog = httpx.get(
                f"http://127.0.0.1:{gateway_port}/v1/catalog",
                headers={"Authorization": f"Bearer {key}"},
                timeout=5,
            ).json()
            started = {s["name"] for s in catalog["services"]}
        assert expected <= started, (expected, started)
        children = _descendants(proc.pid)
        assert children, "services run as child processes"
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert "stopped" in rest
    time.sleep(0.5)
    alive = [pid for pid in children if _alive(pid)]
    assert alive == [], f"orphans left: {alive}"


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    kids = [int(p) for p in out.stdout.split()]
    for kid in list(kids):
        kids += _descendants(kid)
    return kids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"
