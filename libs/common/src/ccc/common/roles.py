"""Roles and what they imply: admin ⊇ operator ⊇ reader.

A route lists the roles that may call it; a key holding a stronger role passes too.
"""

from __future__ import annotations

from collections.abc import Iterable

ROLES = ("reader", "operator", "admin")
_IMPLIES = {
    "reader": frozenset({"reader"}),
    "operator": frozenset({"reader", "operator"}),
    "admin": frozenset(ROLES),
}


def expand(roles: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for role in roles:
        out |= _IMPLIES.get(role, {role})
    return frozenset(out)


def allowed(held: Iterable[str], required: Iterable[str]) -> bool:
    return bool(expand(held) & frozenset(required))
