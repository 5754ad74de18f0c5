"""Credentials at rest: Fernet-encrypted with the master key.

The key comes from ``CCC_MASTER_KEY``; without it a key is generated once under
``<data_dir>/master.key`` (mode 0600) so a laptop works with nothing configured.
This belongs in ``ccc.common`` once a second service needs it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ccc.common import Internal

from .settings import DatabaseSettings


def _fernet_key(raw: str) -> bytes:
    """A valid Fernet key as given, or one derived from a passphrase."""
    try:
        Fernet(raw.encode())
        return raw.encode()
    except ValueError:
        return base64.urlsafe_b64encode(hashlib.sha256(raw.encode()).digest())


def load_master_key(settings: DatabaseSettings) -> bytes:
    if settings.master_key is not None:
        return _fernet_key(settings.master_key.get_secret_value())
    path = Path(settings.data_dir) / "master.key"
    if path.exists():
        return _fernet_key(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class Vault:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise Internal(
                "a stored credential cannot be decrypted: the master key changed"
            ) from exc
