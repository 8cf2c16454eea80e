"""The pause after a refused password, kept in the database so that it holds across processes.

A refused credential set is remembered by a salted scrypt hash (standard library; the password
cannot be recovered from it). A changed client id, email or password is another set: it is
tried at once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from sync import store
from sync.accounts import Credentials
from sync.retry import auth_pause_seconds
from sync.store.auth_state import AuthState

log = logging.getLogger(__name__)

# scrypt at 16 MiB and ~50 ms per hash: slow enough that the hash is no shortcut to the
# password, and computed at most once per process per salt.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}


def credential_fingerprint(credentials: Credentials, salt: str) -> str:
    material = "\0".join((credentials.client_id, credentials.email, credentials.password))
    return hashlib.scrypt(material.encode(), salt=bytes.fromhex(salt), **_SCRYPT).hex()


class DatabaseAuthLedger:
    """sync.auth.AuthLedger on sync_auth_state; StoreError when the database fails."""

    def __init__(
        self,
        engine: Engine,
        credentials: Credentials,
        *,
        account: str,
        interval_seconds: float,
        cap_seconds: float,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._credentials = credentials
        self._key = credentials.login_key
        self._account = account
        self._interval = interval_seconds
        self._cap = cap_seconds
        self._now = now
        self._fingerprints: dict[str, str] = {}

    def next_attempt_at(self) -> datetime | None:
        state = store.read_auth_state(self._engine, self._key)
        if state is None or not state.refusals or state.next_attempt_at is None:
            return None
        if state.next_attempt_at <= self._now() or not self._same_set(state):
            return None
        return state.next_attempt_at

    def refused(self, error: str) -> datetime:
        state = store.read_auth_state(self._engine, self._key)
        if state is not None and state.refusals and self._same_set(state):
            assert state.refused_salt is not None
            refusals, salt = state.refusals + 1, state.refused_salt
        else:
            refusals, salt = 1, secrets.token_hex(16)
        now = self._now()
        resume = now + timedelta(
            seconds=auth_pause_seconds(
                refusals, interval_seconds=self._interval, cap_seconds=self._cap
            )
        )
        store.write_refusal(
            self._engine,
            self._key,
            account=self._account,
            refusals=refusals,
            salt=salt,
            fingerprint=self._fingerprint(salt),
            error=error,
            now=now,
            next_attempt_at=resume,
        )
        return resume

    def accepted(self, partner_id: str | None) -> None:
        state = store.read_auth_state(self._engine, self._key)
        if (
            state is not None
            and not state.refusals
            and state.account == self._account
            and (partner_id is None or state.partner_id == partner_id)
        ):
            return  # already says so: a cycle without changes writes only its run rows
        store.write_acceptance(
            self._engine, self._key, account=self._account, partner_id=partner_id, now=self._now()
        )

    def known_partner(self) -> str | None:
        state = store.read_auth_state(self._engine, self._key)
        return state.partner_id if state is not None else None

    def _same_set(self, state: AuthState) -> bool:
        if not state.refused_salt or not state.refused_hash:
            return False
        try:
            mine = self._fingerprint(state.refused_salt)
        except ValueError:  # a salt that is not hex: not ours, so not the same set
            return False
        return hmac.compare_digest(mine, state.refused_hash)

    def _fingerprint(self, salt: str) -> str:
        if salt not in self._fingerprints:
            self._fingerprints[salt] = credential_fingerprint(self._credentials, salt)
        return self._fingerprints[salt]
