"""Traces of real cycles against the emulator: the span tree, its counts against what the
database recorded, no secret in any span, and the standard instrumentations alongside ours."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.engine import Engine

from sync.emulator import DEFAULT_PARTNER_ID, DEFAULT_PASSWORD, DEFAULT_PLATFORMS, Emulator
from sync.job import RunResult, Upkeep, run_account
from sync.redaction import Secrets
from sync.resources import REGISTRY
from sync.retry import Deadline
from sync.schema import sync_runs
from sync.settings import Settings
from sync.wiring import build_clients, build_engine, cycle_options

from ..conftest import settings_for
from ..spans import Recorded, every_text, recording

pytestmark = pytest.mark.db

LISTS = "platforms,sites,agents"
COUNTS = ("fetched", "inserted", "updated", "deleted", "restored", "unchanged")
ACTIVE_SITES = (10001, 10002)
AUDIT_ACTIONS = (
    ("insert", "inserted"), ("update", "updated"), ("delete", "deleted"), ("restore", "restored")
)  # fmt: skip  # the emulator's Open and Suspended sites


class Process:
    """What a `once` or `run` process holds: settings, engine, clients on one secrets registry
    (the tracer masks with it, as the CLI wires it), and its Upkeep across cycles."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secrets = Secrets(settings.secret_values())
        self.engine = build_engine(settings)
        self.clients = build_clients(settings, self.engine, secrets=self.secrets)
        self.upkeep = Upkeep()

    def cycle(self) -> list[RunResult]:
        account = self.settings.account_list[0]
        return run_account(
            self.engine, self.clients[account.name], cycle_options(self.settings),
            account.resources, upkeep=self.upkeep, account=account.name,
        )  # fmt: skip


@pytest.fixture
def process(emulator: Emulator, database_url: str) -> Iterator[Callable[..., Process]]:
    made: list[Process] = []

    def make(emu: Emulator = emulator, url: str = database_url, **overrides: Any) -> Process:
        made.append(Process(settings_for(emu, url, resources=LISTS, **overrides)))
        return made[-1]

    yield make
    for each in made:
        each.engine.dispose()


def run_row(engine: Engine, run_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(sync_runs).where(sync_runs.c.id == run_id)).mappings().one()
    return dict(row)


def audit_actions(engine: Engine, resource: str, run_id: int) -> dict[str, int]:
    audit = REGISTRY[resource].audit
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(audit.c.action, sa.func.count())
            .where(audit.c.run_id == run_id)
            .group_by(audit.c.action)
        ).all()
    return {str(action): int(count) for action, count in rows}


def ancestors(recorded: Recorded, span: ReadableSpan) -> list[str]:
    names = []
    parent = recorded.parent(span)
    while parent is not None:
        names.append(parent.name)
        parent = recorded.parent(parent)
    return names


def test_a_cycle_is_one_tree_whose_counts_are_those_the_database_recorded(
    process: Callable[..., Process], emulator: Emulator, backend: str
) -> None:
    """cycle → token request and one span per list → its lock, requests and transactions."""
    job = process()
    assert [r.status for r in job.cycle()] == ["success"] * 3
    us, eu, _au = DEFAULT_PLATFORMS
    emulator.set_platforms([{**us, "name": "USA"}, eu, {"id": 999, "name": "SG"}])
    tokens = job.clients["default"].tokens
    tokens.invalidate(tokens.token(Deadline(60.0, time.monotonic)))  # so this cycle asks for one

    with recording(job.secrets, job.settings.identifiers()) as recorded:
        results = job.cycle()

    print(recorded.render())  # the tree, for a reader of -s output
    assert [r.status for r in results] == ["success"] * 3
    (cycle,) = recorded.roots()
    assert cycle.name == "sync.cycle"
    assert {span.context.trace_id for span in recorded.spans if span.context} == {
        cycle.context.trace_id if cycle.context else 0
    }
    assert dict(cycle.attributes or {}) == {
        "sync.account": "default",
        "sync.partner_id": DEFAULT_PARTNER_ID,
        "sync.resources": 3,
        "sync.outcome": "success",
        "sync.exit_code": 0,
    }
    lists = recorded.named("sync.resource")
    assert {recorded.parent(span).name for span in lists} == {"sync.cycle"}  # type: ignore[union-attr]
    assert "POST /oauth/token" in [span.name for span in recorded.children(cycle)]
    for result in results:
        span = recorded.one("sync.resource", resource=result.resource)
        attributes = dict(span.attributes or {})
        row = run_row(job.engine, attributes["sync.run_id"])  # type: ignore[arg-type]
        assert row["resource"] == result.resource
        assert attributes["sync.status"] == row["status"] == "success"
        assert attributes["sync.partner_id"] == row["partner_id"] == DEFAULT_PARTNER_ID
        assert {k: attributes[f"sync.rows.{k}"] for k in COUNTS} == {k: row[k] for k in COUNTS}
        # What the audit table holds for this run is what the span says changed.
        assert audit_actions(job.engine, result.resource, row["id"]) == {
            action: row[column] for action, column in AUDIT_ACTIONS if row[column]
        }
        children = [child.name for child in recorded.children(span)]
        assert children[:2] == ["store.lock", "store.fail_abandoned_runs"]
        assert "store.start_run" in children
        for store_span in recorded.children(span):
            if store_span.name.startswith("store."):
                expected = "mariadb" if backend == "mariadb" else backend
                assert (store_span.attributes or {})["db.system"] in (expected, "mysql")
    platforms = recorded.one("sync.resource", resource="platforms")
    assert (platforms.attributes or {})["sync.rows.inserted"] == 1
    assert (platforms.attributes or {})["sync.rows.updated"] == 1
    assert (platforms.attributes or {})["sync.rows.deleted"] == 1
    # Not the first cycle of the process: the answer is compared with the last one first.
    assert [child.name for child in recorded.children(platforms)][-3:] == [
        "GET /v4/global/platforms",
        "store.unchanged_snapshot",
        "store.apply_snapshot",
    ]
    # Per-site requests ran on the pool's threads, and still nest under their list.
    agents = recorded.one("sync.resource", resource="agents")
    gets = [c for c in recorded.children(agents) if c.name.startswith("GET ")]
    assert {c.name for c in gets} == {"GET /v4/global/sites/{siteId}/agents"}
    assert sorted((c.attributes or {})["url.path"] for c in gets) == [
        f"/v4/global/sites/{site}/agents" for site in ACTIVE_SITES
    ]
    assert (agents.attributes or {})["sync.sites"] == len(ACTIVE_SITES)
    assert all(span.kind is SpanKind.CLIENT for span in gets)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_no_span_carries_a_secret_or_a_query_string(
    process: Callable[..., Process], database_url: str
) -> None:
    """Password, email, client id, every access and refresh token, the database password, the
    token-cache key: none of them in any name, attribute, event or status of any span, through
    a password grant, a refresh grant, a 401 and a refused login."""
    password, email, client_id = "Canary-Pw-5e0d1", "canary-mail@example.org", "canary-client-9f"
    cache_key = "canary-token-cache-key-0123456789abcdef"
    url = sa.engine.make_url(database_url)
    # The test server trusts local connections, so any password works; a real one is kept.
    db_password = url.password or "canary-db-pw-31ab"
    url = url.set(password=db_password).render_as_string(hide_password=False)
    with Emulator(client_id=client_id, email=email, password=password, rate_limit=None) as emu:
        job = process(emu, url, client_id=client_id, email=email, password=password,
                      partner_id=DEFAULT_PARTNER_ID, token_cache_key=cache_key)  # fmt: skip
        with recording(job.secrets, job.settings.identifiers()) as recorded:
            assert {r.status for r in job.cycle()} == {"success"}  # password grant
            emu.expire_tokens()
            assert {r.status for r in job.cycle()} == {"success"}  # refresh grant
            emu.revoke_tokens()
            assert {r.status for r in job.cycle()} == {"success"}  # 401, fresh token
            emu.set_password("Another-Pw-0000")
            emu.revoke_refresh_tokens()
            emu.expire_tokens()
            refused = {r.status for r in job.cycle()}  # the login refused
        tokens = {r.headers.get("Authorization", "").removeprefix("Bearer ") for r in emu.requests}
        tokens |= {r.form["refresh_token"] for r in emu.requests if "refresh_token" in r.form}
    tokens.discard("")
    assert "failed" in refused and "success" not in refused
    grants = [r.form.get("grant_type") for r in emu.requests if r.path.endswith("/token")]
    assert {"password", "refresh_token"} <= set(grants)
    assert len(tokens) >= 3
    texts = [text for span in recorded.spans for text in every_text(span)]
    assert any("refused" in text for text in texts)  # the failure was recorded
    assert recorded.named("store.write_sealed_token")  # the token cache was in play
    for secret in (password, email, client_id, db_password, cache_key, *tokens):
        leaks = [text for text in texts if secret in text]
        assert not leaks, f"a secret in {leaks[:3]}"
    assert not [text for text in texts if "?" in text or "partnerId=" in text]
    failed = [s for s in recorded.named("sync.cycle") if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == 1


@pytest.mark.parametrize("backend", ["postgresql"])
def test_the_requests_and_sqlalchemy_instrumentations_work_alongside(
    process: Callable[..., Process], emulator: Emulator
) -> None:
    """Their spans (one per HTTP request, one per SQL statement, the bulk writes' included)
    nest inside ours, and the cycle succeeds."""
    job = process()
    with recording(job.secrets, job.settings.identifiers()) as recorded:
        RequestsInstrumentor().instrument(tracer_provider=recorded.provider)
        # 0.66b2 declares sqlalchemy<2.1 and would refuse 2.1 without being told to skip.
        SQLAlchemyInstrumentor().instrument(
            engine=job.engine, tracer_provider=recorded.provider, skip_dep_check=True
        )
        try:
            results = job.cycle()
        finally:
            SQLAlchemyInstrumentor().uninstrument()
            RequestsInstrumentor().uninstrument()

    print(recorded.render())
    assert [r.status for r in results] == ["success"] * 3
    assert [span.name for span in recorded.roots()] == ["sync.cycle"]
    ours = [s for s in recorded.spans if s.name.startswith(("GET /", "POST /"))]
    theirs_http = [s for s in recorded.spans if s.name in ("GET", "POST")]
    # The token, platforms, sites, and agents of each active site.
    assert len(theirs_http) == len(ours) == 1 + 2 + len(ACTIVE_SITES)
    for span in theirs_http:
        parent = recorded.parent(span)
        assert parent is not None and parent.name.startswith(f"{span.name} /")
        assert span.kind is SpanKind.CLIENT
    statements = [s for s in recorded.spans if "db.statement" in (s.attributes or {})]
    assert statements
    for span in statements:
        # Every statement ran inside one of our store transactions (or a list's release of
        # its lock), inside the cycle.
        chain = ancestors(recorded, span)
        assert chain[-1] == "sync.cycle", chain
        assert chain[0].startswith("store.") or chain[0] == "sync.resource", chain
    bulk_inserts = [
        span
        for span in statements
        if str((span.attributes or {})["db.statement"]).startswith("INSERT INTO platforms")
    ]
    assert bulk_inserts
    assert {recorded.parent(s).name for s in bulk_inserts} == {"store.apply_snapshot"}  # type: ignore[union-attr]
    assert not [s for s in recorded.spans if s.status.status_code is StatusCode.ERROR]
    tokens = {r.headers.get("Authorization", "")[7:] for r in emulator.requests} - {""}
    texts = [text for span in recorded.spans for text in every_text(span)]
    for secret in (DEFAULT_PASSWORD, *tokens):
        assert not [text for text in texts if secret in text]
    # No instrumentation is left behind for the other tests.
    assert not RequestsInstrumentor().is_instrumented_by_opentelemetry
    assert not SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry
