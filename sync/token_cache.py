"""Tokens that outlive a process: sealed with SYNC_TOKEN_CACHE_KEY and kept in the database.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under a key derived with HKDF from
the setting. The sealed payload also binds the token to the credentials it was issued for, so
a changed password, a wrong or rotated key, or a tampered row just means a fresh grant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.engine import Engine

from sync import store
from sync.accounts import Credentials
from sync.auth import SavedToken
from sync.errors import SyncError

log = logging.getLogger(__name__)

MIN_KEY_LENGTH = 32
_FORMAT = 1


def _derive(key: str, purpose: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"comm100-sync token cache", info=purpose
    ).derive(key.encode("utf-8"))


class SealedTokenCache:
    """sync.auth.TokenCache on sync_token_cache. Never raises: a failure means no cache."""

    def __init__(
        self,
        engine: Engine,
        credentials: Credentials,
        key: str,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._login = credentials.login_key
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(key, b"fernet")))
        material = "\0".join((credentials.client_id, credentials.email, credentials.password))
        self._binding = hmac.new(
            _derive(key, b"binding"), material.encode("utf-8"), hashlib.sha256
        ).hexdigest()
        self._now = now

    def __repr__(self) -> str:
        return "SealedTokenCache()"

    def load(self) -> SavedToken | None:
        try:
            sealed = store.read_sealed_token(self._engine, self._login)
        except SyncError as exc:
            log.warning("token cache unreadable, asking for a token instead: %s", exc)
            return None
        if sealed is None:
            return None
        try:
            payload: Any = json.loads(self._fernet.decrypt(sealed.encode("ascii")))
        except (InvalidToken, ValueError, UnicodeError):
            log.info("the cached token does not open with SYNC_TOKEN_CACHE_KEY; ignoring it")
            return None
        if not isinstance(payload, dict) or payload.get("v") != _FORMAT:
            return None
        if not hmac.compare_digest(str(payload.get("binding", "")), self._binding):
            log.info("the cached token was issued for other credentials; ignoring it")
            return None
        try:
            return SavedToken(
                access_token=str(payload["access_token"]),
                refresh_token=payload.get("refresh_token") or None,
                obtained_at=float(payload["obtained_at"]),
                lifetime=float(payload["lifetime"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def save(self, token: SavedToken) -> None:
        payload = {
            "v": _FORMAT,
            "binding": self._binding,
            "access_token": token.access_token,
            "refresh_token": token.refresh_token,
            "obtained_at": token.obtained_at,
            "lifetime": token.lifetime,
        }
        sealed = self._fernet.encrypt(json.dumps(payload).encode("utf-8")).decode("ascii")
        try:
            store.write_sealed_token(self._engine, self._login, sealed, self._now())
        except SyncError as exc:
            log.warning("could not keep the token for other processes: %s", exc)
