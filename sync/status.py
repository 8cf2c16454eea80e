"""What `comm100-sync status` reports: each list's freshness per partner, row counts, paused
credentials and recent runs, read from the database (for CronJob deployments without /healthz)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync import store
from sync.resources import REGISTRY
from sync.schema import SCHEMA_REVISION, sync_runs

# A list is overdue once it has been due, unclaimed, for this fraction of its interval.
OVERDUE_GRACE = 0.5


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _lists(
    engine: Engine,
    resources: Sequence[str],
    now: datetime,
    max_age: Callable[[str], float],
    intervals: Callable[[str], float],
) -> list[dict[str, Any]]:
    """One entry per (partner, list) that has run at least once, for the lists configured."""
    runs = sync_runs.c
    with store.translate_errors("reading sync_runs"), engine.connect() as conn:
        last = {
            (row.partner_id, row.resource, row.status): row.at
            for row in conn.execute(
                sa.select(
                    runs.partner_id,
                    runs.resource,
                    runs.status,
                    sa.func.max(runs.finished_at).label("at"),
                )
                .where(runs.resource.in_(resources), runs.status.in_(("success", "failed")))
                .group_by(runs.partner_id, runs.resource, runs.status)
            )
        }
        partners = {
            row[0]
            for row in conn.execute(
                sa.select(runs.partner_id).where(runs.resource.in_(resources)).distinct()
            )
        }
        rows: dict[tuple[str, str], tuple[int, int]] = {}
        for name in resources:
            table = REGISTRY[name].table
            # SUM(CASE) rather than FILTER: MariaDB has no FILTER clause.
            alive_rows = sa.func.sum(sa.case((table.c.deleted_at.is_(None), 1), else_=0))
            for partner, alive, total in conn.execute(
                sa.select(table.c.partner_id, alive_rows, sa.func.count()).group_by(
                    table.c.partner_id
                )
            ):
                rows[(partner, name)] = (int(alive or 0), int(total) - int(alive or 0))
    plan = store.schedule(engine)
    accounts = {row["partner_id"]: row["account"] for row in store.logins(engine)}
    entries = []
    for partner in sorted(partners):
        for name in resources:
            success = last.get((partner, name, "success"))
            failure = last.get((partner, name, "failed"))
            age = (now - success).total_seconds() if success is not None else None
            live, deleted = rows.get((partner, name), (0, 0))
            next_due, claimed_by, db_now = plan.get((name, partner), (None, None, now))
            overdue = (db_now - next_due).total_seconds() if next_due is not None else None
            entries.append(
                {
                    "account": accounts.get(partner),
                    "partner_id": partner,
                    "resource": name,
                    "last_success_at": _iso(success),
                    "last_failure_at": _iso(failure),
                    "age_seconds": round(age, 1) if age is not None else None,
                    "rows": live,
                    "deleted_rows": deleted,
                    "healthy": age is not None and age <= max_age(name),
                    "max_age_seconds": max_age(name),
                    "next_due_at": _iso(next_due),
                    # Due this long ago and not taken yet: the replicas cannot keep up.
                    "overdue_seconds": (
                        round(overdue, 1)
                        if overdue is not None and overdue > OVERDUE_GRACE * intervals(name)
                        else None
                    ),
                    "claimed_by": claimed_by,
                }
            )
    return entries


def budget_report(
    engine: Engine,
    lists: list[dict[str, Any]],
    rate: tuple[int, float] | None,
    intervals: Callable[[str], float],
) -> dict[str, Any] | None:
    """Whether the rate budget covers the calls the lists need, and what intervals would.

    Calls per round: one per partner list, one per live site for each per-site list.
    """
    if rate is None or not lists:
        return None
    calls, seconds = rate
    available = calls / seconds
    sites = {
        partner: len(store.active_site_ids(engine, partner))
        for partner in {entry["partner_id"] for entry in lists}
    }

    def per_round(entry: dict[str, Any]) -> int:
        return sites[entry["partner_id"]] if REGISTRY[entry["resource"]].site_scoped else 1

    needed = sum(per_round(entry) / intervals(entry["resource"]) for entry in lists)
    report: dict[str, Any] = {
        "calls": calls,
        "seconds": seconds,
        "calls_per_round": sum(per_round(entry) for entry in lists),
        "needed_per_second": round(needed, 4),
        "available_per_second": round(available, 4),
        "covered": needed <= available,
    }
    if needed > available:
        partner_load = sum(
            1 / intervals(e["resource"]) for e in lists if not REGISTRY[e["resource"]].site_scoped
        )
        site_calls = sum(per_round(e) for e in lists if REGISTRY[e["resource"]].site_scoped)
        spare = available - partner_load
        report["advice"] = (
            f"the lists need {needed:.3f} calls/s, the budget gives {available:.3f}: "
            + (
                f"set the per-site lists' SYNC_RESOURCE_INTERVALS to at least "
                f"{site_calls / spare:.0f}s"
                if spare > 0 and site_calls
                else f"set SYNC_INTERVAL_SECONDS to at least "
                f"{sum(per_round(e) for e in lists) / available:.0f}s"
            )
        )
    return report


def collect(
    engine: Engine,
    *,
    limit: int = 10,
    max_age_seconds: float | Callable[[str], float],
    resources: Sequence[str] = tuple(REGISTRY),
    now: datetime | None = None,
    partner: str | None = None,
    intervals: Callable[[str], float] = lambda _name: 300.0,
    rate: tuple[int, float] | None = None,
) -> dict[str, Any]:
    """A JSON-ready report. `healthy` is false when a list's last success is older than allowed
    (or missing), or when credentials are paused after a refusal."""
    now = now or datetime.now(UTC)
    fixed = max_age_seconds
    max_age: Callable[[str], float] = fixed if callable(fixed) else lambda _name: float(fixed)
    revision = store.current_revision(engine)
    report: dict[str, Any] = {
        "schema_revision": revision,
        "expected_schema_revision": SCHEMA_REVISION,
    }
    if revision is None:
        return report | {
            "healthy": False,
            "reason": "the database has no schema yet: run `comm100-sync migrate` or `once`",
            "lists": [],
            "paused_accounts": [],
            "runs": [],
        }
    lists = [
        entry
        for entry in _lists(engine, resources, now, max_age, intervals)
        if partner is None or entry["partner_id"] == partner
    ]
    paused = [p for p in store.paused_logins(engine, now)
              if partner is None or p["partner_id"] in (partner, None)]  # fmt: skip
    with store.translate_errors("reading sync_runs"), engine.connect() as conn:
        running = conn.execute(
            sa.select(sa.func.count()).where(sync_runs.c.status == "running")
        ).scalar_one()
    stale = [entry for entry in lists if not entry["healthy"]]
    overdue = [entry for entry in lists if entry["overdue_seconds"] is not None]
    if paused:
        first = paused[0]
        reason = (
            f"account {first['account']} is paused after {first['refusals']} refused password "
            f"grant(s); next attempt at {first['next_attempt_at']:%Y-%m-%dT%H:%M:%SZ}"
        )
    elif not lists:
        reason = "no sync has run yet"
    elif stale:
        worst = stale[0]
        reason = (
            f"{worst['resource']} of partner {worst['partner_id']}: "
            + (
                f"last success {worst['age_seconds']:.0f}s ago "
                f"(limit {worst['max_age_seconds']:.0f}s)"
                if worst["age_seconds"] is not None
                else "no successful sync yet"
            )
            + (f" (and {len(stale) - 1} more)" if len(stale) > 1 else "")
        )
    else:
        reason = "ok"
    return report | {
        "healthy": not paused and bool(lists) and not stale,
        "reason": reason,
        "lists": lists,
        "overdue": len(overdue),
        "budget": budget_report(engine, lists, rate, intervals),
        "running": running,
        "paused_accounts": [
            {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
            for row in paused
        ],
        "runs": [
            {k: v.isoformat() if isinstance(v, datetime) else v for k, v in run.items()}
            for run in store.recent_runs(engine, limit)
        ],
    }


def render_text(report: dict[str, Any]) -> str:
    lines = [
        f"health: {'OK' if report['healthy'] else 'STALE/FAILING'} ({report['reason']})",
        f"schema: {report['schema_revision'] or 'none'}"
        f" (this version needs {report['expected_schema_revision']})",
    ]
    for pause in report.get("paused_accounts", []):
        lines.append(
            f"paused: account {pause['account']} (partner {pause['partner_id'] or 'unknown'}): "
            f"{pause['refusals']} refused password grant(s) ({pause['error']}), "
            f"next attempt at {pause['next_attempt_at']}"
        )
    budget = report.get("budget")
    if budget:
        lines.append(
            f"rate budget: {budget['calls']}/{budget['seconds']:g}s; a round of every list is "
            f"{budget['calls_per_round']} calls, {budget['needed_per_second']:.3f}/s of "
            f"{budget['available_per_second']:.3f}/s"
            + ("" if budget["covered"] else f": NOT COVERED: {budget['advice']}")
        )
    if report.get("lists"):
        lines += [
            "",
            f"{'account':10}  {'partner':10}  {'list':14}  {'rows':>7}  {'age':>8}  "
            "last success (UTC)",
        ]
        for entry in report["lists"]:
            age = f"{entry['age_seconds']:.0f}s" if entry["age_seconds"] is not None else "never"
            flags = ("" if entry["healthy"] else "  STALE") + (
                f"  OVERDUE {entry['overdue_seconds']:.0f}s" if entry["overdue_seconds"] else ""
            )
            lines.append(
                f"{(entry['account'] or '-')[:10]:10}  {entry['partner_id'][:10]:10}  "
                f"{entry['resource']:14}  {entry['rows']:>7}  {age:>8}  "
                f"{(entry['last_success_at'] or '-')[:19]}{flags}"
            )
    if report.get("runs"):
        lines.append("")
        lines.append(
            f"{'run':>6}  {'started (UTC)':19}  {'list':14}  {'status':11}  {'partner':10}  "
            f"{'fetch':>6} {'ins':>5} {'upd':>5} {'del':>5} {'res':>5}  error"
        )
        for run in report["runs"]:
            lines.append(
                f"{run['id']:>6}  {run['started_at'][:19]:19}  {run['resource'][:14]:14}  "
                f"{run['status']:11}  {run['partner_id'][:10]:10}  {run['fetched']:>6} "
                f"{run['inserted']:>5} {run['updated']:>5} {run['deleted']:>5} "
                f"{run['restored']:>5}  {(run['error'] or '')[:80]}"
            )
    return "\n".join(lines)
