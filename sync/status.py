"""What `comm100-sync status` reports: each list's freshness per partner, row counts, paused
credentials and recent runs, read from the database (for CronJob deployments without /healthz)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync import store
from sync.resources import REGISTRY
from sync.schema import SCHEMA_REVISION, sync_runs


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _lists(
    engine: Engine, resources: Sequence[str], now: datetime, max_age_seconds: float
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
    entries = []
    for partner in sorted(partners):
        for name in resources:
            success = last.get((partner, name, "success"))
            failure = last.get((partner, name, "failed"))
            age = (now - success).total_seconds() if success is not None else None
            live, deleted = rows.get((partner, name), (0, 0))
            entries.append(
                {
                    "partner_id": partner,
                    "resource": name,
                    "last_success_at": _iso(success),
                    "last_failure_at": _iso(failure),
                    "age_seconds": round(age, 1) if age is not None else None,
                    "rows": live,
                    "deleted_rows": deleted,
                    "healthy": age is not None and age <= max_age_seconds,
                }
            )
    return entries


def collect(
    engine: Engine,
    *,
    limit: int = 10,
    max_age_seconds: float,
    resources: Sequence[str] = tuple(REGISTRY),
    now: datetime | None = None,
) -> dict[str, Any]:
    """A JSON-ready report. `healthy` is false when a list's last success is older than allowed
    (or missing), or when credentials are paused after a refusal."""
    now = now or datetime.now(UTC)
    revision = store.current_revision(engine)
    report: dict[str, Any] = {
        "schema_revision": revision,
        "expected_schema_revision": SCHEMA_REVISION,
        "max_age_seconds": max_age_seconds,
    }
    if revision is None:
        return report | {
            "healthy": False,
            "reason": "the database has no schema yet: run `comm100-sync migrate` or `once`",
            "lists": [],
            "paused_accounts": [],
            "runs": [],
        }
    lists = _lists(engine, resources, now, max_age_seconds)
    paused = store.paused_logins(engine, now)
    with store.translate_errors("reading sync_runs"), engine.connect() as conn:
        running = conn.execute(
            sa.select(sa.func.count()).where(sync_runs.c.status == "running")
        ).scalar_one()
    stale = [entry for entry in lists if not entry["healthy"]]
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
                f"last success {worst['age_seconds']:.0f}s ago (limit {max_age_seconds:.0f}s)"
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
    if report.get("lists"):
        lines += ["", f"{'partner':10}  {'list':14}  {'rows':>7}  {'age':>8}  last success (UTC)"]
        for entry in report["lists"]:
            age = f"{entry['age_seconds']:.0f}s" if entry["age_seconds"] is not None else "never"
            lines.append(
                f"{entry['partner_id'][:10]:10}  {entry['resource']:14}  {entry['rows']:>7}  "
                f"{age:>8}  {(entry['last_success_at'] or '-')[:19]}"
                + ("" if entry["healthy"] else "  STALE")
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
