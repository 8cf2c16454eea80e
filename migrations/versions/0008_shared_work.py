"""Replicas that share the work and one rate budget: sync_state's next_due_at, claimed_by and
claimed_at; sync_rate_calls and sync_rate_state.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from sync.schema import UTCDateTime, id_type

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.add_column(sa.Column("next_due_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("claimed_at", UTCDateTime(), nullable=True))
    op.create_table(
        "sync_rate_calls",
        sa.Column("id", id_type(), primary_key=True, autoincrement=True),
        sa.Column("budget", sa.String(64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_rate_calls")),
    )
    op.create_index(op.f("ix_sync_rate_calls_budget_at"), "sync_rate_calls", ["budget", "at"])
    op.create_table(
        "sync_rate_state",
        sa.Column("budget", sa.String(64), nullable=False),
        sa.Column("blocked_until", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("budget", name=op.f("pk_sync_rate_state")),
    )


def downgrade() -> None:
    op.drop_table("sync_rate_state")
    op.drop_index(op.f("ix_sync_rate_calls_budget_at"), table_name="sync_rate_calls")
    op.drop_table("sync_rate_calls")
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("claimed_at")
        batch.drop_column("claimed_by")
        batch.drop_column("next_due_at")
