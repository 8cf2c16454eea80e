"""sync_runs.snapshot_hash: the hash of the response body a successful run applied.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: a plain ALTER TABLE on every dialect (SQLite needs no table copy).
    op.add_column("sync_runs", sa.Column("snapshot_hash", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("snapshot_hash")
