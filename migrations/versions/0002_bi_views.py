"""BI views platforms_current and platform_history, and the indexes dashboards query by.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

`platform_history` has one row per version of a platform: an insert, update or restore audit row
starts a version; the next audit row of the same platform (update or delete) ends it. So

    WHERE partner_id = :p AND valid_from <= :d AND (valid_to IS NULL OR valid_to > :d)

is the platform list partner :p had at instant :d. LEAD() exists on all three dialects
(SQLite >= 3.25, PostgreSQL, MariaDB >= 10.2); only the JSON extraction of `name` differs.

A later migration that alters platforms or platform_audit must drop these views first and create
them again afterwards: SQLite's batch mode (copy, drop, rename) and PostgreSQL's ALTER COLUMN TYPE
both refuse to touch a table that a view depends on.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# new_values ->> 'name', spelt per dialect. Each returns the unquoted JSON string.
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

# The window runs over every audit row (deletes included, so they can end a version); the
# outer query then keeps the rows that start one. `id` breaks ties between equal timestamps.
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

# name, table, columns: the same names schema.py's naming convention gives these indexes.
INDEXES = (
    # "What changed for this partner in the last 7 days": a range on changed_at per partner.
    ("ix_platform_audit_partner_id_changed_at", "platform_audit", ["partner_id", "changed_at"]),
    # Freshness: max(finished_at) of successful runs, read by every dashboard refresh.
    (
        "ix_sync_runs_resource_status_finished_at",
        "sync_runs",
        ["resource", "status", "finished_at"],
    ),
)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(PLATFORMS_CURRENT)
    op.execute(PLATFORM_HISTORY.format(name=NAME_FROM_JSON[dialect]))
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in INDEXES:
        op.drop_index(name, table_name=table)
    op.execute("DROP VIEW IF EXISTS platform_history")
    op.execute("DROP VIEW IF EXISTS platforms_current")
