"""run_once end to end against the emulator: tables, audit trail and run rows on every backend."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync import store
from sync.emulator import (
    DEFAULT_PARTNER_ID,
    DEFAULT_PLATFORMS,
    Emulator,
    Fault,
)
from sync.errors import EX_CONFIG, EX_DATAERR, EX_NOPERM, EX_OK, EX_TEMPFAIL, PayloadError
from sync.job import RunResult, Upkeep, lock_name, run_once
from sync.resources import PLATFORMS
from sync.schema import platform_audit, platforms, sync_runs
from sync.settings import Settings
from sync.store.runs import ABANDONED_ERROR
from sync.wiring import build_client, build_engine, cycle_options

from ..conftest import settings_for as emulator_settings
from .tables import contents, runs, synced_tables

if TYPE_CHECKING:
    from ..conftest import FakeClock

pytestmark = pytest.mark.db

PAYLOAD_FAULTS = (
    "malformed_json",
    "html",
    "object",
    "wrong_types",
    "duplicate_conflict",
    "non_utf8",
)
COUNT_KEYS = ("fetched", "inserted", "updated", "deleted", "restored", "unchanged")
SUBPROCESS_TIMEOUT_SECONDS = 60


def settings_for(emulator: Emulator, database_url: str, **overrides: Any) -> Settings:
    """The shared emulator settings, with short retries and lock waits."""
    defaults = {"http_retries": 2, "lock_wait_seconds": 0.5}
    return emulator_settings(emulator, database_url, **(defaults | overrides))


@pytest.fixture
def cycle(emulator: Emulator, database_url: str, clock: FakeClock) -> Callable[..., RunResult]:
    """Run one cycle wired from settings (retry waits go to the fake clock).

    Cycles of one test belong to one process (one Upkeep, on the fake clock), unless called
    with new_process=True.
    """
    process = {"upkeep": Upkeep()}

    def run(*, new_process: bool = False, **overrides: Any) -> RunResult:
        if new_process:
            process["upkeep"] = Upkeep()
        settings = settings_for(emulator, database_url, **overrides)
        engine = build_engine(settings)
        try:
            client = build_client(settings, engine, sleep=clock.sleep)
            return run_once(
                engine,
                client,
                cycle_options(settings),
                upkeep=process["upkeep"],
                monotonic=clock,
            )
        finally:
            engine.dispose()

    return run


def counts(**changed: int) -> dict[str, int]:
    return {key: changed.get(key, 0) for key in COUNT_KEYS}


def run_counts(row: dict[str, Any]) -> dict[str, int]:
    return {key: row[key] for key in COUNT_KEYS}


def test_first_cycle_inserts_the_platforms_and_records_a_successful_run(
    cycle: Callable[..., RunResult], engine: Engine
) -> None:
    result = cycle()

    assert (result.status, result.exit_code, result.error) == ("success", EX_OK, None)
    assert result.counts == counts(fetched=3, inserted=3)
    (run,) = runs(engine)
    assert run["id"] == result.run_id
    assert (run["status"], run["resource"], run["error"]) == ("success", "platforms", None)
    assert run_counts(run) == result.counts
    assert run["started_at"] <= run["finished_at"] <= datetime.now(UTC)
    rows = contents(engine, platforms)
    assert [(r["id"], r["name"], r["raw"]) for r in rows] == [
        (p["id"], p["name"], p) for p in DEFAULT_PLATFORMS
    ]
    audit = contents(engine, platform_audit)
    assert [(a["run_id"], a["action"]) for a in audit] == [(run["id"], "insert")] * 3


def test_second_cycle_without_change_writes_only_its_run_row(
    cycle: Callable[..., RunResult], engine: Engine
) -> None:
    cycle()
    before = synced_tables(engine)

    result = cycle()

    assert (result.status, result.exit_code) == ("success", EX_OK)
    assert result.counts == counts(fetched=3, unchanged=3)
    assert synced_tables(engine) == before
    assert [r["status"] for r in runs(engine)] == ["success", "success"]
    assert run_counts(runs(engine)[-1]) == result.counts


def test_changes_on_the_api_are_applied_and_audited_by_the_next_cycle(
    cycle: Callable[..., RunResult], emulator: Emulator, engine: Engine
) -> None:
    cycle()
    us, eu, _au = DEFAULT_PLATFORMS
    emulator.set_platforms([{**us, "name": "USA"}, eu, {"id": 999, "name": "SG"}])

    result = cycle()

    assert result.counts == counts(fetched=3, inserted=1, updated=1, deleted=1, unchanged=1)
    audit = [a for a in contents(engine, platform_audit) if a["run_id"] == result.run_id]
    assert sorted((a["platform_id"], a["action"]) for a in audit) == [
        (100, "update"),
        (300, "delete"),
        (999, "insert"),
    ]


def test_partner_id_comes_from_the_tokens_partnerId_claim(
    cycle: Callable[..., RunResult], emulator: Emulator, engine: Engine
) -> None:
    result = cycle()

    assert result.partner_id == DEFAULT_PARTNER_ID == "10000"
    assert {r["partner_id"] for r in contents(engine, platforms)} == {"10000"}
    assert {a["partner_id"] for a in contents(engine, platform_audit)} == {"10000"}
    assert runs(engine)[0]["partner_id"] == "10000"
    token_requests = [r for r in emulator.requests if r.path.endswith("/oauth/token")]
    assert token_requests and all("partnerId" not in r.query for r in token_requests)


def unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sig"


def test_configured_partner_id_is_sent_and_names_the_rows(
    cycle: Callable[..., RunResult], emulator: Emulator, engine: Engine
) -> None:
    """The token's claim agrees with SYNC_PARTNER_ID, which is sent to the token endpoint."""
    result = cycle(partner_id=DEFAULT_PARTNER_ID)

    assert (result.status, result.partner_id) == ("success", DEFAULT_PARTNER_ID)
    assert {r["partner_id"] for r in contents(engine, platforms)} == {DEFAULT_PARTNER_ID}
    (token_request,) = [r for r in emulator.requests if r.path.endswith("/oauth/token")]
    assert token_request.query.get("partnerId") == DEFAULT_PARTNER_ID


def test_a_token_of_another_partner_fails_with_77_and_writes_nothing(
    cycle: Callable[..., RunResult], emulator: Emulator, engine: Engine
) -> None:
    """SYNC_PARTNER_ID pins the partner: a token for another one is refused, not re-keyed."""
    token = {"access_token": unsigned_jwt({"partnerId": "10000"}), "token_type": "Bearer"}
    emulator.inject("token", Fault("raw", body=json.dumps(token).encode()))

    result = cycle(partner_id="20000")

    assert (result.status, result.exit_code) == ("failed", EX_NOPERM)
    assert "belong to partner 10000" in str(result.error)
    assert contents(engine, platforms) == [] and contents(engine, platform_audit) == []
    (run,) = runs(engine)
    assert (run["status"], run["partner_id"]) == ("failed", "20000")
    assert emulator.stats["platforms_ok"] == 0


def test_a_token_without_a_partner_claim_and_no_partner_id_fails_with_78(
    cycle: Callable[..., RunResult], emulator: Emulator, engine: Engine
) -> None:
    token = {"access_token": "opaque-token", "token_type": "Bearer"}
    emulator.inject("token", Fault("raw", body=json.dumps(token).encode()))

    result = cycle()

    assert (result.status, result.exit_code, result.partner_id) == ("failed", EX_CONFIG, None)
    assert "set SYNC_PARTNER_ID" in str(result.error)
    assert runs(engine) == [] and contents(engine, platforms) == []
    assert emulator.stats["platforms_ok"] == 0


@pytest.mark.parametrize("kind", PAYLOAD_FAULTS)
def test_bad_payload_fails_with_65_and_leaves_the_tables_untouched(
    kind: str, cycle: Callable[..., RunResult], emulator: Emulator, engine: Engine
) -> None:
    """The list behind the fault holds a rename and a new platform that must not be written."""
    cycle()
    us, eu, au = DEFAULT_PLATFORMS
    emulator.set_platforms([{**us, "name": "USA"}, eu, au, {"id": 400, "name": "new"}])
    before = synced_tables(engine)
    emulator.inject("platforms", Fault(kind), times=None)

    result = cycle()

    assert (result.status, result.exit_code) == ("failed", EX_DATAERR)
    assert isinstance(result.error, PayloadError)
    assert synced_tables(engine) == before
    run = runs(engine)[-1]
    assert (run["id"], run["status"], run["partner_id"]) == (result.run_id, "failed", "10000")
    assert run["error"] == str(result.error)
    assert "/global/platforms" in run["error"] and "\n" not in run["error"]
    assert run["finished_at"] is not None


def test_too_many_deletes_fail_with_65_and_leave_the_tables_untouched(
    cycle: Callable[..., RunResult], emulator: Emulator, engine: Engine
) -> None:
    """An empty answer must not wipe the table."""
    cycle()
    before = synced_tables(engine)
    emulator.set_platforms([])

    result = cycle(max_delete_fraction=0.5)

    assert (result.status, result.exit_code) == ("failed", EX_DATAERR)
    assert synced_tables(engine) == before
    run = runs(engine)[-1]
    assert run["status"] == "failed"
    assert run["error"] == str(result.error)
    assert "SYNC_MAX_DELETE_FRACTION" in run["error"]


def test_api_unavailable_after_the_retries_fails_with_75_and_is_recorded(
    cycle: Callable[..., RunResult], emulator: Emulator, engine: Engine, clock: FakeClock
) -> None:
    emulator.inject("platforms", Fault("status", status=503), times=None)

    result = cycle(http_retries=2)

    assert (result.status, result.exit_code) == ("failed", EX_TEMPFAIL)
    assert emulator.stats["platforms_fault"] == 3
    assert len(clock.sleeps) == 2
    (run,) = runs(engine)
    assert (run["status"], run["partner_id"]) == ("failed", "10000")
    assert "503" in run["error"]
    assert synced_tables(engine) == {"platforms": [], "platform_audit": []}


def test_wrong_password_fails_with_77_and_is_not_filed_under_an_unknown_partner(
    cycle: Callable[..., RunResult], emulator: Emulator, engine: Engine
) -> None:
    result = cycle(password="not-the-password")

    assert (result.status, result.exit_code, result.partner_id) == ("failed", EX_NOPERM, None)
    assert "invalid_grant" in str(result.error)
    assert emulator.stats["token_rejected"] == 1
    assert runs(engine) == []  # no partner yet: there is no honest partner_id to file it under
    assert emulator.stats["platforms_ok"] == 0


def test_wrong_password_is_filed_under_the_configured_partner(
    cycle: Callable[..., RunResult], emulator: Emulator, engine: Engine
) -> None:
    result = cycle(password="not-the-password", partner_id=DEFAULT_PARTNER_ID)

    assert (result.status, result.exit_code) == ("failed", EX_NOPERM)
    (run,) = runs(engine)
    assert (run["status"], run["partner_id"]) == ("failed", DEFAULT_PARTNER_ID)
    assert run["finished_at"] is not None
    assert "invalid_grant" in run["error"]
    assert "not-the-password" not in run["error"]


def test_wrong_password_is_filed_under_the_partner_of_the_last_accepted_login(
    cycle: Callable[..., RunResult], emulator: Emulator, engine: Engine
) -> None:
    assert cycle().status == "success"
    emulator.set_password("rotated-at-comm100")

    result = cycle()

    assert result.exit_code == EX_NOPERM
    assert [(r["status"], r["partner_id"]) for r in runs(engine)] == [
        ("success", DEFAULT_PARTNER_ID),
        ("failed", DEFAULT_PARTNER_ID),
    ]


def insert_running_row(engine: Engine, *, partner_id: str, resource: str = "platforms") -> int:
    """What a process killed in the middle of a cycle leaves behind."""
    with engine.begin() as conn:
        result = conn.execute(
            sa.insert(sync_runs).values(
                resource=resource,
                partner_id=partner_id,
                started_at=datetime(2026, 1, 1, tzinfo=UTC),
                status="running",
            )
        )
        return int(result.inserted_primary_key[0])


def test_run_left_running_is_marked_abandoned_by_the_next_cycle(
    cycle: Callable[..., RunResult], engine: Engine
) -> None:
    """Only the partner's own 'running' rows: another partner's may belong to a live process."""
    mine = insert_running_row(engine, partner_id="10000")
    other_partner = insert_running_row(engine, partner_id="20000")

    result = cycle()

    assert result.status == "success"
    by_id = {r["id"]: r for r in runs(engine)}
    assert (by_id[mine]["status"], by_id[mine]["error"]) == ("failed", ABANDONED_ERROR)
    assert by_id[mine]["finished_at"] is not None
    assert by_id[other_partner]["status"] == "running"
    assert by_id[result.run_id]["status"] == "success"


def test_cycle_is_skipped_while_another_process_holds_the_partner_lock(
    cycle: Callable[..., RunResult], emulator: Emulator, engine: Engine
) -> None:
    with store.named_lock(engine, lock_name(PLATFORMS, "10000"), 0) as held:
        assert held
        result = cycle(lock_wait_seconds=0.2)

    assert (result.status, result.exit_code, result.error) == ("skipped", EX_OK, None)
    (run,) = runs(engine)
    assert (run["id"], run["status"], run["error"]) == (result.run_id, "skipped", None)
    assert run["finished_at"] is not None
    assert synced_tables(engine) == {"platforms": [], "platform_audit": []}
    assert emulator.stats["platforms_ok"] == 0


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Subprocesses the test starts; any still alive at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def start_once(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sync", "once"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cycle_after_a_killed_process_marks_its_run_abandoned_and_succeeds(
    cycle: Callable[..., RunResult],
    emulator: Emulator,
    engine: Engine,
    database_url: str,
    sync_env: Callable[..., dict[str, str]],
    processes: list[subprocess.Popen[str]],
) -> None:
    """SIGKILL while the fetch is in flight: the lock dies with it, the run row stays 'running'."""
    gate = emulator.gate("platforms")
    victim = start_once(sync_env(database_url))
    processes.append(victim)
    assert gate.wait_arrived()
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    gate.release()
    (left,) = runs(engine)
    assert left["status"] == "running"

    result = cycle()

    assert (result.status, result.counts["inserted"]) == ("success", 3)
    first, second = runs(engine)
    assert (first["id"], first["status"], first["error"]) == (left["id"], "failed", ABANDONED_ERROR)
    assert second["status"] == "success"


def test_a_second_process_that_cannot_get_the_lock_in_time_records_skipped(
    emulator: Emulator,
    engine: Engine,
    database_url: str,
    sync_env: Callable[..., dict[str, str]],
    processes: list[subprocess.Popen[str]],
) -> None:
    gate = emulator.gate("platforms")  # the first process fetches, holding the lock
    first = start_once(sync_env(database_url))
    processes.append(first)
    assert gate.wait_arrived()

    second = start_once(sync_env(database_url, SYNC_LOCK_WAIT_SECONDS="0.3"))
    processes.append(second)
    _, stderr = second.communicate(timeout=SUBPROCESS_TIMEOUT_SECONDS)
    gate.release()
    first.communicate(timeout=SUBPROCESS_TIMEOUT_SECONDS)

    assert (first.returncode, second.returncode) == (0, 0), stderr
    assert [(r["status"], r["inserted"]) for r in runs(engine)] == [
        ("success", 3),
        ("skipped", 0),
    ]
    assert emulator.count_requests("/v4/global/platforms") == 1  # the skipped one sent none
    audit = Counter((a["platform_id"], a["action"]) for a in contents(engine, platform_audit))
    assert audit == {(p["id"], "insert"): 1 for p in DEFAULT_PLATFORMS}


def test_a_second_process_that_waits_for_the_lock_finds_the_work_done(
    emulator: Emulator,
    engine: Engine,
    database_url: str,
    sync_env: Callable[..., dict[str, str]],
    processes: list[subprocess.Popen[str]],
) -> None:
    gate = emulator.gate("platforms")
    first = start_once(sync_env(database_url))
    processes.append(first)
    assert gate.wait_arrived()
    second = start_once(sync_env(database_url, SYNC_LOCK_WAIT_SECONDS="30"))
    processes.append(second)
    wait_until_token_requests(emulator, 2)  # the second is at the lock now

    gate.release()
    outputs = [p.communicate(timeout=SUBPROCESS_TIMEOUT_SECONDS) for p in (first, second)]

    assert (first.returncode, second.returncode) == (0, 0), outputs
    assert [(r["status"], r["inserted"], r["unchanged"]) for r in runs(engine)] == [
        ("success", 3, 0),
        ("success", 0, 3),
    ]
    audit = Counter((a["platform_id"], a["action"]) for a in contents(engine, platform_audit))
    assert audit == {(p["id"], "insert"): 1 for p in DEFAULT_PLATFORMS}


def wait_until_token_requests(emulator: Emulator, count: int) -> None:
    from tests.e2e.helpers import wait_until

    wait_until(lambda: emulator.count_requests("/oauth/token") >= count, what="token requests")


def test_cycle_blocked_by_another_writer_fails_with_75_after_the_lock_wait(
    cycle: Callable[..., RunResult], emulator: Emulator, engine: Engine
) -> None:
    """A row or table lock held elsewhere is 'database locked' (75), not a cycle that never ends."""
    cycle()
    us, eu, au = DEFAULT_PLATFORMS
    emulator.set_platforms([{**us, "name": "USA"}, eu, au])
    outcome: list[RunResult] = []
    with engine.connect() as blocker, blocker.begin():
        blocker.execute(
            sa.update(platforms).where(platforms.c.id == us["id"]).values(name="locked")
        )
        worker = threading.Thread(target=lambda: outcome.append(cycle(lock_wait_seconds=0.5)))
        started = time.monotonic()
        worker.start()
        worker.join(10)
        elapsed = time.monotonic() - started
        blocker.rollback()
    worker.join(60)

    assert elapsed < 10, "the cycle waited for the lock for ever"
    (result,) = outcome
    assert (result.status, result.exit_code) == ("failed", EX_TEMPFAIL)
    assert [a["run_id"] for a in contents(engine, platform_audit)] == [runs(engine)[0]["id"]] * 3
    assert "running" not in [r["status"] for r in runs(engine)]


# --------------------------------------------------------------------------- unchanged answers


@pytest.fixture
def parse_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts how often a list body is parsed (the slow part a repeat answer skips)."""
    import sync.job.fetch

    calls: list[int] = []
    original = sync.job.fetch.parse_list

    def counting_parse(body: bytes, **kwargs: Any) -> list[Any]:
        calls.append(len(body))
        return original(body, **kwargs)

    monkeypatch.setattr(sync.job.fetch, "parse_list", counting_parse)
    yield calls


def test_a_byte_identical_answer_is_recorded_unchanged_without_parsing(
    cycle: Callable[..., RunResult], engine: Engine, parse_calls: list[int]
) -> None:
    first = cycle()
    before = synced_tables(engine)
    second = cycle()
    assert first.status == second.status == "success"
    assert len(parse_calls) == 1
    assert second.counts["unchanged"] == second.counts["fetched"] == len(DEFAULT_PLATFORMS)
    assert synced_tables(engine) == before
    last = runs(engine)[-1]
    assert (last["status"], last["unchanged"], last["inserted"]) == ("success", 3, 0)
    assert last["snapshot_hash"] == runs(engine)[0]["snapshot_hash"] is not None


def test_a_table_pruned_by_hand_is_repaired_even_if_the_answer_did_not_change(
    cycle: Callable[..., RunResult], engine: Engine, parse_calls: list[int]
) -> None:
    cycle()
    with engine.begin() as conn:
        conn.execute(platforms.delete().where(platforms.c.id == 200))
    repaired = cycle()
    assert len(parse_calls) == 2
    assert repaired.counts["inserted"] == 1
    assert {row["id"] for row in contents(engine, platforms)} == {100, 200, 300}


def edit_by_hand(engine: Engine, statement: sa.Executable) -> None:
    with engine.begin() as conn:
        conn.execute(statement)


@pytest.mark.parametrize(
    "edit",
    ["typed column", "raw document", "soft delete and undelete", "old backup"],
)
def test_a_new_process_heals_rows_edited_by_hand_behind_an_unchanged_answer(
    edit: str, cycle: Callable[..., RunResult], engine: Engine, emulator: Emulator
) -> None:
    """The shortcut trusts the table within a process; a new process compares in full."""
    cycle()
    if edit == "old backup":
        emulator.set_platforms([{"id": 100, "name": "US"}, {"id": 200, "name": "EU"},
                                {"id": 300, "name": "AU", "region": "apac"}])  # fmt: skip
        cycle()
        stale = {r["id"]: r for r in contents(engine, platforms)}
        emulator.set_platforms(DEFAULT_PLATFORMS)
        cycle()
        # A backup of the table from before the last change, restored by hand.
        row = stale[300]
        edit_by_hand(engine, sa.update(platforms).where(platforms.c.id == 300).values(
            raw=row["raw"], raw_hash=row["raw_hash"]))  # fmt: skip
    elif edit == "typed column":
        edit_by_hand(engine, sa.update(platforms).where(platforms.c.id == 200).values(name="x"))
    elif edit == "raw document":
        edit_by_hand(engine, sa.update(platforms).where(platforms.c.id == 200).values(
            raw={"id": 200, "name": "EU", "note": "added by hand"}))  # fmt: skip
    else:  # the live count stays the same, so only a full compare can notice
        edit_by_hand(engine, sa.update(platforms).where(platforms.c.id == 200).values(
            deleted_at=datetime(2026, 1, 1, tzinfo=UTC)))  # fmt: skip
        edit_by_hand(engine, sa.insert(platforms).values(
            partner_id=DEFAULT_PARTNER_ID, id=999, name="ghost", raw={"id": 999, "name": "ghost"},
            raw_hash="0" * 32, first_seen_at=datetime(2026, 1, 1, tzinfo=UTC),
            updated_at=datetime(2026, 1, 1, tzinfo=UTC)))  # fmt: skip
    audit_before = len(contents(engine, platform_audit))

    same_process = cycle()
    assert same_process.counts == counts(fetched=3, unchanged=3)  # trusted: nothing compared

    healed = cycle(new_process=True)

    assert healed.status == "success"
    live = {r["id"]: (r["name"], r["raw"]) for r in contents(engine, platforms)
            if r["deleted_at"] is None}  # fmt: skip
    assert live == {p["id"]: (p["name"], p) for p in DEFAULT_PLATFORMS}
    new_audit = contents(engine, platform_audit)[audit_before:]
    if edit == "soft delete and undelete":
        assert sorted(a["action"] for a in new_audit) == ["delete", "restore"]
    else:
        (update,) = new_audit
        assert update["action"] == "update"
        assert update["new_values"] == next(
            p for p in DEFAULT_PLATFORMS if p["id"] == update["platform_id"]
        )
    if edit == "typed column":
        assert new_audit[0]["old_values"] == {"id": 200, "name": "x"}  # what the table showed


def test_a_full_compare_runs_again_after_full_compare_seconds(
    cycle: Callable[..., RunResult], engine: Engine, clock: FakeClock, parse_calls: list[int]
) -> None:
    cycle(full_compare_seconds=600)
    edit_by_hand(engine, sa.update(platforms).where(platforms.c.id == 100).values(name="x"))
    clock.advance(599)
    assert cycle(full_compare_seconds=600).counts["updated"] == 0
    clock.advance(1)

    healed = cycle(full_compare_seconds=600)

    assert healed.counts["updated"] == 1
    assert len(parse_calls) == 2


def test_the_snapshot_hash_covers_the_derivation_version(
    cycle: Callable[..., RunResult], engine: Engine, monkeypatch: pytest.MonkeyPatch,
    parse_calls: list[int],
) -> None:  # fmt: skip
    """A version that derives rows differently must not trust hashes an older one stored."""
    cycle()
    import sync.models

    monkeypatch.setattr(sync.models, "DERIVATION_VERSION", sync.models.DERIVATION_VERSION + 1)

    again = cycle()

    assert len(parse_calls) == 2
    assert runs(engine)[-1]["snapshot_hash"] != runs(engine)[0]["snapshot_hash"]
    assert again.status == "success"


def test_a_changed_answer_after_an_unchanged_one_is_compared_row_by_row(
    cycle: Callable[..., RunResult], engine: Engine, emulator: Emulator, parse_calls: list[int]
) -> None:
    cycle()
    cycle()
    emulator.set_platforms([{"id": 100, "name": "US"}, {"id": 200, "name": "Europe"}])
    changed = cycle(max_delete_fraction=1.0)
    assert len(parse_calls) == 2
    assert (changed.counts["updated"], changed.counts["deleted"]) == (1, 1)


# --------------------------------------------------------------------------- run history


def old_run(engine: Engine, status: str, days_ago: float, **counts: int) -> int:
    started = datetime.now(UTC) - timedelta(days=days_ago)
    with engine.begin() as conn:
        result = conn.execute(
            sa.insert(sync_runs).values(
                resource="platforms",
                partner_id=DEFAULT_PARTNER_ID,
                started_at=started,
                finished_at=started,
                status=status,
                **counts,
            )
        )
    return int(result.inserted_primary_key[0])


def test_old_runs_that_changed_nothing_are_pruned_and_the_rest_kept(
    cycle: Callable[..., RunResult], engine: Engine
) -> None:
    first = cycle()  # inserts: has audit rows
    with engine.begin() as conn:  # make it old too
        conn.execute(sa.update(sync_runs).values(started_at=datetime(2020, 1, 1, tzinfo=UTC)))
    kept = {
        first.run_id,
        old_run(engine, "failed", 200),
        old_run(engine, "success", 89),  # younger than the retention
        old_run(engine, "success", 200, updated=1),  # changed something
    }
    pruned = {
        old_run(engine, "success", 200, fetched=3, unchanged=3),
        old_run(engine, "skipped", 100),
        old_run(engine, "interrupted", 95),
    }
    pruned |= {old_run(engine, "success", 120) for _ in range(1100)}  # more than two batches

    latest = cycle(new_process=True, run_retention_days=90)

    remaining = {r["id"] for r in runs(engine)}
    assert remaining == kept | {latest.run_id}
    assert not remaining & pruned
    assert len(contents(engine, platform_audit)) == 3  # the audit trail is never pruned


def test_a_process_prunes_at_most_hourly_and_zero_days_keeps_everything(
    cycle: Callable[..., RunResult], engine: Engine, clock: FakeClock
) -> None:
    cycle(run_retention_days=0)
    ancient = old_run(engine, "success", 1000)
    cycle(run_retention_days=0)
    assert ancient in {r["id"] for r in runs(engine)}

    cycle()  # the first with retention in this process: prunes
    assert ancient not in {r["id"] for r in runs(engine)}
    again = old_run(engine, "success", 1000)
    clock.advance(3599)
    cycle()
    assert again in {r["id"] for r in runs(engine)}  # pruned an hour ago: not yet
    clock.advance(1)
    cycle()
    assert again not in {r["id"] for r in runs(engine)}


def test_a_failure_after_the_commit_never_rewrites_the_committed_success(
    cycle: Callable[..., RunResult], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong once the run is committed (a signal, a bug), the run stays a
    success: failures only close runs that are still 'running'."""
    import sync.job.cycle

    def break_after(point: str) -> None:
        if point == "after_commit":
            raise RuntimeError("something went wrong after the commit")

    monkeypatch.setattr(sync.job.cycle, "pause_point", break_after)

    with pytest.raises(RuntimeError):
        cycle()

    (run,) = runs(engine)
    assert (run["status"], run["error"], run["inserted"]) == ("success", None, 3)
