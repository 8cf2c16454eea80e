"""sync_auth_state (the pause after a refused password) and sync_token_cache (sealed tokens).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from sync.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_auth_state",
        sa.Column("login_key", sa.String(64), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=True),
        sa.Column("refusals", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("refused_at", UTCDateTime(), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("refused_salt", sa.String(32), nullable=True),
        sa.Column("refused_hash", sa.String(64), nullable=True),
        sa.Column("error", sa.String(200), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("login_key", name=op.f("pk_sync_auth_state")),
    )
    op.create_table(
        "sync_token_cache",
        sa.Column("login_key", sa.String(64), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("login_key", name=op.f("pk_sync_token_cache")),
    )


def downgrade() -> None:
    op.drop_table("sync_token_cache")
    op.drop_table("sync_auth_state")
