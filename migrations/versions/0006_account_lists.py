"""The whole partner account: sites, products, plans and the per-site agents, departments, roles
and products, each with its audit table; `changed_fields` on every audit table (platform_audit's
backfilled).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

The lists are spelt out here as they were on this date (not read from sync.resources), so that
this migration keeps creating the same tables whatever later versions declare.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

from sync.schema import UTCDateTime, id_type, json_type

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KEY_TEXT_LENGTH = 128
TYPES = {"text": sa.Text, "bool": sa.Boolean, "int": sa.BigInteger, "time": UTCDateTime}
# name, singular, key type, per site?, typed columns (name, kind)
LISTS: list[tuple[str, str, str, bool, list[tuple[str, str]]]] = [
    ("sites", "site", "int", False, [
        ("platform_id", "int"), ("status", "text"), ("company", "text"), ("website", "text"),
        ("country_or_region", "text"), ("time_zone", "text"), ("external_id", "text")]),
    ("products", "product", "text", False, [
        ("module_id", "text"), ("name", "text"), ("is_deleted", "bool")]),
    ("plans", "plan", "int", False, [
        ("name", "text"), ("is_enabled", "bool"), ("group_name", "text"),
        ("created_time", "time"), ("last_updated_time", "time")]),
    ("agents", "agent", "text", True, [
        ("is_admin", "bool"), ("is_active", "bool"), ("is_locked", "bool"),
        ("time_zone", "text"), ("created_time", "time")]),
    ("departments", "department", "text", True, [("name", "text"), ("is_deleted", "bool")]),
    ("roles", "role", "text", True, [("name", "text"), ("type", "text")]),
    ("site_products", "site_product", "text", True, [
        ("module_id", "text"), ("name", "text"), ("is_deleted", "bool")]),
]  # fmt: skip
# The views over platform_audit (0002) must go while the table is altered (SQLite copies it).
PLATFORM_VIEWS = ("platform_history", "platforms_current")


def _key(kind: str) -> sa.types.TypeEngine[Any]:
    return sa.BigInteger() if kind == "int" else sa.String(KEY_TEXT_LENGTH)


def _index_name(table: str, *columns: str) -> str:
    name = f"ix_{table}_{'_'.join(columns)}"
    return name if len(name) <= 63 else f"ix_{table}_{columns[-2]}_{columns[-1]}"[:63]


def _create_list(name: str, singular: str, key: str, per_site: bool, columns: Any) -> None:
    site = ["site_id"] if per_site else []
    op.create_table(
        name,
        sa.Column("partner_id", sa.String(64), nullable=False),
        *(sa.Column("site_id", sa.BigInteger(), autoincrement=False, nullable=False)
          for _ in site),
        sa.Column("id", _key(key), autoincrement=False, nullable=False),
        *(sa.Column(column, TYPES[kind](), nullable=True) for column, kind in columns),
        sa.Column("raw", json_type(), nullable=False),
        sa.Column("raw_hash", sa.String(32), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("partner_id", *site, "id", name=op.f(f"pk_{name}")),
    )  # fmt: skip
    audit, audit_key = f"{singular}_audit", f"{singular}_id"
    op.create_table(
        audit,
        sa.Column("id", id_type(), primary_key=True, autoincrement=True),
        sa.Column("run_id", id_type(), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        *(sa.Column("site_id", sa.BigInteger(), nullable=False) for _ in site),
        sa.Column(audit_key, _key(key), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("old_values", json_type(), nullable=True),
        sa.Column("new_values", json_type(), nullable=True),
        sa.Column("changed_fields", json_type(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "action IN ('insert', 'update', 'delete', 'restore')", name=op.f(f"ck_{audit}_action")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f(f"fk_{audit}_run_id_sync_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{audit}")),
    )
    for columns_ in (
        ["partner_id", *site, audit_key, "changed_at"],
        ["run_id"],
        ["changed_at"],
        ["partner_id", "changed_at"],
    ):
        op.create_index(op.f(_index_name(audit, *columns_)), audit, columns_)


def changed_fields(action: str, old: Any, new: Any) -> list[str]:
    """The top-level keys present on one side only or whose values differ (all of one side
    on insert and delete), sorted."""
    old = json.loads(old) if isinstance(old, str) else (old or {})
    new = json.loads(new) if isinstance(new, str) else (new or {})
    if action == "insert":
        return sorted(new)
    if action == "delete":
        return sorted(old)
    return sorted(k for k in old.keys() | new.keys() if k not in old or k not in new
                  or old[k] != new[k])  # fmt: skip


def _backfill_platform_audit() -> None:
    audit = sa.table(
        "platform_audit",
        sa.column("id", sa.BigInteger()),
        sa.column("action", sa.String()),
        sa.column("old_values", json_type()),
        sa.column("new_values", json_type()),
        sa.column("changed_fields", json_type()),
    )
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(
            sa.select(audit.c.id, audit.c.action, audit.c.old_values, audit.c.new_values)
            .where(audit.c.id > last)
            .order_by(audit.c.id)
            .limit(1000)
        ).all()
        if not rows:
            return
        bind.execute(
            audit.update()
            .where(audit.c.id == sa.bindparam("row_id"))
            .values(changed_fields=sa.bindparam("fields")),
            [{"row_id": r.id, "fields": changed_fields(r.action, r.old_values, r.new_values)}
             for r in rows],
        )  # fmt: skip
        last = rows[-1].id


# 0002's views, as 0002 created them: put back after platform_audit is altered.
NAME_FROM_JSON = {
    "postgresql": "new_values ->> 'name'",
    "sqlite": "json_extract(new_values, '$.name')",
    "mysql": "JSON_UNQUOTE(JSON_EXTRACT(new_values, '$.name'))",
    "mariadb": "JSON_UNQUOTE(JSON_EXTRACT(new_values, '$.name'))",
}
PLATFORMS_CURRENT = """
CREATE VIEW platforms_current AS
SELECT partner_id, id, name, raw, first_seen_at, updated_at
FROM platforms
WHERE deleted_at IS NULL
"""
PLATFORM_HISTORY = """
CREATE VIEW platform_history AS
SELECT
    partner_id,
    platform_id,
    {name} AS name,
    new_values AS raw,
    changed_at AS valid_from,
    valid_to,
    action AS started_by,
    ended_by,
    run_id,
    id AS audit_id
FROM (
    SELECT
        id, run_id, partner_id, platform_id, action, new_values, changed_at,
        LEAD(changed_at) OVER w AS valid_to,
        LEAD(action) OVER w AS ended_by
    FROM platform_audit
    WINDOW w AS (PARTITION BY partner_id, platform_id ORDER BY changed_at, id)
) AS versions
WHERE action <> 'delete'
"""


def _alter_platform_audit(change: Any) -> None:
    """Run `change(batch)` on platform_audit with 0002's views out of the way."""
    for view in PLATFORM_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    with op.batch_alter_table("platform_audit") as batch:
        change(batch)
    op.execute(PLATFORMS_CURRENT)
    op.execute(PLATFORM_HISTORY.format(name=NAME_FROM_JSON[op.get_bind().dialect.name]))


def upgrade() -> None:
    for name, singular, key, per_site, columns in LISTS:
        _create_list(name, singular, key, per_site, columns)
    with op.batch_alter_table("platform_audit") as batch:
        batch.add_column(sa.Column("changed_fields", json_type(), nullable=True))
    _backfill_platform_audit()
    _alter_platform_audit(
        lambda batch: batch.alter_column(
            "changed_fields", existing_type=json_type(), nullable=False
        )
    )


def downgrade() -> None:
    _alter_platform_audit(lambda batch: batch.drop_column("changed_fields"))
    for name, singular, _key_kind, _per_site, _columns in reversed(LISTS):
        op.drop_table(f"{singular}_audit")
        op.drop_table(name)
