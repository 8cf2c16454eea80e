"""Tables, the one definition both the store and migrations/env.py use.

Table and column names are a public interface: BI dashboards query them directly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from sync.resources import KEY_TEXT_LENGTH, PARTNER_ID_LENGTH, REGISTRY, Resource

# The Alembic revision this package's code expects. Comparing it with alembic_version lets
# `once` skip loading Alembic when the schema is already current (tests keep it at head).
SCHEMA_REVISION = "0008"

ACTIONS = ("insert", "update", "delete", "restore")
# interrupted: cut short by a stop (SIGTERM) before it committed; partial: a per-site list
# whose sites did not all answer (the others committed).
RUN_STATUSES = ("running", "success", "failed", "skipped", "interrupted", "partial")
ERROR_TEXT_LENGTH = 2000


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on every dialect.

    PostgreSQL stores `timestamptz`; SQLite and MariaDB have no zone, so they store UTC wall
    time (MariaDB as DATETIME(6)) and values come back tagged UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            # Imported here: loading every dialect at start-up costs `once` ~50 ms.
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONDocument(sa.TypeDecorator[Any]):
    """JSON everywhere; jsonb on PostgreSQL so dashboards can index and query into it.

    none_as_null: Python None is SQL NULL (an insert's old_values), never the JSON 'null'.
    """

    impl = sa.JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(sa.JSON(none_as_null=True))


def json_type() -> sa.types.TypeEngine[Any]:
    return JSONDocument()


def id_type() -> sa.types.TypeEngine[int]:
    """64-bit surrogate keys; INTEGER on SQLite so the column is the rowid alias."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("id", id_type(), primary_key=True, autoincrement=True),
    sa.Column("resource", sa.String(64), nullable=False),
    sa.Column("partner_id", sa.String(PARTNER_ID_LENGTH), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("fetched", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("inserted", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("updated", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("deleted", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("restored", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("unchanged", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("error", sa.Text(), nullable=True),
    # BLAKE2b-128 of the response body a successful run applied: a later cycle that receives
    # the same bytes knows the table already says it, and skips parsing and diffing.
    sa.Column("snapshot_hash", sa.String(32), nullable=True),
    sa.CheckConstraint(
        "status IN ('running', 'success', 'failed', 'skipped', 'interrupted', 'partial')",
        name="status",
    ),
    sa.Index(None, "resource", "partner_id", "started_at"),
    sa.Index(None, "status"),
    # Dashboards' freshness query: max(finished_at) of successful runs (migration 0002).
    sa.Index(None, "resource", "status", "finished_at"),
)

# PostgreSQL cuts identifiers at 63 bytes, MariaDB refuses more than 64.
MAX_IDENTIFIER_LENGTH = 63
_KIND_TYPES: dict[str, Callable[[], sa.types.TypeEngine[Any]]] = {
    "text": sa.Text,
    "bool": sa.Boolean,
    "int": sa.BigInteger,
    "time": UTCDateTime,
}


def _index(table: str, *columns: str) -> sa.Index:
    """An index named by the convention, or, where that name is too long, by a shorter one."""
    name = f"ix_{table}_{'_'.join(columns)}"
    if len(name) > MAX_IDENTIFIER_LENGTH:
        name = f"ix_{table}_{columns[-2]}_{columns[-1]}"[:MAX_IDENTIFIER_LENGTH]
    return sa.Index(name, *columns)


def _list_tables(resource: Resource) -> tuple[sa.Table, sa.Table]:
    """The live table and the audit table of one list resource (see sync.resources)."""

    def key_type() -> sa.types.TypeEngine[Any]:
        return sa.BigInteger() if resource.key == "int" else sa.String(KEY_TEXT_LENGTH)

    site = ["site_id"] if resource.site_scoped else []
    live = sa.Table(
        resource.name,
        metadata,
        sa.Column("partner_id", sa.String(PARTNER_ID_LENGTH), primary_key=True),
        *(sa.Column("site_id", sa.BigInteger(), primary_key=True, autoincrement=False)
          for _ in site),
        sa.Column("id", key_type(), primary_key=True, autoincrement=False),
        *(sa.Column(c.name, _KIND_TYPES[c.kind](), nullable=not c.required)
          for c in resource.columns),
        sa.Column("raw", json_type(), nullable=False),
        # BLAKE2b-128 of the canonical JSON of `raw`: a cycle compares hashes, not documents.
        sa.Column("raw_hash", sa.String(32), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
    )  # fmt: skip
    name = f"{resource.singular}_audit"
    audit = sa.Table(
        name,
        metadata,
        sa.Column("id", id_type(), primary_key=True, autoincrement=True),
        sa.Column("run_id", id_type(), sa.ForeignKey("sync_runs.id"), nullable=False),
        sa.Column("partner_id", sa.String(PARTNER_ID_LENGTH), nullable=False),
        *(sa.Column("site_id", sa.BigInteger(), nullable=False) for _ in site),
        sa.Column(resource.audit_key, key_type(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("old_values", json_type(), nullable=True),
        sa.Column("new_values", json_type(), nullable=True),
        # The top-level keys present on one side only or whose values differ (all on insert
        # and delete), as stored: dashboards filter churn such as a plan's re-signed icon.
        sa.Column("changed_fields", json_type(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("action IN ('insert', 'update', 'delete', 'restore')", name="action"),
        _index(name, "partner_id", *site, resource.audit_key, "changed_at"),
        _index(name, "run_id"),
        _index(name, "changed_at"),
        # Dashboards: one partner's changes over a time range.
        _index(name, "partner_id", "changed_at"),
    )
    return live, audit


LIST_TABLES: dict[str, tuple[sa.Table, sa.Table]] = {
    resource.name: _list_tables(resource) for resource in REGISTRY.values()
}
platforms, platform_audit = LIST_TABLES["platforms"]


# One row per login (client id + email) that has asked for a token. A refused password grant
# pauses the login's refused credential set, identified by a salted scrypt hash of client id,
# email and password (from which the password cannot be recovered): a wrong password is tried
# again after SYNC_INTERVAL_SECONDS, then after doubling waits, never every cycle.
sync_auth_state = sa.Table(
    "sync_auth_state",
    metadata,
    # SHA-256 of client id and email (sync.auth.Credentials.login_key).
    sa.Column("login_key", sa.String(64), primary_key=True),
    sa.Column("account", sa.String(64), nullable=False),
    # The partner of the last accepted grant: failures before a token are filed under it.
    sa.Column("partner_id", sa.String(PARTNER_ID_LENGTH), nullable=True),
    sa.Column("refusals", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("refused_at", UTCDateTime(), nullable=True),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("refused_salt", sa.String(32), nullable=True),
    sa.Column("refused_hash", sa.String(64), nullable=True),
    sa.Column("error", sa.String(200), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Access and refresh tokens sealed (Fernet) with a key derived from SYNC_TOKEN_CACHE_KEY, so
# separate processes reuse a live token. Without the key nothing is written here. BI roles must
# not be granted this table.
sync_token_cache = sa.Table(
    "sync_token_cache",
    metadata,
    sa.Column("login_key", sa.String(64), primary_key=True),
    sa.Column("sealed", sa.Text(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# One row per (resource, partner): the fence. Every write transaction first updates its row,
# which holds a row lock until commit, so two writers never read-diff-write the same rows at
# once, even when the session lock of one of them was lost with its connection.
sync_state = sa.Table(
    "sync_state",
    metadata,
    sa.Column("resource", sa.String(64), primary_key=True),
    sa.Column("partner_id", sa.String(PARTNER_ID_LENGTH), primary_key=True),
    sa.Column("last_write_at", UTCDateTime(), nullable=False),
    sa.Column("last_run_id", id_type(), nullable=True),
    # Work sharing between replicas (sync.store.schedule): when the list is next due, and
    # which process last claimed it. Times come from the database's clock.
    sa.Column("next_due_at", UTCDateTime(), nullable=True),
    sa.Column("claimed_by", sa.String(128), nullable=True),
    sa.Column("claimed_at", UTCDateTime(), nullable=True),
)

# The API's rate budget, shared by every process on this database (sync.store.budget): one
# row per call in the last window, and the pause every process honours after a 429.
sync_rate_calls = sa.Table(
    "sync_rate_calls",
    metadata,
    sa.Column("id", id_type(), primary_key=True, autoincrement=True),
    sa.Column("budget", sa.String(64), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Index(None, "budget", "at"),
)
sync_rate_state = sa.Table(
    "sync_rate_state",
    metadata,
    sa.Column("budget", sa.String(64), primary_key=True),
    sa.Column("blocked_until", UTCDateTime(), nullable=True),
)
