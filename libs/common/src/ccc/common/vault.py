"""Secrets at rest: Fernet-encrypted with the fleet's master key.

The key comes from ``CCC_MASTER_KEY`` (a Fernet key, or any passphrase, which is
stretched into one); without it a key is generated once under ``<data_dir>/master.key``
(mode 0600), so a laptop works with nothing configured. In Kubernetes the chart takes it
from an existing Secret.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from . import localsecrets
from .errors import Internal
from .settings import Settings


def fernet_key(raw: str) -> bytes:
    """A valid Fernet key as given, or one derived from a passphrase."""
    if not raw.strip():
        raise ValueError("the master key is empty")
    try:
        Fernet(raw.encode())
        return raw.encode()
    except ValueError:
        return base64.urlsafe_b64encode(hashlib.sha256(raw.encode()).digest())


def load_master_key(settings: Settings) -> bytes:
    if settings.master_key is not None:
        return fernet_key(settings.master_key.get_secret_value())
    generated, _ = localsecrets.load_or_create(
        settings.data_dir, "master.key", generate=lambda: Fernet.generate_key().decode()
    )
    return fernet_key(generated)


class Vault:
    """Seal and open short secrets (passwords, tokens) for storage in KV."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        return cls(load_master_key(settings))

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise Internal("a stored secret cannot be decrypted: the master key changed") from exc
