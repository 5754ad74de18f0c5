"""The client binaries a backup needs (pg_dump, mariadb-dump, redis-cli, ...).

A missing binary is a 503 that names it, not a crash: the service image or the
machine lacks a package, which an operator can fix without touching CCC.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from ccc.common import Unavailable

from .settings import settings


def binary(name: str) -> str:
    """Absolute path of a client binary, or 503 naming it."""
    if settings.tools_dir is not None:
        candidate = Path(settings.tools_dir) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    else:
        found = shutil.which(name)
        if found:
            return found
    raise Unavailable(
        f"the {name!r} binary is not installed on this service's machine; "
        f"install it (Debian: postgresql-client, mariadb-client or redis-tools) or set "
        f"CCC_TOOLS_DIR"
    )


PG_LIB = Path("/usr/lib/postgresql")
"""Debian's layout for PostgreSQL clients installed side by side: <major>/bin/pg_dump."""


def pg_binary(name: str, server_major: int) -> str:
    """pg_dump or pg_restore for a server of this major version.

    With several ``postgresql-client-<major>`` installed (the service image carries 16 and
    18), the oldest major at least the server's: pg_dump refuses a newer server, and
    pg_restore from 17 on opens with ``SET transaction_timeout``, which servers before 17
    reject. /usr/bin/pg_dump (Debian's pg_wrapper) would take the newest for any remote
    host. With ``CCC_TOOLS_DIR`` set, or no such client, :func:`binary` decides.
    """
    if settings.tools_dir is None and PG_LIB.is_dir():
        majors = sorted(int(d.name) for d in PG_LIB.iterdir() if d.name.isdigit())
        for major in majors:
            candidate = PG_LIB / str(major) / "bin" / name
            if major >= server_major and candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return binary(name)


class HashingReader(io.RawIOBase):
    """Wraps a pipe: counts bytes and hashes them while the object store reads."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        n = self._raw.readinto(view)  # type: ignore[attr-defined]
        if n:
            self.sha256.update(view[:n])
            self.size += n
        return n or 0


class HashingWriter(io.RawIOBase):
    """Wraps a file: hashes what the object store writes into it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha256.update(data)
        self.size += len(data)
        return self._raw.write(data)


class Process:
    """A client binary run with its stderr kept in a file (no pipe to deadlock on)."""

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        *,
        stdin: IO[bytes] | int | None = None,
        stdout: IO[bytes] | int | None = None,
        workdir: Path,
    ) -> None:
        self.name = Path(argv[0]).name
        self._stderr_path = workdir / f"{self.name}.stderr"
        self._stderr = open(self._stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(argv),
            env={**_base_env(), **env},
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,
        )

    async def wait(self) -> int:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, self.proc.wait)
        except asyncio.CancelledError:
            self.kill()
            raise

    def kill(self) -> None:
        """Kill the whole process group (a wrapper script's children hold the pipe too)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stderr(self) -> str:
        self._stderr.flush()
        text = self._stderr_path.read_text(errors="replace").strip()
        return text[-2000:]

    def close(self) -> None:
        self.kill()
        self._stderr.close()


def _base_env() -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")
    return {k: v for k, v in os.environ.items() if k in keep}


async def run(argv: Sequence[str], env: dict[str, str], workdir: Path, **kw: object) -> str:
    """Run to completion; return stderr, raise on a non-zero exit."""
    p = Process(argv, env, workdir=workdir, **kw)  # type: ignore[arg-type]
    try:
        rc = await p.wait()
        err = p.stderr()
    finally:
        p.close()
    if rc != 0:
        raise ToolFailed(p.name, rc, err)
    return err


class ToolFailed(Exception):
    def __init__(self, name: str, rc: int, stderr: str) -> None:
        super().__init__(f"{name} exited with {rc}: {stderr}")
        self.name = name
        self.rc = rc
        self.stderr = stderr


def tool_error(server: str, exc: ToolFailed) -> Exception:
    """A failed client binary as the error a user can act on."""
    from ccc.common import BadRequest, Internal

    text = exc.stderr
    unreachable = (
        "Connection refused",
        "could not connect",
        "timeout expired",
        "Can't connect",
        "Could not connect",
    )
    refused = ("authentication failed", "Access denied", "WRONGPASS", "NOAUTH", "NOPERM")
    if any(s in text for s in unreachable):
        return Unavailable(f"{exc.name} could not reach {server!r}: {text}")
    if any(s in text for s in refused):
        return BadRequest(f"{exc.name} was refused by {server!r}: {text}")
    return Internal(f"{exc.name} failed (exit {exc.rc}): {text}")
