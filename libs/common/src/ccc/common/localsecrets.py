"""Secrets generated on first start and kept under the data dir, readable by the owner only.

Used for the admin API key and the master key when the operator set neither: the
local default must work with nothing configured, and must not change between starts.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def load_or_create(
    data_dir: Path, name: str, prefix: str = "", generate: Callable[[], str] | None = None
) -> tuple[str, bool]:
    """Return (secret, created_now) for ``<data_dir>/<name>``."""
    path = data_dir / name
    if path.exists():
        return path.read_text().strip(), False
    data_dir.mkdir(parents=True, exist_ok=True)
    value = prefix + (generate() if generate else secrets.token_urlsafe(32))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it a moment ago
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value, True


def admin_key(data_dir: Path) -> tuple[str, bool]:
    return load_or_create(data_dir, "admin.key", prefix="ccc_admin_")
