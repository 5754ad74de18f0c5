"""Secrets generated on first start and kept under the data dir, readable by the owner only.

Used for the admin API key and the master key when the operator set neither: the
local default must work with nothing configured, and must not change between starts.
Several processes start at once under ``ccc up``: the secret is written to a private
temporary file and linked into place, so nobody ever reads a half-written one.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def load_or_create(
    data_dir: Path, name: str, prefix: str = "", generate: Callable[[], str] | None = None
) -> tuple[str, bool]:
    """Return (secret, created_now) for ``<data_dir>/<name>``."""
    path = data_dir / name
    existing = _read(path)
    if existing:
        return existing, False
    data_dir.mkdir(parents=True, exist_ok=True)
    value = prefix + (generate() if generate else secrets.token_urlsafe(32))
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=f".{name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # atomic, and fails if another process won the race
    except FileExistsError:
        winner = _read(path)
        if not winner:
            raise RuntimeError(f"{path} exists but is empty") from None
        return winner, False
    finally:
        os.unlink(tmp)
    return value, True


def _read(path: Path, attempts: int = 20) -> str | None:
    """The secret in ``path``; an empty file (being written by an older writer) is retried."""
    for _ in range(attempts):
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return None
        if text:
            return text
        time.sleep(0.05)
    return None


def admin_key(data_dir: Path) -> tuple[str, bool]:
    return load_or_create(data_dir, "admin.key", prefix="ccc_admin_")
