"""Initial schema: platforms, platform_audit, sync_runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from sync.schema import UTCDateTime, id_type, json_type

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("id", id_type(), primary_key=True, autoincrement=True),
        sa.Column("resource", sa.String(64), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
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
        sa.CheckConstraint(
            "status IN ('running', 'success', 'failed', 'skipped')",
            name=op.f("ck_sync_runs_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
    )
    op.create_index(
        op.f("ix_sync_runs_resource_partner_id_started_at"),
        "sync_runs",
        ["resource", "partner_id", "started_at"],
    )
    op.create_index(op.f("ix_sync_runs_status"), "sync_runs", ["status"])

    op.create_table(
        "platforms",
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("raw", json_type(), nullable=False),
        sa.Column("raw_hash", sa.String(32), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("partner_id", "id", name=op.f("pk_platforms")),
    )

    op.create_table(
        "platform_audit",
        sa.Column("id", id_type(), primary_key=True, autoincrement=True),
        sa.Column("run_id", id_type(), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("platform_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("old_values", json_type(), nullable=True),
        sa.Column("new_values", json_type(), nullable=True),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "action IN ('insert', 'update', 'delete', 'restore')",
            name=op.f("ck_platform_audit_action"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f("fk_platform_audit_run_id_sync_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_audit")),
    )
    op.create_index(
        op.f("ix_platform_audit_partner_id_platform_id_changed_at"),
        "platform_audit",
        ["partner_id", "platform_id", "changed_at"],
    )
    op.create_index(op.f("ix_platform_audit_run_id"), "platform_audit", ["run_id"])
    op.create_index(op.f("ix_platform_audit_changed_at"), "platform_audit", ["changed_at"])


def downgrade() -> None:
    op.drop_table("platform_audit")
    op.drop_table("platforms")
    op.drop_table("sync_runs")
