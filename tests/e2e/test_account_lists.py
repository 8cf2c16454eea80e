"""The whole partner account through `comm100-sync once`, on every database: every list mirrored
and audited, per-site lists for live sites only, partial runs, personal data kept out, the
exit code of the worst list, and the views over real cycles."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from sync.emulator import DEFAULT_SITE_LISTS, Emulator, Fault
from sync.resources import REGISTRY, Resource
from sync.schema import sync_runs

from ..conftest import CLI
from .helpers import query

pytestmark = [pytest.mark.e2e, pytest.mark.db]

EnvBuilder = Callable[..., dict[str, str]]
EVERY_LIST = ",".join(REGISTRY)
AGENTS, SITES, PLANS = REGISTRY["agents"], REGISTRY["sites"], REGISTRY["plans"]
OPEN, SUSPENDED, CLOSED = 10001, 10002, 10003
PERSONAL_VALUES = [
    value
    for agents in (lists["agents"] for lists in DEFAULT_SITE_LISTS.values())
    for agent in agents
    for key, value in agent.items()
    if AGENTS.is_personal(key) and isinstance(value, str) and len(value) > 6
]


def once(env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "once"], env=env | extra, capture_output=True, text=True, timeout=120, check=False
    )


def as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def live(url: str, resource: Resource) -> dict[Any, Any]:
    """ident → raw of the live rows."""
    table = resource.table
    scope = [table.c.site_id] if resource.site_scoped else []
    rows = query(
        url, sa.select(*scope, table.c.id, table.c.raw).where(table.c.deleted_at.is_(None))
    )
    return {(tuple(r[:2]) if scope else r[0]): as_json(r[-1]) for r in rows}


def audit(url: str, resource: Resource) -> list[Any]:
    table = resource.audit
    return query(url, sa.select(table).order_by(table.c.id))


def expected(emulator: Emulator, resource: Resource, sites: tuple[int, ...]) -> dict[Any, Any]:
    def stored(item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if not resource.is_personal(k)}

    if not resource.site_scoped:
        return {item["id"]: stored(item) for item in emulator.get_list(resource.name)}
    return {
        (site, item["id"]): stored(item)
        for site in sites
        for item in emulator.get_list(resource.name, site_id=site)
    }


@pytest.fixture
def env(sync_env: EnvBuilder, database_url: str) -> dict[str, str]:
    return sync_env(database_url, SYNC_RESOURCES=EVERY_LIST)


def test_once_mirrors_every_list_and_the_lists_of_open_and_suspended_sites(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    done = once(env)

    assert done.returncode == 0, done.stderr
    for resource in REGISTRY.values():
        assert live(database_url, resource) == expected(emulator, resource, (OPEN, SUSPENDED))
        actions = {row.action for row in audit(database_url, resource)}
        assert actions == {"insert"}, resource.name
    runs = query(database_url, sa.select(sync_runs.c.resource, sync_runs.c.status))
    assert sorted(runs) == sorted((name, "success") for name in REGISTRY)
    # One request per partner list, one per live site for each per-site list, one token.
    assert emulator.count_requests("/v4/global/sites/10003") == 0  # Closed: never asked
    per_site = sum(1 for r in REGISTRY.values() if r.site_scoped)
    assert emulator.count_requests("/v4/") == 4 + 2 * per_site
    assert emulator.count_requests("/oauth/token") == 1


def test_string_and_guid_keys_and_typed_columns_are_stored(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    assert once(env).returncode == 0

    products = query(database_url, sa.select(REGISTRY["products"].table.c.id))
    assert {row[0] for row in products} == {p["id"] for p in emulator.get_list("products")}
    site = query(
        database_url,
        sa.select(SITES.table).where(SITES.table.c.id == OPEN),
    )[0]._mapping
    source = next(s for s in emulator.get_list("sites") if s["id"] == OPEN)
    assert (site["platform_id"], site["status"], site["country_or_region"]) == (
        source["platformId"], source["status"], source["countryOrRegion"],
    )  # fmt: skip
    plan = query(database_url, sa.select(PLANS.table).order_by(PLANS.table.c.id))[0]._mapping
    assert plan["created_time"].isoformat().startswith("2022-07-08T09:30:00")
    assert plan["is_enabled"] is True


def test_personal_data_is_in_no_table_and_no_log(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    assert PERSONAL_VALUES  # the emulator's agents do carry personal data
    done = once(env, SYNC_LOG_LEVEL="DEBUG")
    emulator.set_list("agents", [{"id": "bad", "email": "leak@example.com", "isAdmin": "yes"}],
                      site_id=OPEN)  # fmt: skip
    failed = once(env, SYNC_LOG_LEVEL="DEBUG")

    assert done.returncode == 0 and failed.returncode == 65
    # Site contacts are the partner's customers' business data, kept as they come; the
    # agents' tables, the run history and the logs must hold nothing personal.
    tables = [AGENTS.table, AGENTS.audit, sync_runs]
    everything = (
        done.stderr
        + failed.stderr
        + json.dumps(
            [
                [str(v) for v in row]
                for table in tables
                for row in query(database_url, sa.select(table))
            ]
        )
    )
    leaked = [value for value in [*PERSONAL_VALUES, "leak@example.com"] if value in everything]
    assert leaked == []


def test_personal_data_is_kept_when_asked(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    assert once(env, SYNC_KEEP_PERSONAL_DATA="true").returncode == 0

    agents = live(database_url, AGENTS)
    assert any("email" in raw for raw in agents.values())


@pytest.mark.parametrize(
    ("fault", "code"),
    [(Fault(kind="status", status=503), 75), (Fault(kind="malformed_json"), 65)],
    ids=["unavailable", "bad-payload"],
)
def test_a_site_that_fails_keeps_its_rows_while_the_others_commit(
    fault: Fault, code: int, env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    assert once(env, SYNC_RESOURCES="sites,agents").returncode == 0
    before = live(database_url, AGENTS)
    open_agents = emulator.get_list("agents", site_id=OPEN)
    emulator.set_list("agents", [{**a, "timeZone": "Pacific/Kiritimati"} for a in open_agents],
                      site_id=OPEN)  # fmt: skip
    suspended_agents = emulator.get_list("agents", site_id=SUSPENDED)
    emulator.set_list("agents", suspended_agents[1:], site_id=SUSPENDED)
    emulator.inject(f"agents@{OPEN}", fault, times=None)

    done = once(env, SYNC_RESOURCES="sites,agents", SYNC_MAX_DELETE_FRACTION="1.0")

    assert done.returncode == code, done.stderr
    after = live(database_url, AGENTS)
    assert {k: v for k, v in after.items() if k[0] == OPEN} == {
        k: v for k, v in before.items() if k[0] == OPEN
    }
    assert [k for k in after if k[0] == SUSPENDED] == [
        (SUSPENDED, a["id"]) for a in suspended_agents[1:]
    ]
    status, error, deleted = query(
        database_url,
        sa.select(sync_runs.c.status, sync_runs.c.error, sync_runs.c.deleted)
        .where(sync_runs.c.resource == "agents")
        .order_by(sync_runs.c.id.desc()),
    )[0]
    assert (status, deleted) == ("partial", 1)
    assert f"site {OPEN}" in error and f"site {SUSPENDED}" not in error


def test_rows_of_sites_no_longer_fetched_are_left_as_they_were(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    assert once(env, SYNC_RESOURCES="sites,agents").returncode == 0
    before = live(database_url, AGENTS)
    emulator.set_sites(
        [
            {**s, "status": "Closed"} if s["id"] == SUSPENDED else s
            for s in emulator.get_list("sites")
        ]
    )

    assert once(env, SYNC_RESOURCES="sites,agents").returncode == 0

    assert live(database_url, AGENTS) == before
    assert {row.action for row in audit(database_url, AGENTS)} == {"insert"}
    assert emulator.count_requests(f"/v4/global/sites/{SUSPENDED}/agents") == 1


def test_once_exits_with_the_most_severe_code_of_its_lists(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    emulator.inject("products", Fault(kind="status", status=503), times=None)  # 75
    emulator.inject("plans", Fault(kind="html"), times=None)  # 65

    done = once(env, SYNC_RESOURCES="platforms,sites,products,plans")

    assert done.returncode == 65, done.stderr
    statuses = dict(query(database_url, sa.select(sync_runs.c.resource, sync_runs.c.status)))
    assert statuses == {"platforms": "success", "sites": "success", "products": "failed",
                        "plans": "failed"}  # fmt: skip


def test_a_refused_password_stops_the_whole_account_after_one_token_request(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    done = once(env, SYNC_PASSWORD="wrong", SYNC_PARTNER_ID="10000")

    assert done.returncode == 77
    assert emulator.count_requests("/oauth/token") == 1
    assert emulator.count_requests("/v4/") == 0
    statuses = query(database_url, sa.select(sync_runs.c.resource, sync_runs.c.status))
    assert sorted(statuses) == sorted((name, "failed") for name in REGISTRY)


@pytest.mark.parametrize(
    ("lists", "expected"),
    [("platforms,contacts", "unknown list(s) contacts"), ("platforms,roles", "add sites")],
)
def test_an_unusable_list_exits_78_before_anything_is_contacted(
    lists: str, expected: str, env: dict[str, str], emulator: Emulator
) -> None:
    done = once(env, SYNC_RESOURCES=lists)

    assert done.returncode == 78
    assert expected in done.stderr
    assert emulator.requests == []


def test_changed_fields_name_what_changed_and_a_reissued_icon_shows_as_such(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    assert once(env, SYNC_RESOURCES="plans").returncode == 0
    emulator.rotate_plan_icons = True

    assert once(env, SYNC_RESOURCES="plans").returncode == 0

    updates = [row for row in audit(database_url, PLANS) if row.action == "update"]
    assert len(updates) == len(emulator.get_list("plans"))
    assert {tuple(as_json(row.changed_fields)) for row in updates} == {("icon",)}
    inserts = [row for row in audit(database_url, PLANS) if row.action == "insert"]
    assert all(as_json(row.changed_fields) == sorted(as_json(row.new_values)) for row in inserts)


def test_requests_run_concurrently_up_to_the_limit(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    emulator.populate(sites=8, per_site=2)
    emulator.latency_seconds = 0.05
    gate = emulator.gate("agents", times=3)
    process = subprocess.Popen(
        [*CLI, "once"],
        env=env | {"SYNC_RESOURCES": "sites,agents", "SYNC_HTTP_CONCURRENCY": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert gate.wait_arrived(2)  # two per-site requests held at once: they overlap
        gate.release()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert emulator.max_in_flight == 2  # and never more than SYNC_HTTP_CONCURRENCY


def test_site_history_tells_which_sites_were_live_when(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    assert once(env, SYNC_RESOURCES="sites").returncode == 0
    sites = emulator.get_list("sites")
    emulator.set_sites([{**s, "status": "Suspended"} if s["id"] == OPEN else s for s in sites])
    assert once(env, SYNC_RESOURCES="sites").returncode == 0

    versions = query(
        database_url,
        sa.text(
            "SELECT site_id, status, started_by, valid_to FROM site_history "
            "ORDER BY site_id, valid_from"
        ),
    )
    opened = [row for row in versions if row[0] == OPEN]
    assert [(row[1], row[2]) for row in opened] == [("Open", "insert"), ("Suspended", "update")]
    assert opened[0][3] is not None and opened[1][3] is None
    changes = query(
        database_url,
        sa.text("SELECT resource, record_id, action FROM all_changes WHERE action = 'update'"),
    )
    assert [tuple(row) for row in changes] == [("sites", str(OPEN), "update")]
