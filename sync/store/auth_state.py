"""Logins' refusal pauses and sealed tokens (sync_auth_state, sync_token_cache).

The store only keeps what it is given: the salted hash and the sealed token are made by the
callers (sync.auth_pause, sync.token_cache); nothing here can reveal a password or a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.schema import sync_auth_state, sync_token_cache
from sync.store.engine import operation, translate_errors
from sync.store.upsert import upsert_row


@dataclass(frozen=True)
class AuthState:
    """One login's row of sync_auth_state."""

    login_key: str
    account: str
    partner_id: str | None
    refusals: int
    refused_at: datetime | None
    next_attempt_at: datetime | None
    refused_salt: str | None
    refused_hash: str | None
    error: str | None

    def __repr__(self) -> str:  # the hash is not a secret, but has no business in logs
        return (
            f"AuthState(account={self.account!r}, refusals={self.refusals}, "
            f"next_attempt_at={self.next_attempt_at!r})"
        )


_STATE_COLUMNS = [sync_auth_state.c[name] for name in AuthState.__dataclass_fields__]


def read_auth_state(engine: Engine, login_key: str) -> AuthState | None:
    with operation(engine, "read_auth_state", "reading sync_auth_state"), engine.connect() as conn:
        row = conn.execute(
            sa.select(*_STATE_COLUMNS).where(sync_auth_state.c.login_key == login_key)
        ).first()
    return None if row is None else AuthState(*row)


def write_refusal(
    engine: Engine,
    login_key: str,
    *,
    account: str,
    refusals: int,
    salt: str,
    fingerprint: str,
    error: str,
    now: datetime,
    next_attempt_at: datetime,
) -> None:
    """Record the `refusals`-th refusal in a row of the credential set `fingerprint`."""
    with operation(engine, "write_refusal", "recording the refused login"), engine.begin() as conn:
        values: dict[str, Any] = {
            "login_key": login_key,
            "account": account,
            "refusals": refusals,
            "refused_at": now,
            "next_attempt_at": next_attempt_at,
            "refused_salt": salt,
            "refused_hash": fingerprint,
            "error": error[:200],
            "updated_at": now,
        }
        upsert_row(conn, sync_auth_state, values)


def write_acceptance(
    engine: Engine, login_key: str, *, account: str, partner_id: str | None, now: datetime
) -> None:
    """A grant was accepted: lift any pause and remember the partner."""
    values: dict[str, Any] = {
        "login_key": login_key,
        "account": account,
        "refusals": 0,
        "refused_at": None,
        "next_attempt_at": None,
        "refused_salt": None,
        "refused_hash": None,
        "error": None,
        "updated_at": now,
    }
    if partner_id:
        values["partner_id"] = partner_id
    with (
        operation(engine, "write_acceptance", "recording the accepted login"),
        engine.begin() as conn,
    ):
        upsert_row(conn, sync_auth_state, values)


def paused_logins(engine: Engine, now: datetime) -> list[dict[str, Any]]:
    """Logins whose refused credentials may not be tried before a time still to come."""
    table = sync_auth_state
    with translate_errors("reading sync_auth_state"), engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                table.c.account,
                table.c.partner_id,
                table.c.refusals,
                table.c.refused_at,
                table.c.next_attempt_at,
                table.c.error,
            )
            .where(table.c.refusals > 0, table.c.next_attempt_at > now)
            .order_by(table.c.account)
        ).mappings()
        return [dict(row) for row in rows]


def read_sealed_token(engine: Engine, login_key: str) -> str | None:
    with (
        operation(engine, "read_sealed_token", "reading sync_token_cache"),
        engine.connect() as conn,
    ):
        value = conn.execute(
            sa.select(sync_token_cache.c.sealed).where(sync_token_cache.c.login_key == login_key)
        ).scalar()
    return value if isinstance(value, str) else None


def write_sealed_token(engine: Engine, login_key: str, sealed: str, now: datetime) -> None:
    with (
        operation(engine, "write_sealed_token", "writing sync_token_cache"),
        engine.begin() as conn,
    ):
        upsert_row(
            conn,
            sync_token_cache,
            {"login_key": login_key, "sealed": sealed, "updated_at": now},
        )


def logins(engine: Engine) -> list[dict[str, Any]]:
    """Every login's account name and last known partner (for `status`)."""
    table = sync_auth_state
    with translate_errors("reading sync_auth_state"), engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.account, table.c.partner_id)).mappings()
        return [dict(row) for row in rows]
