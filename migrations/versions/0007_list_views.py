"""BI views over the account lists of 0006: `<list>_current` for each new list, `all_changes`
across every audit table, and `site_history`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

The lists are spelt out here as they were on this date (not read from sync.resources), so that
this migration keeps creating the same views whatever later versions declare. 0002's
`platforms_current` and `platform_history` stay as they are.

`site_history` is built as 0002's `platform_history` is: an insert, update or restore audit row
starts a version of a site, the next audit row of the same site ends it, so

    WHERE partner_id = :p AND valid_from <= :d AND (valid_to IS NULL OR valid_to > :d)

is the sites partner :p had at instant :d. Its typed columns come from `new_values`, extracted
per dialect; MariaDB's JSON_UNQUOTE gives the text 'null' for a JSON null, hence the JSON_TYPE
guard there.

`all_changes` is a UNION ALL of the eight audit tables, each branch cast to the same column
types (the record's key as text, a NULL `site_id` typed as an integer) so that the view has one
type per column on every dialect.

A later migration that alters any list table or audit table (platforms and platform_audit
included) must drop these views first and create them again afterwards, as 0006 does for 0002's:
SQLite's batch mode (copy, drop, rename) and PostgreSQL's ALTER COLUMN TYPE both refuse to touch
a table that a view depends on.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# name, singular (audit table `<singular>_audit`, key `<singular>_id`), per site?, typed columns
LISTS: list[tuple[str, str, bool, list[str]]] = [
    ("platforms", "platform", False, ["name"]),
    ("sites", "site", False, [
        "platform_id", "status", "company", "website", "country_or_region", "time_zone",
        "external_id"]),
    ("products", "product", False, ["module_id", "name", "is_deleted"]),
    ("plans", "plan", False, [
        "name", "is_enabled", "group_name", "created_time", "last_updated_time"]),
    ("agents", "agent", True, ["is_admin", "is_active", "is_locked", "time_zone", "created_time"]),
    ("departments", "department", True, ["name", "is_deleted"]),
    ("roles", "role", True, ["name", "type"]),
    ("site_products", "site_product", True, ["module_id", "name", "is_deleted"]),
]  # fmt: skip
# platforms_current belongs to 0002.
CURRENT_VIEWS = [f"{name}_current" for name, *_rest in LISTS if name != "platforms"]
VIEWS = [*CURRENT_VIEWS, "all_changes", "site_history"]

# Per dialect: a value as text, a NULL site_id, a JSON string field of new_values as text, and
# an integer. MariaDB's CAST AS CHAR would take the migrating connection's collation (often a
# case-insensitive one); the tables are utf8mb4_bin, and so is record_id.
_MARIADB = {
    "text": "CAST({0} AS CHAR CHARACTER SET utf8mb4) COLLATE utf8mb4_bin",
    "no_site": "CAST(NULL AS SIGNED)",
    "field": (
        "CASE WHEN JSON_TYPE(JSON_EXTRACT(new_values, '$.{0}')) <> 'NULL' "
        "THEN JSON_UNQUOTE(JSON_EXTRACT(new_values, '$.{0}')) END"
    ),
    "integer": "CAST({0} AS SIGNED)",
}
SQL = {
    "postgresql": {
        "text": "CAST({0} AS TEXT)",
        "no_site": "CAST(NULL AS BIGINT)",
        "field": "new_values ->> '{0}'",
        "integer": "CAST({0} AS BIGINT)",
    },
    "sqlite": {
        "text": "CAST({0} AS TEXT)",
        "no_site": "CAST(NULL AS BIGINT)",
        "field": "json_extract(new_values, '$.{0}')",
        "integer": "CAST({0} AS INTEGER)",
    },
    "mysql": _MARIADB,
    "mariadb": _MARIADB,
}


def current_view(name: str, per_site: bool, columns: list[str]) -> str:
    site = ["site_id"] if per_site else []
    selected = ", ".join(
        ["partner_id", *site, "id", *columns, "raw", "first_seen_at", "updated_at"]
    )
    return (
        f"CREATE VIEW {name}_current AS\nSELECT {selected}\nFROM {name}\nWHERE deleted_at IS NULL"
    )


def all_changes(sql: dict[str, str]) -> str:
    branches = [
        f"SELECT '{name}' AS resource, partner_id, "
        f"{'site_id' if per_site else sql['no_site']} AS site_id, "
        f"{sql['text'].format(f'{singular}_id')} AS record_id, "
        f"action, changed_fields, changed_at, run_id\n"
        f"FROM {singular}_audit"
        for name, singular, per_site, _columns in LISTS
    ]
    return "CREATE VIEW all_changes AS\n" + "\nUNION ALL\n".join(branches)


# As 0002's platform_history: the window runs over every audit row (deletes included, so they
# can end a version); the outer query keeps the rows that start one. `id` breaks ties.
SITE_HISTORY = """
CREATE VIEW site_history AS
SELECT
    partner_id,
    site_id,
    {status} AS status,
    {company} AS company,
    {country_or_region} AS country_or_region,
    {platform_id} AS platform_id,
    new_values AS raw,
    changed_at AS valid_from,
    valid_to,
    action AS started_by,
    ended_by,
    run_id,
    id AS audit_id
FROM (
    SELECT
        id, run_id, partner_id, site_id, action, new_values, changed_at,
        LEAD(changed_at) OVER w AS valid_to,
        LEAD(action) OVER w AS ended_by
    FROM site_audit
    WINDOW w AS (PARTITION BY partner_id, site_id ORDER BY changed_at, id)
) AS versions
WHERE action <> 'delete'
"""


def site_history(sql: dict[str, str]) -> str:
    field = sql["field"].format
    return SITE_HISTORY.format(
        status=field("status"),
        company=field("company"),
        country_or_region=field("countryOrRegion"),
        platform_id=sql["integer"].format(field("platformId")),
    )


def upgrade() -> None:
    sql = SQL[op.get_bind().dialect.name]
    for name, _singular, per_site, columns in LISTS:
        if name != "platforms":
            op.execute(current_view(name, per_site, columns))
    op.execute(all_changes(sql))
    op.execute(site_history(sql))


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
