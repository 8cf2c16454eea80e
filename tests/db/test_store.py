"""apply_snapshot: the platforms table, its audit trail and the run row, on every backend."""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from sync import store
from sync.errors import SafetyLimitError, StoreError
from sync.models import Record
from sync.resources import PLATFORMS
from sync.schema import platform_audit, platforms, sync_state
from sync.store.snapshot import BATCH_SIZE
from tests.records import parse_platform_list

from .tables import contents, runs, synced_tables

pytestmark = pytest.mark.db

PARTNER = "10000"
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
T2 = T1 + timedelta(minutes=5)
T3 = T2 + timedelta(minutes=5)
US = {"id": 100, "name": "US"}
EU = {"id": 200, "name": "EU"}
AU = {"id": 300, "name": "AU"}
JP = {"id": 400, "name": "JP"}


def records(objects: list[dict[str, Any]]) -> list[Record]:
    return parse_platform_list(json.dumps(objects).encode())


def sync(
    engine: Engine,
    objects: list[dict[str, Any]],
    *,
    now: datetime,
    partner: str = PARTNER,
    max_delete_fraction: float = 1.0,
) -> int:
    """Start a run and apply `objects` as its snapshot, as the job does; returns the run id."""
    run_id = store.start_run(engine, resource=PLATFORMS.name, partner_id=partner, now=now)
    store.apply_snapshot(
        engine,
        PLATFORMS,
        run_id=run_id,
        partner_id=partner,
        records=records(objects),
        now=now,
        max_delete_fraction=max_delete_fraction,
    )
    return run_id


def rows_by_id(engine: Engine, partner: str = PARTNER) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in contents(engine, platforms) if row["partner_id"] == partner}


def audit_of(engine: Engine, run_id: int) -> list[dict[str, Any]]:
    return [row for row in contents(engine, platform_audit) if row["run_id"] == run_id]


def run_row(engine: Engine, run_id: int) -> dict[str, Any]:
    (row,) = [row for row in runs(engine) if row["id"] == run_id]
    return row


def count_sql_nulls(engine: Engine, column: sa.Column[Any]) -> int:
    """Rows whose `column` IS NULL in SQL (a JSON 'null' document does not count)."""
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(column.table).where(column.is_(None))
        return int(conn.execute(query).scalar_one())


@contextmanager
def recorded_statements(engine: Engine) -> Iterator[list[str]]:
    """Collect the SQL text of every statement the engine sends while the block runs."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_first_snapshot_inserts_each_platform_as_received_and_audits_the_insert(
    engine: Engine,
) -> None:
    """Unknown fields, non-ASCII text and ids beyond 2**53 survive in `raw` and the audit."""
    odd = {
        "id": 2**53 + 1,
        "name": "Montréal 東京 🚀",
        "region": "ca-east",
        "meta": {"tags": ["a", "b"], "weight": 2.5, "beta": True, "owner": None},
    }
    run_id = sync(engine, [US, odd], now=T0)

    rows = rows_by_id(engine)
    assert sorted(rows) == [US["id"], odd["id"]]
    assert rows[odd["id"]]["name"] == odd["name"]
    assert rows[odd["id"]]["raw"] == odd
    for row in rows.values():
        assert (row["first_seen_at"], row["updated_at"], row["deleted_at"]) == (T0, T0, None)
    audit = audit_of(engine, run_id)
    assert [(a["platform_id"], a["action"]) for a in audit] == [
        (US["id"], "insert"),
        (odd["id"], "insert"),
    ]
    assert [a["new_values"] for a in audit] == [US, odd]
    assert all(a["partner_id"] == PARTNER and a["changed_at"] == T0 for a in audit)
    assert count_sql_nulls(engine, platform_audit.c.old_values) == 2


def test_rename_is_an_update_audited_with_old_and_new_values(engine: Engine) -> None:
    sync(engine, [US, EU], now=T0)
    renamed = {**US, "name": "United States"}

    run_id = sync(engine, [renamed, EU], now=T1)

    rows = rows_by_id(engine)
    assert rows[US["id"]]["name"] == "United States"
    assert rows[US["id"]]["raw"] == renamed
    assert (rows[US["id"]]["first_seen_at"], rows[US["id"]]["updated_at"]) == (T0, T1)
    assert rows[EU["id"]]["updated_at"] == T0
    (audit,) = audit_of(engine, run_id)
    assert audit["platform_id"] == US["id"]
    assert audit["action"] == "update"
    assert (audit["old_values"], audit["new_values"]) == (US, renamed)


def test_removal_soft_deletes_the_row_and_audits_the_delete(engine: Engine) -> None:
    sync(engine, [US, EU], now=T0)

    run_id = sync(engine, [US], now=T1)

    rows = rows_by_id(engine)
    assert sorted(rows) == [US["id"], EU["id"]]
    assert rows[EU["id"]]["deleted_at"] == T1
    assert rows[EU["id"]]["raw"] == EU
    assert rows[US["id"]]["deleted_at"] is None
    (audit,) = audit_of(engine, run_id)
    assert (audit["platform_id"], audit["action"]) == (EU["id"], "delete")
    assert audit["old_values"] == EU
    assert count_sql_nulls(engine, platform_audit.c.new_values) == 1


def test_reappearance_restores_the_row_and_audits_the_restore(engine: Engine) -> None:
    sync(engine, [US, EU], now=T0)
    sync(engine, [US], now=T1)

    run_id = sync(engine, [US, EU], now=T2)

    row = rows_by_id(engine)[EU["id"]]
    assert row["deleted_at"] is None
    assert (row["first_seen_at"], row["updated_at"]) == (T0, T2)
    (audit,) = audit_of(engine, run_id)
    assert (audit["platform_id"], audit["action"]) == (EU["id"], "restore")
    assert (audit["old_values"], audit["new_values"]) == (EU, EU)


def test_unchanged_snapshot_writes_only_its_run_row(engine: Engine) -> None:
    """Same objects (keys in another order): no audit row, no rewrite, updated_at untouched."""
    sync(engine, [US, EU, AU, JP], now=T0)
    sync(engine, [US, EU, AU], now=T1)
    tables_before, runs_before = synced_tables(engine), runs(engine)
    fence_before = contents(engine, sync_state)
    reordered = [{"name": o["name"], "id": o["id"]} for o in (AU, US, EU)]
    run_id = store.start_run(engine, resource=PLATFORMS.name, partner_id=PARTNER, now=T2)

    with recorded_statements(engine) as statements:
        store.apply_snapshot(
            engine,
            PLATFORMS,
            run_id=run_id,
            partner_id=PARTNER,
            records=records(reordered),
            now=T2,
            max_delete_fraction=1.0,
        )

    assert synced_tables(engine) == tables_before
    assert contents(engine, sync_state) == fence_before
    writes = [s for s in statements if s.split()[0] in ("INSERT", "UPDATE", "DELETE")]
    # The fence only creates its row if missing; it exists after the earlier syncs.
    fence = [s for s in writes if s.startswith("INSERT INTO sync_state ")]
    assert len(fence) == 1
    assert all(s.startswith("UPDATE sync_runs ") for s in writes if s not in fence)
    assert runs(engine)[: len(runs_before)] == runs_before
    run = run_row(engine, run_id)
    assert (run["status"], run["fetched"], run["unchanged"]) == ("success", 3, 3)
    assert run["inserted"] + run["updated"] + run["deleted"] + run["restored"] == 0


def test_run_row_counts_equal_the_audit_rows_of_the_run(engine: Engine) -> None:
    sync(engine, [US, EU, AU, JP], now=T0)
    sync(engine, [US, EU, AU], now=T1)
    new = {"id": 500, "name": "SG"}

    run_id = sync(engine, [{**US, "name": "USA"}, AU, JP, new], now=T2)

    audit = audit_of(engine, run_id)
    assert {(a["platform_id"], a["action"]) for a in audit} == {
        (US["id"], "update"),
        (EU["id"], "delete"),
        (JP["id"], "restore"),
        (new["id"], "insert"),
    }
    actions = Counter(a["action"] for a in audit)
    run = run_row(engine, run_id)
    assert (run["status"], run["finished_at"], run["error"]) == ("success", T2, None)
    assert run["fetched"] == 4
    assert run["unchanged"] == 1
    assert {k: run[k] for k in ("inserted", "updated", "deleted", "restored")} == {
        "inserted": actions["insert"],
        "updated": actions["update"],
        "deleted": actions["delete"],
        "restored": actions["restore"],
    }


def test_delete_above_the_fraction_raises_and_leaves_the_tables_untouched(
    engine: Engine,
) -> None:
    """The store refuses and writes nothing; closing the run row is the job's business."""
    sync(engine, [US, EU, AU, JP], now=T0)
    before = synced_tables(engine)
    run_id = store.start_run(engine, resource=PLATFORMS.name, partner_id=PARTNER, now=T1)

    with pytest.raises(SafetyLimitError, match="3 of 4"):
        store.apply_snapshot(
            engine,
            PLATFORMS,
            run_id=run_id,
            partner_id=PARTNER,
            records=records([{**US, "name": "USA"}, {"id": 500, "name": "SG"}]),
            now=T1,
            max_delete_fraction=0.5,
        )

    assert synced_tables(engine) == before
    run = run_row(engine, run_id)
    assert (run["status"], run["finished_at"]) == ("running", None)


def test_delete_of_exactly_the_fraction_is_allowed(engine: Engine) -> None:
    sync(engine, [US, EU, AU, JP], now=T0)

    run_id = sync(engine, [US, EU], now=T1, max_delete_fraction=0.5)

    assert run_row(engine, run_id)["deleted"] == 2


@pytest.fixture
def india_time() -> Iterator[None]:
    """The process runs at UTC+05:30 (POSIX TZ string: no tz database needed)."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "IST-5:30"
    time.tzset()
    assert time.localtime().tm_gmtoff == 5 * 3600 + 30 * 60
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_timestamps_are_stored_as_utc_and_come_back_timezone_aware(
    engine: Engine, india_time: None
) -> None:
    """Given in any zone, read back tagged UTC; a plain SQL reader sees UTC wall time."""
    tokyo = timezone(timedelta(hours=9))
    first = datetime(2026, 3, 2, 8, 15, 30, 654321, tzinfo=tokyo)
    later = first + timedelta(hours=1)
    run_id = sync(engine, [US, EU], now=first)
    sync(engine, [US], now=later)

    values = [
        *(rows_by_id(engine)[EU["id"]][c] for c in ("first_seen_at", "updated_at", "deleted_at")),
        run_row(engine, run_id)["started_at"],
        run_row(engine, run_id)["finished_at"],
        audit_of(engine, run_id)[0]["changed_at"],
    ]

    assert values == [first, later, later, first, first, first]
    assert all(v.utcoffset() == timedelta(0) for v in values)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT first_seen_at FROM platforms WHERE id = :id"), {"id": EU["id"]}
        ).scalar_one()
    if isinstance(stored, str):  # SQLite keeps text
        stored = datetime.fromisoformat(stored)
    if stored.tzinfo is None:  # SQLite, MariaDB: the wall time must be UTC's
        assert stored == first.astimezone(UTC).replace(tzinfo=None)
    else:  # PostgreSQL timestamptz
        assert stored == first


def test_two_partners_rows_are_independent(engine: Engine) -> None:
    """The same id lives under each partner; one partner's cycle never touches the other's rows."""
    sync(engine, [US, EU], now=T0, partner="A")
    sync(engine, [{**US, "name": "B's US"}, AU], now=T0, partner="B")
    b_before = rows_by_id(engine, "B")

    run_id = sync(engine, [], now=T1, partner="A")

    assert all(row["deleted_at"] == T1 for row in rows_by_id(engine, "A").values())
    assert rows_by_id(engine, "B") == b_before
    assert {a["partner_id"] for a in audit_of(engine, run_id)} == {"A"}
    b_run = sync(engine, [{**US, "name": "B's US"}, AU], now=T2, partner="B")
    assert audit_of(engine, b_run) == []
    assert run_row(engine, b_run)["unchanged"] == 2


@pytest.mark.parametrize(
    ("failing", "table"),
    [
        (("INSERT INTO platform_audit", "COPY platform_audit"), "platform_audit"),
        (("UPDATE sync_runs",), "sync_runs"),
    ],
    ids=["audit-insert", "run-update"],
)
def test_failure_in_the_middle_of_the_write_rolls_back_everything(
    failing: tuple[str, ...], table: str, engine: Engine
) -> None:
    """The table was already written when a later statement fails: none of it survives."""
    sync(engine, [US, EU, AU], now=T0)
    before = synced_tables(engine)
    run_id = store.start_run(engine, resource=PLATFORMS.name, partner_id=PARTNER, now=T1)
    sent: list[str] = []

    def break_statement(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any
    ) -> tuple[str, Any]:
        sent.append(" ".join(statement.split()[:3]))
        if statement.startswith(failing):
            statement = statement.replace(table, "no_such_table", 1)
        return statement, parameters

    event.listen(engine, "before_cursor_execute", break_statement, retval=True)
    try:
        with pytest.raises(StoreError, match="writing platforms"):
            store.apply_snapshot(
                engine,
                PLATFORMS,
                run_id=run_id,
                partner_id=PARTNER,
                records=records([{**US, "name": "USA"}, EU, JP]),
                now=T1,
                max_delete_fraction=1.0,
            )
    finally:
        event.remove(engine, "before_cursor_execute", break_statement)

    assert "INSERT INTO platforms" in sent and "UPDATE platforms SET" in sent
    assert any(statement.startswith(failing) for statement in sent)
    assert synced_tables(engine) == before
    run = run_row(engine, run_id)
    assert (run["status"], run["finished_at"]) == ("running", None)


def numbered(count: int, suffix: str = "") -> list[dict[str, Any]]:
    return [{"id": i, "name": f"platform {i}{suffix}"} for i in range(1, count + 1)]


def test_snapshot_larger_than_a_batch_is_written_completely(engine: Engine) -> None:
    count = 2500
    assert count > 2 * BATCH_SIZE
    inserted = sync(engine, numbered(count), now=T0)
    updated = sync(engine, numbered(count, " v2"), now=T1)
    deleted = sync(engine, [], now=T2)

    for run_id, action in ((inserted, "insert"), (updated, "update"), (deleted, "delete")):
        assert Counter(a["action"] for a in audit_of(engine, run_id)) == {action: count}
    update_audit = {a["platform_id"]: a for a in audit_of(engine, updated)}
    for key in (1, BATCH_SIZE + 1, count):
        assert update_audit[key]["old_values"] == {"id": key, "name": f"platform {key}"}
        assert update_audit[key]["new_values"] == {"id": key, "name": f"platform {key} v2"}
    rows = rows_by_id(engine)
    assert len(rows) == count
    assert all(r["deleted_at"] == T2 and r["name"].endswith(" v2") for r in rows.values())


def statement_kinds(
    engine: Engine, snapshots: list[list[dict[str, Any]]], partner: str
) -> list[Counter[str]]:
    """For each snapshot in turn: how many statements of each kind its cycle sent."""
    kinds = []
    for minutes, objects in enumerate(snapshots):
        now = T0 + timedelta(minutes=minutes)
        run_id = store.start_run(engine, resource=PLATFORMS.name, partner_id=partner, now=now)
        with recorded_statements(engine) as statements:
            store.apply_snapshot(
                engine,
                PLATFORMS,
                run_id=run_id,
                partner_id=partner,
                records=records(objects),
                now=now,
                max_delete_fraction=1.0,
            )
        kinds.append(Counter(" ".join(s.split()[:3]) for s in statements))
    return kinds


def test_statements_per_cycle_grow_with_batches_not_with_rows(engine: Engine) -> None:
    """A 3,000-row cycle repeats a 3-row cycle's statements at most once per BATCH_SIZE rows."""

    def cycles(count: int) -> list[list[dict[str, Any]]]:
        third = count // 3
        first = numbered(count)
        renamed_deleted = numbered(third, " v2") + first[2 * third :]
        restored = numbered(third, " v2") + first[third:]
        return [first, renamed_deleted, restored, restored]

    small = statement_kinds(engine, cycles(3), "small")
    large = statement_kinds(engine, cycles(3000), "large")

    batches = math.ceil(3000 / BATCH_SIZE)
    for few, many in zip(small, large, strict=True):
        assert set(many) == set(few)
        assert all(many[kind] <= batches * few[kind] for kind in few), (few, many)
    assert sum(large[-1].values()) == sum(small[-1].values())
