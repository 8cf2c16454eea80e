"""The BI views of migration 0002: platforms_current and platform_history, on every backend."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync import store
from sync.emulator import DEFAULT_PARTNER_ID, Emulator
from sync.job import CycleOptions, RunResult, run_once
from sync.migrate import upgrade
from sync.resources import PLATFORMS
from sync.schema import SCHEMA_REVISION, UTCDateTime, json_type
from sync.settings import Settings, load
from sync.store import create_engine, current_revision
from sync.wiring import build_client
from tests.records import parse_platform_list

pytestmark = pytest.mark.db

PARTNER = DEFAULT_PARTNER_ID
OTHER_PARTNER = "20000"
T0 = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
T2 = T1 + timedelta(minutes=5)
T3 = T2 + timedelta(minutes=5)
# The other partner's changes fall between ours, so a window that ignored partner_id would
# let them end our versions.
OTHER_INSERT = T0 + timedelta(minutes=1)
OTHER_DELETE = T2 + timedelta(minutes=1)
US = {"id": 100, "name": "US"}
# Unknown fields are kept in raw; quotes and non-ASCII check that name is unquoted JSON text.
US_RENAMED = {"id": 100, "name": 'United States "Ü"', "region": "na"}
EU = {"id": 200, "name": "EU"}
EU_RESTORED = {"id": 200, "name": "Europe"}
AU = {"id": 300, "name": "AU"}
# insert US, EU → rename US, insert AU → remove EU → restore EU under a new name
TIMELINE = (
    (T0, [US, EU]),
    (T1, [US_RENAMED, EU, AU]),
    (T2, [US_RENAMED, AU]),
    (T3, [US_RENAMED, EU_RESTORED, AU]),
)

_views = sa.MetaData()
platforms_current = sa.Table(
    "platforms_current",
    _views,
    sa.Column("partner_id", sa.String),
    sa.Column("id", sa.BigInteger),
    sa.Column("name", sa.Text),
    sa.Column("raw", json_type()),
    sa.Column("first_seen_at", UTCDateTime()),
    sa.Column("updated_at", UTCDateTime()),
)
platform_history = sa.Table(
    "platform_history",
    _views,
    sa.Column("partner_id", sa.String),
    sa.Column("platform_id", sa.BigInteger),
    sa.Column("name", sa.Text),
    sa.Column("raw", json_type()),
    sa.Column("valid_from", UTCDateTime()),
    sa.Column("valid_to", UTCDateTime()),
    sa.Column("started_by", sa.String),
    sa.Column("ended_by", sa.String),
    sa.Column("run_id", sa.BigInteger),
    sa.Column("audit_id", sa.BigInteger),
)
# The query README's "For BI" section gives dashboards, as plain SQL.
AS_OF = sa.text(
    "SELECT platform_id, name FROM platform_history "
    "WHERE partner_id = :partner AND valid_from <= :instant "
    "AND (valid_to IS NULL OR valid_to > :instant)"
).bindparams(sa.bindparam("instant", type_=UTCDateTime()))


def as_json(value: Any) -> Any:
    """A JSON column read through a view: decoded already, or text on dialects without JSON."""
    return json.loads(value) if isinstance(value, str) else value


@pytest.fixture
def sync_cycle(engine: Engine, emulator: Emulator) -> Callable[[datetime, list[Any]], RunResult]:
    """Run one real cycle (token, lock, fetch, write) against the emulator at a given instant."""
    settings: Settings = load(
        Settings,
        client_id=emulator.client_id,
        email=emulator.email,
        password=emulator.password,
        auth_url=emulator.auth_url,
        api_url=emulator.api_url,
    )
    client = build_client(settings, engine)
    options = CycleOptions(max_delete_fraction=1.0, lock_wait_seconds=1.0)

    def cycle(at: datetime, objects: list[Any]) -> RunResult:
        emulator.set_platforms(objects)
        result = run_once(engine, client, options, now=lambda: at)
        assert result.status == "success", result.error
        assert result.partner_id == PARTNER
        return result

    return cycle


def sync_other_partner(engine: Engine, at: datetime, objects: list[Any]) -> None:
    """Write a snapshot for a second partner, with the same platform ids as ours."""
    run_id = store.start_run(engine, resource=PLATFORMS.name, partner_id=OTHER_PARTNER, now=at)
    store.apply_snapshot(
        engine,
        PLATFORMS,
        run_id=run_id,
        partner_id=OTHER_PARTNER,
        records=parse_platform_list(json.dumps(objects).encode()),
        now=at,
        max_delete_fraction=1.0,
    )


def platforms_as_of(engine: Engine, instant: datetime, partner: str = PARTNER) -> dict[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(AS_OF, {"partner": partner, "instant": instant})
        return {platform_id: name for platform_id, name in rows}


def current(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = sa.select(platforms_current).order_by(
            platforms_current.c.partner_id, platforms_current.c.id
        )
        return [dict(row) for row in conn.execute(query).mappings()]


def history(engine: Engine, partner: str = PARTNER) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = (
            sa.select(platform_history)
            .where(platform_history.c.partner_id == partner)
            .order_by(platform_history.c.platform_id, platform_history.c.valid_from)
        )
        return [dict(row) for row in conn.execute(query).mappings()]


def test_platforms_current_holds_only_live_rows(engine: Engine, sync_cycle: Any) -> None:
    sync_cycle(T0, [US, EU, AU])
    sync_cycle(T1, [US_RENAMED, AU])

    rows = current(engine)

    assert [(row["id"], row["name"]) for row in rows] == [
        (100, US_RENAMED["name"]),
        (300, "AU"),
    ]
    assert as_json(rows[0]["raw"]) == US_RENAMED
    assert rows[0]["first_seen_at"] == T0
    assert rows[0]["updated_at"] == T1
    assert rows[1]["updated_at"] == T0
    with engine.connect() as conn:
        # The removed platform is still in the table, soft-deleted: only the view hides it.
        assert conn.execute(sa.text("SELECT count(*) FROM platforms")).scalar() == 3


def test_platforms_current_shows_a_restored_platform_again(engine: Engine, sync_cycle: Any) -> None:
    sync_cycle(T0, [US, EU])
    sync_cycle(T1, [US])
    assert [row["id"] for row in current(engine)] == [100]

    sync_cycle(T2, [US, EU_RESTORED])

    assert [(row["id"], row["name"]) for row in current(engine)] == [
        (100, "US"),
        (200, "Europe"),
    ]


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        pytest.param(T0 - timedelta(microseconds=1), {}, id="before-the-first-cycle"),
        pytest.param(T0, {100: "US", 200: "EU"}, id="at-the-insert"),
        pytest.param(T1 - timedelta(seconds=1), {100: "US", 200: "EU"}, id="before-the-rename"),
        pytest.param(T1, {100: US_RENAMED["name"], 200: "EU", 300: "AU"}, id="at-the-rename"),
        pytest.param(
            T2 - timedelta(microseconds=1),
            {100: US_RENAMED["name"], 200: "EU", 300: "AU"},
            id="before-the-removal",
        ),
        pytest.param(T2, {100: US_RENAMED["name"], 300: "AU"}, id="at-the-removal"),
        pytest.param(OTHER_DELETE, {100: US_RENAMED["name"], 300: "AU"}, id="while-removed"),
        pytest.param(T3, {100: US_RENAMED["name"], 200: "Europe", 300: "AU"}, id="at-the-restore"),
        pytest.param(
            T3 + timedelta(days=365),
            {100: US_RENAMED["name"], 200: "Europe", 300: "AU"},
            id="long-after",
        ),
    ],
)
def test_platform_history_answers_which_platforms_a_partner_had_at_an_instant(
    engine: Engine, sync_cycle: Any, instant: datetime, expected: dict[int, str]
) -> None:
    """The README's plain WHERE over valid_from/valid_to gives the list as it was at `instant`."""
    sync_other_partner(engine, OTHER_INSERT, [{"id": 100, "name": "Other"}, AU])
    for at, objects in TIMELINE:
        sync_cycle(at, objects)
    sync_other_partner(engine, OTHER_DELETE, [])

    assert platforms_as_of(engine, instant) == expected


def test_platform_history_has_one_row_per_version(engine: Engine, sync_cycle: Any) -> None:
    """Insert, rename, removal and restore: a removal ends a version, a restore starts one."""
    results = [sync_cycle(at, objects) for at, objects in TIMELINE]
    run = [result.run_id for result in results]

    versions = [
        (
            row["platform_id"],
            row["name"],
            row["valid_from"],
            row["valid_to"],
            row["started_by"],
            row["ended_by"],
            row["run_id"],
        )
        for row in history(engine)
    ]

    assert versions == [
        (100, "US", T0, T1, "insert", "update", run[0]),
        (100, US_RENAMED["name"], T1, None, "update", None, run[1]),
        (200, "EU", T0, T2, "insert", "delete", run[0]),
        (200, "Europe", T3, None, "restore", None, run[3]),
        (300, "AU", T1, None, "insert", None, run[1]),
    ]


def test_platform_history_keeps_each_version_as_received(engine: Engine, sync_cycle: Any) -> None:
    for at, objects in TIMELINE[:2]:
        sync_cycle(at, objects)

    raws = {(row["platform_id"], row["valid_from"]): as_json(row["raw"]) for row in history(engine)}

    assert raws == {(100, T0): US, (100, T1): US_RENAMED, (200, T0): EU, (300, T1): AU}


def test_platform_history_keeps_partners_apart(engine: Engine, sync_cycle: Any) -> None:
    """Another partner's changes to the same platform id never end our versions."""
    sync_cycle(T0, [US])
    sync_other_partner(engine, OTHER_INSERT, [{"id": 100, "name": "Other"}])
    sync_other_partner(engine, OTHER_DELETE, [])

    ours = [(row["name"], row["valid_to"]) for row in history(engine)]
    theirs = [(row["name"], row["valid_to"]) for row in history(engine, OTHER_PARTNER)]

    assert ours == [("US", None)]
    assert theirs == [("Other", OTHER_DELETE)]
    assert platforms_as_of(engine, OTHER_INSERT, OTHER_PARTNER) == {100: "Other"}
    assert platforms_as_of(engine, OTHER_DELETE, OTHER_PARTNER) == {}


def test_current_versions_in_history_match_platforms_current(
    engine: Engine, sync_cycle: Any
) -> None:
    """The open versions (valid_to NULL) are exactly the live rows, names and documents alike."""
    for at, objects in TIMELINE:
        sync_cycle(at, objects)

    live = {(row["id"], row["name"], json.dumps(as_json(row["raw"]))) for row in current(engine)}
    open_versions = {
        (row["platform_id"], row["name"], json.dumps(as_json(row["raw"])))
        for row in history(engine)
        if row["valid_to"] is None
    }

    assert open_versions == live
    assert len(live) == 3


# --------------------------------------------------------------------------- migration 0002

VIEWS = {"platforms_current", "platform_history"}
INDEXES_0002 = {
    ("platform_audit", "ix_platform_audit_partner_id_changed_at"),
    ("sync_runs", "ix_sync_runs_resource_status_finished_at"),
}


def views_and_indexes(engine: Engine) -> tuple[set[str], set[tuple[str, str]]]:
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        indexes = {
            (table, str(index["name"]))
            for table in ("platform_audit", "sync_runs")
            for index in inspector.get_indexes(table)
        }
        return set(inspector.get_view_names()), indexes


def alembic(engine: Engine, action: str, revision: str) -> None:
    """`alembic upgrade|downgrade revision` on `engine`, with the shipped scripts."""
    from alembic import command
    from alembic.config import Config

    from sync.migrate import script_location

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)


def test_downgrade_to_0001_drops_the_views_and_indexes_and_upgrade_brings_them_back(
    empty_database_url: str,
) -> None:
    engine = create_engine(empty_database_url)
    try:
        upgrade(engine)
        views, indexes = views_and_indexes(engine)
        assert views >= VIEWS  # the full set at head: test_migrations.VIEWS_AT_HEAD
        assert indexes >= INDEXES_0002

        alembic(engine, "downgrade", "0001")

        views, indexes = views_and_indexes(engine)
        assert views == set()
        assert not INDEXES_0002 & indexes
        assert current_revision(engine) == "0001"

        upgrade(engine)

        assert views_and_indexes(engine)[0] >= VIEWS
        assert current_revision(engine) == SCHEMA_REVISION
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- README's queries

# README "For BI": the example queries for PostgreSQL, verbatim.
CURRENT_PLATFORMS = """\
SELECT partner_id, id, name, updated_at
FROM platforms_current
ORDER BY partner_id, name;"""
CHANGED_LAST_7_DAYS = """\
SELECT changed_at, partner_id, platform_id, action,
       old_values ->> 'name' AS old_name, new_values ->> 'name' AS new_name
FROM platform_audit
WHERE changed_at >= now() - INTERVAL '7 days'
ORDER BY changed_at DESC, platform_id;"""
AS_OF_A_DATE = """\
SELECT partner_id, platform_id, name
FROM platform_history
WHERE valid_from <= TIMESTAMPTZ '2026-03-01 00:00:00+00'
  AND (valid_to IS NULL OR valid_to > TIMESTAMPTZ '2026-03-01 00:00:00+00')
ORDER BY partner_id, platform_id;"""
# The differences README lists for the other databases: PostgreSQL text → replacement.
DIALECT_CHANGES = {
    "postgresql": {},
    "mariadb": {
        "now() - INTERVAL '7 days'": "UTC_TIMESTAMP() - INTERVAL 7 DAY",
        "old_values ->> 'name'": "JSON_UNQUOTE(JSON_EXTRACT(old_values, '$.name'))",
        "new_values ->> 'name'": "JSON_UNQUOTE(JSON_EXTRACT(new_values, '$.name'))",
        "TIMESTAMPTZ '2026-03-01 00:00:00+00'": "'2026-03-01 00:00:00'",
    },
    "sqlite": {
        "now() - INTERVAL '7 days'": "datetime('now', '-7 days')",
        "old_values ->> 'name'": "json_extract(old_values, '$.name')",
        "new_values ->> 'name'": "json_extract(new_values, '$.name')",
        "TIMESTAMPTZ '2026-03-01 00:00:00+00'": "'2026-03-01 00:00:00.000000'",
    },
}
README = Path(__file__).resolve().parents[2] / "docs" / "bi.md"


def readme_query(engine: Engine, backend: str, query: str) -> list[tuple[Any, ...]]:
    """Run README's PostgreSQL `query` as README tells users of `backend` to change it."""
    for postgresql, replacement in DIALECT_CHANGES[backend].items():
        query = query.replace(postgresql, replacement)
    with engine.connect() as conn:
        return [tuple(row) for row in conn.exec_driver_sql(query.rstrip(";"))]


def test_readme_shows_the_queries_and_the_dialect_differences_tested_here() -> None:
    text = README.read_text()
    for query in (CURRENT_PLATFORMS, CHANGED_LAST_7_DAYS, AS_OF_A_DATE):
        assert query in text
    # README spells each replacement once, for old_values.
    for changes in DIALECT_CHANGES.values():
        for replacement in changes.values():
            assert replacement.replace("new_values", "old_values") in text


def test_readme_current_platforms_query(engine: Engine, backend: str, sync_cycle: Any) -> None:
    sync_cycle(T0, [US, EU, AU])
    sync_cycle(T1, [US, AU])

    rows = readme_query(engine, backend, CURRENT_PLATFORMS)

    assert [(partner, key, name) for partner, key, name, _updated in rows] == [
        (PARTNER, 300, "AU"),
        (PARTNER, 100, "US"),
    ]
    assert all(updated is not None for *_rest, updated in rows)


def test_readme_what_changed_in_the_last_7_days_query(
    engine: Engine, backend: str, sync_cycle: Any
) -> None:
    now = datetime.now(UTC)
    sync_cycle(now - timedelta(days=30), [US, EU])
    sync_cycle(now - timedelta(days=3), [US_RENAMED, EU])
    sync_cycle(now - timedelta(days=1), [US_RENAMED])

    rows = readme_query(engine, backend, CHANGED_LAST_7_DAYS)

    assert [(partner, key, action, old, new) for _at, partner, key, action, old, new in rows] == [
        (PARTNER, 200, "delete", "EU", None),
        (PARTNER, 100, "update", "US", US_RENAMED["name"]),
    ]


def test_readme_platform_list_as_of_a_date_query(
    engine: Engine, backend: str, sync_cycle: Any
) -> None:
    """Renamed and removed before 2026-03-01, restored just after: the rename alone is there."""
    sync_cycle(datetime(2026, 2, 27, tzinfo=UTC), [US, EU])
    sync_cycle(datetime(2026, 2, 28, 23, 59, 59, 999999, tzinfo=UTC), [US_RENAMED])
    sync_cycle(datetime(2026, 3, 1, 0, 0, 0, 1, tzinfo=UTC), [US_RENAMED, EU_RESTORED])
    sync_other_partner(engine, datetime(2026, 3, 1, tzinfo=UTC), [AU])

    rows = readme_query(engine, backend, AS_OF_A_DATE)

    # The other partner's platform started at that very instant: valid_from <= D includes it.
    assert rows == [(PARTNER, 100, US_RENAMED["name"]), (OTHER_PARTNER, 300, "AU")]
