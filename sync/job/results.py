"""What a cycle returns and remembers: RunResult, the options it runs with, the process's Upkeep,
and the one summary line it logs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sync.errors import EX_INTERNAL, EX_OK, AuthPausedError, SyncError

log = logging.getLogger("sync.job")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunResult:
    """What a cycle of one list did. `status` is one of sync_runs' statuses (success, partial,
    skipped, failed, interrupted), or `paused` for credentials on hold, which sent nothing and
    is not recorded.
    """

    status: str
    run_id: int | None
    partner_id: str | None
    resource: str
    duration_seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None
    account: str = "default"

    @property
    def exit_code(self) -> int:
        if self.error is None:
            return EX_OK
        return self.error.exit_code if isinstance(self.error, SyncError) else EX_INTERNAL

    @property
    def paused(self) -> bool:
        """Refused credentials are paused: nothing was sent and nothing recorded."""
        return isinstance(self.error, AuthPausedError)

    @property
    def changes(self) -> int:
        return sum(self.counts.get(k, 0) for k in ("inserted", "updated", "deleted", "restored"))


@dataclass(frozen=True)
class CycleOptions:
    max_delete_fraction: float = 0.5
    cycle_timeout_seconds: float = 300.0
    lock_wait_seconds: float = 5.0
    full_compare_seconds: float = 3600.0
    run_retention_days: float = 90.0
    http_concurrency: int = 4
    keep_personal_data: bool = False


@dataclass
class Upkeep:
    """What one process remembers between its cycles: when it last compared each list in full,
    and when it last pruned old runs. A new process knows nothing, so its first cycle of each
    list compares in full and it prunes once.
    """

    full_compares: dict[tuple[str, str], float] = field(default_factory=dict)
    last_prune: float | None = None
    # How often a process prunes; the retention itself is CycleOptions.run_retention_days.
    prune_every_seconds: float = 3600.0

    def full_compare_due(self, key: tuple[str, str], now: float, every: float) -> bool:
        last = self.full_compares.get(key)
        return last is None or now - last >= every

    def prune_due(self, now: float) -> bool:
        return self.last_prune is None or now - self.last_prune >= self.prune_every_seconds


def counts_of_unchanged(rows: int) -> dict[str, int]:
    return {"fetched": rows, "inserted": 0, "updated": 0, "deleted": 0, "restored": 0,
            "unchanged": rows}  # fmt: skip


def log_summary(result: RunResult) -> None:
    """One summary line per cycle of a list: run id, status, counts, duration."""
    counts = ", ".join(f"{v} {k}" for k, v in result.counts.items())
    extra = {
        "event": "cycle",
        "status": result.status,
        "resource": result.resource,
        "partner_id": result.partner_id,
        "counts": result.counts or None,
        "duration_seconds": round(result.duration_seconds, 3),
        "exit_code": result.exit_code,
    }
    where = f"run {result.run_id}" if result.run_id is not None else "no run row"
    partner = f"partner {result.partner_id!r}" if result.partner_id else "partner unknown"
    if result.status in ("paused", "interrupted"):
        log.info("%s %s (%s, %s): %s", result.resource, result.status, where, partner,
                 result.error, extra=extra)  # fmt: skip
    elif result.error is None:
        log.info(
            "%s %s (%s, %s): %s in %.2fs",
            result.resource,
            result.status,
            where,
            partner,
            counts or "nothing to do",
            result.duration_seconds,
            extra=extra,
        )
    else:
        log.error(
            "%s %s (%s, %s, exit %d): %s",
            result.resource,
            result.status,
            where,
            partner,
            result.exit_code,
            result.error,
            extra=extra,
        )
