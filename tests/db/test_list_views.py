"""The BI views of migration 0007 (`<list>_current`, `all_changes`, `site_history`) and the
example queries docs/bi.md gives over them, on every backend.

Rows go straight into the live, audit and sync_runs tables, as a cycle leaves them: these tests
cover the views, not the job, and run no cycle.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sync.resources import REGISTRY, Resource
from sync.schema import UTCDateTime, json_type, sync_runs
from tests.conftest import REPO

pytestmark = pytest.mark.db

PARTNER = "10000"
OTHER_PARTNER = "20000"
SITE = 10001
T0 = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
T2 = T1 + timedelta(minutes=5)
T3 = T2 + timedelta(minutes=5)
T4 = T3 + timedelta(minutes=5)
SAMPLE_TIME = "2022-07-08T09:30:00Z"
_GUIDS = uuid.UUID("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9")


# --------------------------------------------------------------------------- writing rows


def as_json(value: Any) -> Any:
    """A JSON column read through a view: decoded already, or text on dialects without JSON."""
    return json.loads(value) if isinstance(value, str) else value


def changed_fields(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    old, new = old or {}, new or {}
    return sorted(k for k in old.keys() | new.keys() if old.get(k, ...) != new.get(k, ...))


def typed_values(resource: Resource, record: dict[str, Any]) -> dict[str, Any]:
    """The typed columns a cycle fills from `record`."""
    values = {}
    for column in resource.columns:
        value = record.get(column.field)
        if column.kind == "time" and value is not None:
            value = datetime.fromisoformat(value)
        values[column.name] = value
    return values


def start_run(conn: Connection, resource: str, partner: str, at: datetime) -> int:
    run = sa.insert(sync_runs).values(
        resource=resource, partner_id=partner, started_at=at, finished_at=at, status="success"
    )
    return int(conn.execute(run).inserted_primary_key[0])


def write(
    engine: Engine,
    at: datetime,
    resource: str,
    action: str,
    record: dict[str, Any],
    *,
    partner: str = PARTNER,
    site: int | None = None,
) -> int:
    """One change of one record as a cycle writes it: its live row and its audit row, in a run
    of its own. insert, update and restore store `record`; delete soft-deletes the row of
    `record["id"]`. Returns the run's id."""
    list_ = REGISTRY[resource]
    live, audit = list_.table, list_.audit
    key: dict[str, Any] = {"partner_id": partner, "id": record["id"]}
    if list_.site_scoped:
        assert site is not None
        key["site_id"] = site
    match = [live.c[column] == value for column, value in key.items()]
    with engine.begin() as conn:
        run = start_run(conn, resource, partner, at)
        before = conn.execute(sa.select(live.c.raw).where(*match)).scalar_one_or_none()
        old = as_json(before) if action != "insert" else None
        new = record if action != "delete" else None
        if action == "delete":
            conn.execute(live.update().where(*match).values(deleted_at=at, updated_at=at))
        else:
            row = {
                **typed_values(list_, record),
                "raw": record,
                "raw_hash": hashlib.blake2b(
                    json.dumps(record).encode(), digest_size=16
                ).hexdigest(),
                "updated_at": at,
                "deleted_at": None,
            }
            if before is None:
                conn.execute(live.insert().values(**key, **row, first_seen_at=at))
            else:
                conn.execute(live.update().where(*match).values(**row))
        conn.execute(
            audit.insert().values(
                run_id=run,
                partner_id=partner,
                **({"site_id": site} if list_.site_scoped else {}),
                **{list_.audit_key: record["id"]},
                action=action,
                old_values=old,
                new_values=new,
                changed_fields=changed_fields(old, new),
                changed_at=at,
            )
        )
    return run


def sample(resource: Resource, number: int, **fields: Any) -> dict[str, Any]:
    """A record of `resource` with every typed field set, plus a field no column holds."""
    values = {"text": f"text {number}", "bool": True, "int": 7, "time": SAMPLE_TIME}
    record: dict[str, Any] = {
        "id": number if resource.key == "int" else str(uuid.uuid5(_GUIDS, f"{resource}{number}"))
    }
    record.update({column.field: values[column.kind] for column in resource.columns})
    record["notAColumn"] = {"kept": [1, 2]}
    record.update(fields)
    return record


def view(name: str, *columns: tuple[str, sa.types.TypeEngine[Any]]) -> sa.Table:
    return sa.Table(name, sa.MetaData(), *(sa.Column(c, type_) for c, type_ in columns))


def fetch(engine: Engine, query: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


# --------------------------------------------------------------------------- <list>_current

CURRENT_LISTS = list(REGISTRY)


def current_columns(resource: Resource) -> list[str]:
    site = ["site_id"] if resource.site_scoped else []
    return [
        "partner_id",
        *site,
        "id",
        *resource.typed_columns,
        "raw",
        "first_seen_at",
        "updated_at",
    ]


@pytest.mark.parametrize("name", CURRENT_LISTS)
def test_each_list_has_a_current_view_with_the_documented_columns(
    engine: Engine, name: str
) -> None:
    with engine.connect() as conn:
        columns = list(conn.exec_driver_sql(f"SELECT * FROM {name}_current").keys())

    assert columns == current_columns(REGISTRY[name])


@pytest.mark.parametrize("name", CURRENT_LISTS)
def test_each_current_view_shows_exactly_the_live_rows(engine: Engine, name: str) -> None:
    """A removed record stays in its table, soft-deleted; only the view leaves it out."""
    resource = REGISTRY[name]
    site = SITE if resource.site_scoped else None
    live, removed, theirs = sample(resource, 1), sample(resource, 2), sample(resource, 1)
    write(engine, T0, name, "insert", live, site=site)
    write(engine, T0, name, "insert", removed, site=site)
    write(engine, T1, name, "insert", theirs, site=site, partner=OTHER_PARTNER)
    write(engine, T2, name, "delete", removed, site=site)
    current = view(
        f"{name}_current", *((c, resource.table.c[c].type) for c in current_columns(resource))
    )

    rows = fetch(engine, sa.select(current).order_by(current.c.partner_id))

    assert [{**row, "raw": as_json(row["raw"])} for row in rows] == [
        {
            "partner_id": partner,
            **({"site_id": SITE} if resource.site_scoped else {}),
            "id": record["id"],
            **typed_values(resource, record),
            "raw": record,
            "first_seen_at": at,
            "updated_at": at,
        }
        for partner, record, at in ((PARTNER, live, T0), (OTHER_PARTNER, theirs, T1))
    ]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(resource.table)).scalar() == 3


def test_a_restored_record_is_current_again(engine: Engine) -> None:
    agent = sample(REGISTRY["agents"], 1)
    write(engine, T0, "agents", "insert", agent, site=SITE)
    write(engine, T1, "agents", "delete", agent, site=SITE)
    write(engine, T2, "agents", "restore", {**agent, "isActive": False}, site=SITE)

    rows = fetch(engine, sa.text("SELECT id, is_active, first_seen_at FROM agents_current"))

    assert [(row["id"], bool(row["is_active"])) for row in rows] == [(agent["id"], False)]


# --------------------------------------------------------------------------- all_changes

ALL_CHANGES = view(
    "all_changes",
    ("resource", sa.String()),
    ("partner_id", sa.String()),
    ("site_id", sa.BigInteger()),
    ("record_id", sa.String()),
    ("action", sa.String()),
    ("changed_fields", json_type()),
    ("changed_at", UTCDateTime()),
    ("run_id", sa.BigInteger()),
)


def test_all_changes_has_the_documented_columns(engine: Engine) -> None:
    with engine.connect() as conn:
        columns = list(conn.exec_driver_sql("SELECT * FROM all_changes").keys())

    assert columns == [column.name for column in ALL_CHANGES.columns]


def test_all_changes_has_one_row_per_audit_row_of_every_list(engine: Engine) -> None:
    """Keys come back as text, int and guid alike; site_id is the site of a per-site record."""
    expected = []
    for minute, resource in enumerate(REGISTRY.values()):
        name, site = resource.name, SITE if resource.site_scoped else None
        record = sample(resource, 1)
        inserted_at = T0 + timedelta(minutes=minute)
        updated_at = inserted_at + timedelta(seconds=1)
        inserted = write(engine, inserted_at, name, "insert", record, site=site)
        updated = write(
            engine, updated_at, name, "update", {**record, "notAColumn": 0, "new": 1}, site=site
        )
        key = str(record["id"])
        expected += [
            (name, PARTNER, site, key, "insert", sorted(record), inserted_at, inserted),
            (name, PARTNER, site, key, "update", ["new", "notAColumn"], updated_at, updated),
        ]

    rows = fetch(engine, sa.select(ALL_CHANGES).order_by(ALL_CHANGES.c.changed_at))

    assert [tuple(row.values()) for row in rows] == expected
    assert {row["resource"] for row in rows} == set(REGISTRY)


def test_all_changes_filters_alike_on_every_list(engine: Engine) -> None:
    """One type per column: text keys and integer keys compare with the same text, site_id with
    the same integer."""
    plan = sample(REGISTRY["plans"], 42)
    role = sample(REGISTRY["roles"], 1, id="42")
    write(engine, T0, "plans", "insert", plan)
    write(engine, T0, "roles", "insert", role, site=SITE)
    write(engine, T0, "sites", "insert", sample(REGISTRY["sites"], SITE))

    def resources(where: str) -> list[str]:
        with engine.connect() as conn:
            query = f"SELECT resource FROM all_changes WHERE {where} ORDER BY resource"
            return list(conn.exec_driver_sql(query).scalars())

    assert resources("record_id = '42'") == ["plans", "roles"]
    assert resources(f"site_id = {SITE}") == ["roles"]
    assert resources("site_id IS NULL") == ["plans", "sites"]
    assert resources(f"record_id = '{SITE}'") == ["sites"]


# --------------------------------------------------------------------------- site_history

SITE_HISTORY = view(
    "site_history",
    ("partner_id", sa.String()),
    ("site_id", sa.BigInteger()),
    ("status", sa.Text()),
    ("company", sa.Text()),
    ("country_or_region", sa.Text()),
    ("platform_id", sa.BigInteger()),
    ("raw", json_type()),
    ("valid_from", UTCDateTime()),
    ("valid_to", UTCDateTime()),
    ("started_by", sa.String()),
    ("ended_by", sa.String()),
    ("run_id", sa.BigInteger()),
    ("audit_id", sa.BigInteger()),
)
SITES_AS_OF = sa.text(
    "SELECT site_id, status FROM site_history "
    "WHERE partner_id = :partner AND valid_from <= :instant "
    "AND (valid_to IS NULL OR valid_to > :instant)"
).bindparams(sa.bindparam("instant", type_=UTCDateTime()))


def site(site_id: int, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": site_id,
        "platformId": 100,
        "status": status,
        "company": f"Company {site_id}",
        "countryOrRegion": "United States",
        "Industry": "Retail",
        **fields,
    }


A_OPEN = site(10001, "Open")
A_SUSPENDED = site(10001, "Suspended")
A_CLOSED = site(10001, "Closed")
A_REOPENED = site(10001, "Open", company="Engines Retail Ltd")
B_OPEN = site(10002, "Open")
B_RENAMED = site(10002, "Open", company="Compilers Corp")
# Nulls must come out as SQL NULL (MariaDB's JSON_UNQUOTE alone says 'null'); quotes and
# non-ASCII as plain text.
C_BARE = site(10003, "Open", platformId=None, countryOrRegion=None, company='Café "Ü"')
# Another partner's site with our id: its changes fall between ours and must not end them.
OTHER_INSERT, OTHER_DELETE = T0 + timedelta(minutes=1), T2 + timedelta(minutes=1)
# A: Open → Suspended → Closed → removed → restored; B: renamed; C: added later.
TIMELINE = (
    (T0, "insert", A_OPEN),
    (T0, "insert", B_OPEN),
    (T1, "update", A_SUSPENDED),
    (T1, "insert", C_BARE),
    (T2, "update", A_CLOSED),
    (T2, "update", B_RENAMED),
    (T3, "delete", A_CLOSED),
    (T4, "restore", A_REOPENED),
)


@pytest.fixture
def site_timeline(engine: Engine) -> list[int]:
    """TIMELINE written for our partner, and another partner's site 10001 in between; returns
    our run ids in TIMELINE's order."""
    write(engine, OTHER_INSERT, "sites", "insert", site(10001, "Open"), partner=OTHER_PARTNER)
    runs = [write(engine, at, "sites", action, record) for at, action, record in TIMELINE]
    write(engine, OTHER_DELETE, "sites", "delete", site(10001, "Open"), partner=OTHER_PARTNER)
    return runs


def history(engine: Engine, partner: str = PARTNER) -> list[dict[str, Any]]:
    query = (
        sa.select(SITE_HISTORY)
        .where(SITE_HISTORY.c.partner_id == partner)
        .order_by(SITE_HISTORY.c.site_id, SITE_HISTORY.c.valid_from)
    )
    return fetch(engine, query)


def sites_as_of(engine: Engine, instant: datetime, partner: str = PARTNER) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(SITES_AS_OF, {"partner": partner, "instant": instant}).all())


def test_site_history_has_the_documented_columns(engine: Engine) -> None:
    with engine.connect() as conn:
        columns = list(conn.exec_driver_sql("SELECT * FROM site_history").keys())

    assert columns == [column.name for column in SITE_HISTORY.columns]


def test_site_history_has_one_row_per_version(engine: Engine, site_timeline: list[int]) -> None:
    """Each status change starts a version; the removal ends one and the restore starts one."""
    columns = ("site_id", "status", "valid_from", "valid_to", "started_by", "ended_by", "run_id")
    versions = [tuple(row[c] for c in columns) for row in history(engine)]
    run = site_timeline

    assert versions == [
        (10001, "Open", T0, T1, "insert", "update", run[0]),
        (10001, "Suspended", T1, T2, "update", "update", run[2]),
        (10001, "Closed", T2, T3, "update", "delete", run[4]),
        (10001, "Open", T4, None, "restore", None, run[7]),
        (10002, "Open", T0, T2, "insert", "update", run[1]),
        (10002, "Open", T2, None, "update", None, run[5]),
        (10003, "Open", T1, None, "insert", None, run[3]),
    ]
    theirs = [(r["valid_from"], r["valid_to"]) for r in history(engine, OTHER_PARTNER)]
    assert theirs == [(OTHER_INSERT, OTHER_DELETE)]


def test_site_history_extracts_the_typed_columns_of_each_version(
    engine: Engine, site_timeline: list[int]
) -> None:
    typed = {
        (r["site_id"], r["valid_from"]): (
            r["status"],
            r["company"],
            r["country_or_region"],
            r["platform_id"],
            as_json(r["raw"]),
        )
        for r in history(engine)
    }

    assert typed[(10001, T4)] == ("Open", "Engines Retail Ltd", "United States", 100, A_REOPENED)
    assert typed[(10003, T1)] == ("Open", 'Café "Ü"', None, None, C_BARE)
    with engine.connect() as conn:
        platform_ids = conn.exec_driver_sql("SELECT platform_id FROM site_history").scalars()
        assert {type(value) for value in platform_ids} == {int, type(None)}


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        pytest.param(T0 - timedelta(microseconds=1), {}, id="before-the-first-change"),
        pytest.param(T0, {10001: "Open", 10002: "Open"}, id="at-the-inserts"),
        pytest.param(OTHER_INSERT, {10001: "Open", 10002: "Open"}, id="between"),
        pytest.param(
            T1, {10001: "Suspended", 10002: "Open", 10003: "Open"}, id="at-the-suspension"
        ),
        pytest.param(
            T2 - timedelta(microseconds=1),
            {10001: "Suspended", 10002: "Open", 10003: "Open"},
            id="just-before-the-closing",
        ),
        pytest.param(T2, {10001: "Closed", 10002: "Open", 10003: "Open"}, id="at-the-closing"),
        pytest.param(T3, {10002: "Open", 10003: "Open"}, id="at-the-removal"),
        pytest.param(T4 - timedelta(seconds=1), {10002: "Open", 10003: "Open"}, id="while-removed"),
        pytest.param(T4, {10001: "Open", 10002: "Open", 10003: "Open"}, id="at-the-restore"),
        pytest.param(
            T4 + timedelta(days=365), {10001: "Open", 10002: "Open", 10003: "Open"}, id="long-after"
        ),
    ],
)
def test_site_history_answers_which_sites_were_live_at_an_instant(
    engine: Engine, site_timeline: list[int], instant: datetime, expected: dict[int, str]
) -> None:
    assert sites_as_of(engine, instant) == expected


def test_open_site_versions_are_exactly_sites_current(
    engine: Engine, site_timeline: list[int]
) -> None:
    columns = ("status", "company", "country_or_region", "platform_id")

    def key(row: dict[str, Any], id_column: str) -> tuple[Any, ...]:
        return (
            row[id_column],
            *(row[c] for c in columns),
            json.dumps(as_json(row["raw"]), sort_keys=True),
        )

    live = fetch(engine, sa.text(f"SELECT * FROM sites_current WHERE partner_id = '{PARTNER}'"))
    open_versions = [row for row in history(engine) if row["valid_to"] is None]

    assert {key(row, "id") for row in live} == {key(row, "site_id") for row in open_versions}
    assert len(live) == 3


# --------------------------------------------------------------------------- docs/bi.md's queries

BI_DOC = REPO / "docs" / "bi.md"
# docs/bi.md's example queries for PostgreSQL, verbatim (1 to 3 are tests/db/test_views.py's).
SITE_CHURN = """\
WITH versions AS (
    SELECT partner_id, site_id, status, valid_from, valid_to, started_by, ended_by,
           LAG(status) OVER (PARTITION BY partner_id, site_id
                             ORDER BY valid_from, audit_id) AS previous_status
    FROM site_history
),
events AS (
    SELECT partner_id, valid_from AS changed_at, 'added' AS event
    FROM versions WHERE started_by IN ('insert', 'restore')
    UNION ALL
    -- A status change; a site first seen suspended counts as added only.
    SELECT partner_id, valid_from, lower(status)
    FROM versions WHERE status IN ('Suspended', 'Closed') AND previous_status <> status
    UNION ALL
    SELECT partner_id, valid_to, 'removed'
    FROM versions WHERE ended_by = 'delete'
)
SELECT partner_id, to_char(changed_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month,
       count(CASE WHEN event = 'added' THEN 1 END) AS added,
       count(CASE WHEN event = 'suspended' THEN 1 END) AS suspended,
       count(CASE WHEN event = 'closed' THEN 1 END) AS closed,
       count(CASE WHEN event = 'removed' THEN 1 END) AS removed
FROM events
GROUP BY partner_id, month
ORDER BY partner_id, month;"""
PLAN_MIX = """\
SELECT partner_id, group_name, is_enabled, count(*) AS plans
FROM plans_current
GROUP BY partner_id, group_name, is_enabled
ORDER BY partner_id, group_name, is_enabled;"""
AGENTS_PER_SITE = """\
SELECT s.partner_id, s.id AS site_id, s.company, s.status,
       count(a.id) AS agents,
       count(CASE WHEN a.is_active THEN 1 END) AS active_agents
FROM sites_current AS s
LEFT JOIN agents_current AS a ON a.partner_id = s.partner_id AND a.site_id = s.id
GROUP BY s.partner_id, s.id, s.company, s.status
ORDER BY s.partner_id, s.id;"""
ALL_CHANGED_LAST_7_DAYS = """\
SELECT changed_at, resource, partner_id, site_id, record_id, action, changed_fields
FROM all_changes
WHERE changed_at >= now() - INTERVAL '7 days'
  AND NOT (resource = 'plans' AND action = 'update' AND changed_fields = '["icon"]')
ORDER BY changed_at DESC, resource, record_id;"""
SITES_ON_A_DATE = """\
SELECT partner_id, site_id, status, company
FROM site_history
WHERE valid_from <= TIMESTAMPTZ '2026-03-01 00:00:00+00'
  AND (valid_to IS NULL OR valid_to > TIMESTAMPTZ '2026-03-01 00:00:00+00')
ORDER BY partner_id, site_id;"""
QUERIES = (SITE_CHURN, PLAN_MIX, AGENTS_PER_SITE, ALL_CHANGED_LAST_7_DAYS, SITES_ON_A_DATE)
# What docs/bi.md tells users of each database to change: PostgreSQL text → replacement.
MONTH = "to_char(changed_at AT TIME ZONE 'UTC', 'YYYY-MM')"
SEVEN_DAYS_AGO = "now() - INTERVAL '7 days'"
MARCH_1ST = "TIMESTAMPTZ '2026-03-01 00:00:00+00'"
DIALECT_CHANGES = {
    "postgresql": {},
    "mariadb": {
        MONTH: "DATE_FORMAT(changed_at, '%Y-%m')",
        SEVEN_DAYS_AGO: "UTC_TIMESTAMP() - INTERVAL 7 DAY",
        MARCH_1ST: "'2026-03-01 00:00:00'",
    },
    "sqlite": {
        MONTH: "strftime('%Y-%m', changed_at)",
        SEVEN_DAYS_AGO: "datetime('now', '-7 days')",
        MARCH_1ST: "'2026-03-01 00:00:00.000000'",
    },
}


def doc_query(engine: Engine, backend: str, query: str) -> list[tuple[Any, ...]]:
    """Run docs/bi.md's PostgreSQL `query` as the doc tells users of `backend` to change it."""
    for postgresql, replacement in DIALECT_CHANGES[backend].items():
        query = query.replace(postgresql, replacement)
    if backend == "mariadb":
        query = query.replace("%", "%%")  # PyMySQL %-formats even without parameters
    with engine.connect() as conn:
        if backend == "postgresql":
            # A dashboard's session is seldom UTC; the months must not move with it.
            conn.exec_driver_sql("SET TIME ZONE 'America/New_York'")
        return [tuple(row) for row in conn.exec_driver_sql(query.rstrip(";"))]


def test_docs_show_the_queries_and_the_dialect_differences_tested_here() -> None:
    text = BI_DOC.read_text()
    for query in QUERIES:
        assert query in text
    for changes in DIALECT_CHANGES.values():
        for replacement in changes.values():
            assert replacement in text


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def test_docs_site_churn_query(engine: Engine, backend: str) -> None:
    """Months are UTC months of detection; a site first seen suspended is added, not suspended."""
    for day, action, record in (
        ("2026-01-05", "insert", site(1, "Open")),
        ("2026-01-05", "insert", site(2, "Open")),
        ("2026-01-05", "insert", site(3, "Suspended")),
        ("2026-01-20", "update", site(1, "Suspended")),
        ("2026-02-03", "update", site(1, "Closed")),
        ("2026-02-03", "delete", site(2, "Open")),
        ("2026-02-10", "insert", site(4, "Open")),
        ("2026-02-28 23:59:59.999999", "update", site(3, "Open")),
        ("2026-03-01", "restore", site(2, "Open")),
        ("2026-03-15", "update", site(3, "Suspended")),
        # Still suspended, another field changed: not a new suspension.
        ("2026-03-20", "update", site(3, "Suspended", company="Renamed")),
    ):
        write(engine, at(day), "sites", action, record)
    theirs = site(1, "Open")
    write(
        engine, at("2026-02-28 23:59:59.999999"), "sites", "insert", theirs, partner=OTHER_PARTNER
    )
    write(engine, at("2026-03-01"), "sites", "delete", theirs, partner=OTHER_PARTNER)

    rows = doc_query(engine, backend, SITE_CHURN)

    assert rows == [
        # partner, month, added, suspended, closed, removed
        (PARTNER, "2026-01", 3, 1, 0, 0),
        (PARTNER, "2026-02", 1, 0, 1, 1),
        (PARTNER, "2026-03", 1, 1, 0, 0),
        (OTHER_PARTNER, "2026-02", 1, 0, 0, 0),
        (OTHER_PARTNER, "2026-03", 0, 0, 0, 1),
    ]


def test_docs_plan_mix_query(engine: Engine, backend: str) -> None:
    plans = REGISTRY["plans"]
    for number, group, enabled in (
        (1, "Standard", True),
        (2, "Standard", True),
        (3, "Standard", False),
        (4, "Enterprise", True),
        (5, "Enterprise", True),
    ):
        record = sample(plans, number, groupName=group, isEnabled=enabled)
        write(engine, T0, "plans", "insert", record)
    write(engine, T1, "plans", "delete", sample(plans, 5))
    theirs = sample(plans, 1, groupName="Standard")
    write(engine, T0, "plans", "insert", theirs, partner=OTHER_PARTNER)

    rows = doc_query(engine, backend, PLAN_MIX)

    assert [(partner, group, bool(enabled), n) for partner, group, enabled, n in rows] == [
        (PARTNER, "Enterprise", True, 1),
        (PARTNER, "Standard", False, 1),
        (PARTNER, "Standard", True, 2),
        (OTHER_PARTNER, "Standard", True, 1),
    ]


def test_docs_agents_per_site_query(engine: Engine, backend: str) -> None:
    """Removed agents and removed sites do not count; a site without agents shows 0."""
    agents = REGISTRY["agents"]
    for site_id, status in (
        (10001, "Open"),
        (10002, "Suspended"),
        (10003, "Closed"),
        (10004, "Open"),
    ):
        write(engine, T0, "sites", "insert", site(site_id, status))
    write(engine, T1, "sites", "delete", site(10004, "Open"))
    for site_id, number, active in (
        (10001, 1, True),
        (10001, 2, True),
        (10001, 3, False),
        (10001, 4, True),
        (10002, 1, True),
        (10004, 1, True),
    ):
        write(engine, T0, "agents", "insert", sample(agents, number, isActive=active), site=site_id)
    write(engine, T1, "agents", "delete", sample(agents, 4), site=10001)

    rows = doc_query(engine, backend, AGENTS_PER_SITE)

    assert rows == [
        (PARTNER, 10001, "Company 10001", "Open", 3, 2),
        (PARTNER, 10002, "Company 10002", "Suspended", 1, 1),
        (PARTNER, 10003, "Company 10003", "Closed", 0, 0),
    ]


def test_docs_what_changed_in_the_last_7_days_query(engine: Engine, backend: str) -> None:
    """Every list in one result; plans' icon-only updates are left out, other updates kept."""
    now = datetime.now(UTC)
    plan = sample(REGISTRY["plans"], 1, icon="https://files.example/1.png?Signature=a")
    agent = sample(REGISTRY["agents"], 1)
    department = sample(REGISTRY["departments"], 1)
    write(engine, now - timedelta(days=30), "sites", "insert", site(10001, "Open"))
    write(engine, now - timedelta(days=30), "plans", "insert", plan)
    write(engine, now - timedelta(days=30), "departments", "insert", department, site=10001)
    resigned = {**plan, "icon": "https://files.example/1.png?Signature=b"}
    write(engine, now - timedelta(days=6), "agents", "insert", agent, site=10001)
    write(engine, now - timedelta(days=5), "plans", "update", resigned)
    write(engine, now - timedelta(days=4), "plans", "update", {**resigned, "name": "Starter"})
    write(engine, now - timedelta(days=3), "sites", "update", site(10001, "Suspended"))
    write(engine, now - timedelta(days=2), "departments", "delete", department, site=10001)

    rows = doc_query(engine, backend, ALL_CHANGED_LAST_7_DAYS)

    assert [(*row[1:6], as_json(row[6])) for row in rows] == [
        ("departments", PARTNER, 10001, department["id"], "delete", sorted(department)),
        ("sites", PARTNER, None, "10001", "update", ["status"]),
        ("plans", PARTNER, None, "1", "update", ["name"]),
        ("agents", PARTNER, 10001, agent["id"], "insert", sorted(agent)),
    ]


def test_docs_sites_live_on_a_date_query(engine: Engine, backend: str) -> None:
    """Suspended and one removed before 2026-03-01, restored just after: the status then."""
    write(engine, at("2026-02-01"), "sites", "insert", site(1, "Open"))
    write(engine, at("2026-02-01"), "sites", "insert", site(2, "Open"))
    write(engine, at("2026-02-28 23:59:59.999999"), "sites", "update", site(1, "Suspended"))
    write(engine, at("2026-02-28 23:59:59.999999"), "sites", "delete", site(2, "Open"))
    write(engine, at("2026-03-01 00:00:00.000001"), "sites", "restore", site(2, "Open"))
    write(engine, at("2026-03-01"), "sites", "insert", site(3, "Open"), partner=OTHER_PARTNER)

    rows = doc_query(engine, backend, SITES_ON_A_DATE)

    # The other partner's site started at that very instant: valid_from <= D includes it.
    assert rows == [(PARTNER, 1, "Suspended", "Company 1"), (OTHER_PARTNER, 3, "Open", "Company 3")]
