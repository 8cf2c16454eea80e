"""What `comm100-sync status` reports: recent runs, row counts, and whether syncs are fresh."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync import store
from sync.resources import PLATFORMS, Resource
from sync.schema import SCHEMA_REVISION, sync_runs


def collect(
    engine: Engine,
    *,
    limit: int = 10,
    max_age_seconds: float,
    resource: Resource = PLATFORMS,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A JSON-ready report. `healthy` is false when the last success is older than allowed."""
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
            "runs": [],
            "tables": {},
        }
    last = store.last_success(engine, resource.name)
    age = (now - last).total_seconds() if last else None
    runs = store.recent_runs(engine, limit)
    table, audit = resource.table, resource.audit
    with store.translate_errors("counting rows"), engine.connect() as conn:
        # SUM(CASE) rather than FILTER: MariaDB has no FILTER clause.
        live, deleted = conn.execute(
            sa.select(
                sa.func.coalesce(
                    sa.func.sum(sa.case((table.c.deleted_at.is_(None), 1), else_=0)), 0
                ),
                sa.func.coalesce(
                    sa.func.sum(sa.case((table.c.deleted_at.is_(None), 0), else_=1)), 0
                ),
            )
        ).one()
        audit_rows = conn.execute(sa.select(sa.func.count()).select_from(audit)).scalar_one()
        running = conn.execute(
            sa.select(sa.func.count()).where(sync_runs.c.status == "running")
        ).scalar_one()
    paused = store.paused_logins(engine, now)
    if paused:
        first = paused[0]
        healthy, reason = (
            False,
            f"account {first['account']} is paused after {first['refusals']} refused "
            f"password grant(s); next attempt at {first['next_attempt_at']:%Y-%m-%dT%H:%M:%SZ}",
        )
    elif last is None:
        healthy, reason = False, "no successful sync yet"
    elif age is not None and age > max_age_seconds:
        healthy, reason = False, f"last success {age:.0f}s ago (limit {max_age_seconds:.0f}s)"
    else:
        healthy, reason = True, "ok"
    return report | {
        "healthy": healthy,
        "reason": reason,
        "last_success_at": last.isoformat() if last else None,
        "last_success_age_seconds": round(age, 1) if age is not None else None,
        "running": running,
        "paused_accounts": [
            {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
            for row in paused
        ],
        "tables": {
            table.name: {"live": live, "deleted": deleted},
            audit.name: {"rows": audit_rows},
        },
        "runs": [
            {
                **{k: v for k, v in run.items() if not isinstance(v, datetime)},
                **{k: v.isoformat() for k, v in run.items() if isinstance(v, datetime)},
            }
            for run in runs
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
    for name, counts in report.get("tables", {}).items():
        lines.append(f"{name}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if report.get("runs"):
        lines.append("")
        lines.append(
            f"{'run':>6}  {'started (UTC)':19}  {'status':8}  {'partner':10}  "
            f"{'fetch':>6} {'ins':>5} {'upd':>5} {'del':>5} {'res':>5}  error"
        )
        for run in report["runs"]:
            lines.append(
                f"{run['id']:>6}  {run['started_at'][:19]:19}  {run['status']:8}  "
                f"{run['partner_id'][:10]:10}  {run['fetched']:>6} {run['inserted']:>5} "
                f"{run['updated']:>5} {run['deleted']:>5} {run['restored']:>5}  "
                f"{(run['error'] or '')[:80]}"
            )
    return "\n".join(lines)
