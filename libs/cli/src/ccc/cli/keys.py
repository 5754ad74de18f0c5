"""``ccc keys``: manage API keys through the gateway, authenticated as admin."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from ccc.common.settings import Settings

console = Console()


def _admin_key() -> str:
    key = os.environ.get("CCC_ADMIN_KEY")
    if key:
        return key
    path = Path(Settings().data_dir) / "admin.key"
    if path.exists():
        return path.read_text().strip()
    raise SystemExit(
        "no admin key: set CCC_ADMIN_KEY or run `ccc up` once to generate .ccc/admin.key"
    )


def _client(gateway: str) -> httpx.Client:
    return httpx.Client(
        base_url=gateway, headers={"Authorization": f"Bearer {_admin_key()}"}, timeout=10
    )


def _fail(response: httpx.Response) -> int:
    console.print(f"[red]{response.status_code}[/] {response.text}")
    return 1


def create(gateway: str, name: str, roles: list[str], rate: float | None) -> int:
    body: dict[str, object] = {"name": name, "roles": roles}
    if rate:
        body["rate_limit_rps"] = rate
    with _client(gateway) as client:
        r = client.post("/v1/keys", json=body)
    if r.status_code != 201:
        return _fail(r)
    data = r.json()
    console.print(f"key [bold]{data['id']}[/] ({', '.join(data['roles'])}) — shown once:")
    print(data["key"])
    return 0


def list_keys(gateway: str) -> int:
    with _client(gateway) as client:
        r = client.get("/v1/keys")
    if r.status_code != 200:
        return _fail(r)
    table = Table("id", "name", "roles", "created", "rate limit")
    for k in r.json():
        table.add_row(
            k["id"],
            k["name"],
            ",".join(k["roles"]),
            k["created_at"],
            str(k.get("rate_limit_rps") or "default"),
        )
    console.print(table)
    return 0


def revoke(gateway: str, key_id: str) -> int:
    with _client(gateway) as client:
        r = client.delete(f"/v1/keys/{key_id}")
    if r.status_code != 204:
        return _fail(r)
    console.print(f"revoked {key_id}")
    return 0
