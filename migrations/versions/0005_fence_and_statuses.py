"""sync_state (the per-resource, per-partner write fence) and the run statuses
`interrupted` and `partial`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from sync.schema import UTCDateTime, id_type

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_STATUSES = "status IN ('running', 'success', 'failed', 'skipped')"
NEW_STATUSES = "status IN ('running', 'success', 'failed', 'skipped', 'interrupted', 'partial')"


def _replace_status_check(condition: str) -> None:
    # SQLite cannot alter a constraint: batch mode copies the table. The views over sync_runs
    # do not exist (platform_history reads platform_audit only), so the copy is allowed.
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_constraint(op.f("ck_sync_runs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_sync_runs_status"), condition)


def upgrade() -> None:
    _replace_status_check(NEW_STATUSES)
    op.create_table(
        "sync_state",
        sa.Column("resource", sa.String(64), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("last_write_at", UTCDateTime(), nullable=False),
        sa.Column("last_run_id", id_type(), nullable=True),
        sa.PrimaryKeyConstraint("resource", "partner_id", name=op.f("pk_sync_state")),
    )


def downgrade() -> None:
    op.drop_table("sync_state")
    op.execute("UPDATE sync_runs SET status = 'failed' WHERE status IN ('interrupted', 'partial')")
    _replace_status_check(OLD_STATUSES)
