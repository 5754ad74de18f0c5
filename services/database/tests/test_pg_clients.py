"""Which pg_dump/pg_restore runs for a server: the nearest installed major at or above it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccc.common import Unavailable
from ccc.database import tools
from ccc.database.settings import settings


def install(lib: Path, major: int, *names: str) -> None:
    bin_dir = lib / str(major) / "bin"
    bin_dir.mkdir(parents=True)
    for name in names:
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)


def test_nearest_client_at_or_above_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "postgresql"
    install(lib, 16, "pg_dump", "pg_restore")
    install(lib, 18, "pg_dump", "pg_restore")
    (lib / "README").write_text("not a version\n")
    monkeypatch.setattr(tools, "PG_LIB", lib)
    monkeypatch.setattr(settings, "tools_dir", None)
    for server, client in ((12, 16), (15, 16), (16, 16), (17, 18), (18, 18)):
        assert tools.pg_binary("pg_restore", server) == str(lib / str(client) / "bin/pg_restore")
    # newer than every client: whatever PATH holds (pg_dump then names the mismatch)
    monkeypatch.setattr(tools, "binary", lambda name: f"/path/{name}")
    assert tools.pg_binary("pg_dump", 19) == "/path/pg_dump"


def test_tools_dir_and_missing_clients_defer_to_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "postgresql"
    install(lib, 16, "pg_restore")  # no pg_dump in 16
    install(lib, 18, "pg_dump")
    monkeypatch.setattr(tools, "PG_LIB", lib)
    monkeypatch.setattr(settings, "tools_dir", None)
    assert tools.pg_binary("pg_dump", 15) == str(lib / "18/bin/pg_dump")

    own = tmp_path / "tools"
    own.mkdir()
    monkeypatch.setattr(settings, "tools_dir", own)
    with pytest.raises(Unavailable, match="pg_dump"):
        tools.pg_binary("pg_dump", 15)
    (own / "pg_dump").write_text("#!/bin/sh\n")
    (own / "pg_dump").chmod(0o755)
    assert tools.pg_binary("pg_dump", 15) == str(own / "pg_dump")
