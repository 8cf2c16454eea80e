"""Properties over random histories, and the promise that no secret ever leaks.

A Hypothesis state machine drives random sequences of API snapshots through real cycles and
checks, after each: live rows equal the snapshot; replaying platform_audit from nothing gives
the platforms table exactly; each run's counts equal its audit rows.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from sync.emulator import Emulator, Fault
from sync.job import run_account
from sync.resources import REGISTRY, Resource
from sync.schema import metadata, sync_runs
from sync.wiring import build_client, build_engine, cycle_options

from ..conftest import CLI, settings_for
from .helpers import free_port, running, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.db]

PASSWORD = "Canary-Pw-7Q2X-do-not-leak"
NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)
EXTRA = st.dictionaries(
    st.sampled_from(["region", "tier", "note", "Ünïcode"]),
    st.one_of(st.integers(-5, 5), st.text(max_size=4), st.booleans(), st.none()),
    max_size=2,
)
IDS = st.integers(min_value=-3, max_value=30)
AGENT_IDS = st.sampled_from([f"agent-{n}" for n in range(8)])
SITES_OF_THE_PARTNER = (1, 2)
PLATFORMS, AGENTS = REGISTRY["platforms"], REGISTRY["agents"]
# Where a random change lands: the partner's platform list, or one site's agents.
PLACE_NAMES = ["platforms", *(f"agents@{site}" for site in SITES_OF_THE_PARTNER)]
PLACES = st.sampled_from(PLACE_NAMES)


def replay(resource: Resource, audit_rows: list[Any]) -> dict[Any, tuple[Any, bool]]:
    """ident → (last object, live?) rebuilt from the audit trail alone."""
    state: dict[Any, tuple[Any, bool]] = {}
    for row in audit_rows:
        key = getattr(row, resource.audit_key)
        ident = (row.site_id, key) if resource.site_scoped else key
        if row.action in ("insert", "update", "restore"):
            state[ident] = (row.new_values, True)
        else:
            state[ident] = (row.old_values, False)
    return state


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_random_histories_keep_table_audit_and_runs_consistent(
    backend: str, database_url: str, emulator: Emulator
) -> None:
    """Random adds, renames, removals and re-adds on a partner list and on a per-site list,
    through real cycles: each table says what the API said, its audit trail rebuilds it, and
    each run's counts are its audit rows."""
    config = settings_for(emulator, database_url, max_delete_fraction=1.0)
    engine = build_engine(config)
    client = build_client(config, engine)
    emulator.set_sites([{"id": site, "status": "Open"} for site in SITES_OF_THE_PARTNER])

    class History(RuleBasedStateMachine):
        removed = Bundle("removed")

        @initialize()
        def empty_tables(self) -> None:
            with engine.begin() as conn:
                for table in reversed(metadata.sorted_tables):
                    conn.execute(table.delete())
            self.lists: dict[str, dict[Any, dict[str, Any]]] = {p: {} for p in PLACE_NAMES}

        @rule(place=PLACES, data=st.data(), name=NAMES, extra=EXTRA)
        def add_or_replace(
            self, place: str, data: st.DataObject, name: str, extra: dict[str, Any]
        ) -> None:
            if place == "platforms":
                key: Any = data.draw(IDS)
                self.lists[place][key] = {**extra, "id": key, "name": name}
            else:  # an agent, with a personal field that must never be stored
                key = data.draw(AGENT_IDS)
                self.lists[place][key] = {**extra, "id": key, "timeZone": name,
                                          "isAdmin": data.draw(st.booleans()),
                                          "email": f"{name}@example.com"}  # fmt: skip

        @rule(place=PLACES, data=st.data())
        def rename(self, place: str, data: st.DataObject) -> None:
            items = self.lists[place]
            if items:
                key = data.draw(st.sampled_from(sorted(items)))
                field = "name" if place == "platforms" else "timeZone"
                items[key] = {**items[key], field: data.draw(NAMES)}

        @rule(target=removed, place=PLACES, data=st.data())
        def remove(self, place: str, data: st.DataObject) -> tuple[str, dict[str, Any]]:
            items = self.lists[place]
            if not items:
                return place, {}
            return place, items.pop(data.draw(st.sampled_from(sorted(items))))

        @rule(item=removed)
        def re_add(self, item: tuple[str, dict[str, Any]]) -> None:
            place, value = item
            if value:
                self.lists[place][value["id"]] = value

        @rule()
        def sync(self) -> None:
            emulator.set_platforms(list(self.lists["platforms"].values()))
            for site in SITES_OF_THE_PARTNER:
                emulator.set_list("agents", list(self.lists[f"agents@{site}"].values()),
                                  site_id=site)  # fmt: skip
            results = run_account(engine, client, cycle_options(config),
                                  [PLATFORMS, REGISTRY["sites"], AGENTS])  # fmt: skip
            assert [r.status for r in results] == ["success"] * 3, [r.error for r in results]
            self.synced = {place: dict(items) for place, items in self.lists.items()}

        @invariant()
        def tables_agree_with_the_last_sync(self) -> None:
            if not hasattr(self, "synced"):
                return
            with engine.connect() as conn:
                runs = conn.execute(sa.select(sync_runs)).all()
                for resource in (PLATFORMS, AGENTS):
                    rows = conn.execute(sa.select(resource.table)).all()
                    audit = conn.execute(
                        sa.select(resource.audit).order_by(resource.audit.c.id)
                    ).all()
                    self.check(resource, rows, audit, runs)

        def check(self, resource: Resource, rows: Any, audit: Any, runs: Any) -> None:
            def ident(row: Any) -> Any:
                return (row.site_id, row.id) if resource.site_scoped else row.id

            if resource.site_scoped:
                expected = {
                    (site, key): {k: v for k, v in item.items() if k != "email"}
                    for site in SITES_OF_THE_PARTNER
                    for key, item in self.synced[f"agents@{site}"].items()
                }
            else:
                expected = self.synced["platforms"]
            live = {ident(r): r.raw for r in rows if r.deleted_at is None}
            assert live == expected
            assert replay(resource, audit) == {
                ident(r): (r.raw, r.deleted_at is None) for r in rows
            }
            per_run: dict[tuple[int, str], int] = {}
            for row in audit:
                per_run[(row.run_id, row.action)] = per_run.get((row.run_id, row.action), 0) + 1
            for run in (run for run in runs if run.resource == resource.name):
                assert run.inserted == per_run.get((run.id, "insert"), 0)
                assert run.updated == per_run.get((run.id, "update"), 0)
                assert run.deleted == per_run.get((run.id, "delete"), 0)
                assert run.restored == per_run.get((run.id, "restore"), 0)

    try:
        run_state_machine_as_test(
            History,
            settings=settings(
                max_examples=20,
                stateful_step_count=12,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- secrets


@pytest.fixture
def canary_emulator() -> Iterator[Emulator]:
    with Emulator(password=PASSWORD, rate_limit=None, rotate_refresh_tokens=True) as emu:
        yield emu


@pytest.mark.parametrize("cache_key", [None, "canary-cache-key-5d1e-0123456789abcdef"])
def test_no_secret_appears_in_logs_errors_status_or_tables(
    cache_key: str | None,
    canary_emulator: Emulator,
    tmp_path: Path,
    sync_env: Callable[..., dict[str, str]],
) -> None:
    """With and without SYNC_TOKEN_CACHE_KEY: the cache holds tokens sealed, never in clear."""
    emu = canary_emulator
    url = f"sqlite:///{tmp_path / 'canary.db'}"
    env = sync_env(url) | {
        "SYNC_PASSWORD": PASSWORD,
        "SYNC_AUTH_URL": emu.auth_url,
        "SYNC_API_URL": emu.api_url,
        "SYNC_LOG_LEVEL": "DEBUG",
    }
    if cache_key is not None:
        env["SYNC_TOKEN_CACHE_KEY"] = cache_key
    outputs: list[str] = []

    def cli(*args: str, **extra: str) -> int:
        done = subprocess.run(
            [*CLI, "--debug", *args], env=env | extra, capture_output=True, text=True, check=False
        )
        outputs.extend([done.stdout, done.stderr])
        return done.returncode

    assert cli("once", SYNC_LOG_FORMAT="json") == 0
    from sync.emulator import Fault

    emu.inject("platforms", Fault(kind="html"))
    assert cli("once") == 65
    # A loop whose token is revoked (→ refresh grant), then whose refresh token is refused
    # (→ password grant): every kind of credential passes through it.
    loop = subprocess.Popen(
        [*CLI, "run"],
        env=env | {"SYNC_INTERVAL_SECONDS": "0.3", "SYNC_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for action in (emu.revoke_tokens, emu.revoke_refresh_tokens, emu.revoke_tokens, None):
            seen = emu.stats["platforms_ok"]
            # A cycle with the credentials as they are, then the next blow.
            wait_until(lambda: emu.stats["platforms_ok"] > seen, what="a cycle")  # noqa: B023
            if action is not None:
                action()
    finally:
        loop.send_signal(signal.SIGTERM)
        out, err = loop.communicate(timeout=15)
        outputs.extend([out, err])
    # With the cache the second `once` and the loop start with the kept token.
    assert emu.stats["token_refresh"] >= 1
    assert emu.stats["token_password"] >= (2 if cache_key else 3)
    assert cli("status") == 0
    assert cli("status", "--json") == 0

    access_tokens = {
        r.headers["Authorization"].split()[-1] for r in emu.requests if "Authorization" in r.headers
    }
    refresh_tokens = {r.form["refresh_token"] for r in emu.requests if "refresh_token" in r.form}
    assert access_tokens and refresh_tokens
    secrets = {PASSWORD, *access_tokens, *refresh_tokens} | ({cache_key} if cache_key else set())

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        stored = [
            json.dumps([list(map(str, row)) for row in conn.exec_driver_sql(f"SELECT * FROM {t}")])
            for t in names
        ]
        kept = conn.exec_driver_sql("SELECT count(*) FROM sync_token_cache").scalar_one()
    engine.dispose()
    assert kept == (1 if cache_key else 0)  # the canaries below prove it is sealed
    haystacks = {"output": "\n".join(outputs), "tables": "\n".join(stored)}
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"


@pytest.mark.parametrize("password", ["c", "abc", "Canary-forty-characters-0123456789abcdefgh"])
def test_short_secrets_neither_garble_messages_nor_show(
    password: str, sync_env: Callable[..., dict[str, str]]
) -> None:
    """With SYNC_PASSWORD=c an unreachable database once read `s***hema … ***onne***tion`."""
    env = sync_env("postgresql://sync@127.0.0.1:1/nowhere") | {"SYNC_PASSWORD": password}

    done = subprocess.run([*CLI, "once"], env=env, capture_output=True, text=True, check=False)

    assert done.returncode == 75
    assert "reading the schema revision" in done.stderr
    assert "Connection refused" in done.stderr
    assert "***" not in done.stderr
    if len(password) > 3:
        assert password not in done.stderr


# PostgreSQL's trust authentication accepts any password, so a URL can carry a canary.
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_database_password_shows_nowhere(
    backend: str,
    database_url: str,
    emulator: Emulator,
    sync_env: Callable[..., dict[str, str]],
) -> None:
    """The password in SYNC_DATABASE_URL: not in logs, errors, status, /metrics or /healthz."""
    secret = "Canary-Db-Pw-8c1f"
    url = sa.engine.make_url(database_url).set(password=secret).render_as_string(False)
    port = free_port()
    env = sync_env(url) | {
        "SYNC_INTERVAL_SECONDS": "0.3",
        # Healthy all along: `status` must exit 0 however slowly this machine runs.
        "SYNC_HEALTH_MAX_AGE_SECONDS": "600",
        "SYNC_METRICS_PORT": str(port),
        "SYNC_METRICS_HOST": "127.0.0.1",
        "SYNC_LOG_LEVEL": "DEBUG",
    }
    outputs: list[str] = []

    def cli(*args: str, **extra: str) -> int:
        done = subprocess.run(
            [*CLI, "--debug", *args], env=env | extra, capture_output=True, text=True, check=False
        )
        outputs.extend([done.stdout, done.stderr])
        return done.returncode

    assert cli("once") == 0
    assert cli("status") == 0 and cli("status", "--json") == 0
    # An error that quotes the database: one that does not exist.
    missing = sa.engine.make_url(url).set(database="c100sync_missing").render_as_string(False)
    assert cli("once", SYNC_DATABASE_URL=missing) == 75
    emulator.inject("platforms", Fault(kind="status", status=500), times=None)
    with running(env) as process:
        wait_until(lambda: "HTTP 500" in process.stderr, what="a failed cycle")
        for path in ("/metrics", "/healthz", "/livez"):
            outputs.append(requests.get(f"http://127.0.0.1:{port}{path}", timeout=5).text)
        code, _ = process.stop()
    outputs.append(process.stderr)
    assert code == 0
    assert "database error" in "\n".join(outputs)  # the error channel was exercised
    assert secret not in "\n".join(outputs)
