"""One sync cycle: token → partner lock → fetch → diff and write in one transaction → RunResult."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from sync import store
from sync.client import PartnerClient
from sync.errors import EX_INTERNAL, EX_OK, AuthPausedError, StoreError, SyncError
from sync.logs import run_context
from sync.models import content_digest
from sync.resources import PLATFORMS, Resource
from sync.retry import Deadline
from sync.store.snapshot import counts_of

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunResult:
    """What a cycle did. `status` is success, skipped or failed, as in sync_runs."""

    status: str
    run_id: int | None
    partner_id: str | None
    resource: str
    duration_seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None

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


def log_summary(result: RunResult) -> None:
    """One summary line per cycle: run id, status, counts, duration."""
    counts = ", ".join(f"{v} {k}" for k, v in result.counts.items())
    extra = {
        "event": "cycle",
        "status": result.status,
        "counts": result.counts or None,
        "duration_seconds": round(result.duration_seconds, 3),
        "exit_code": result.exit_code,
    }
    where = f"run {result.run_id}" if result.run_id is not None else "no run row"
    partner = f"partner {result.partner_id!r}" if result.partner_id else "partner unknown"
    if isinstance(result.error, AuthPausedError):
        log.info("%s not synced (%s): %s", result.resource, partner, result.error, extra=extra)
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
            "%s failed (%s, %s, exit %d): %s",
            result.resource,
            where,
            partner,
            result.exit_code,
            result.error,
            extra=extra,
        )


def counts_of_unchanged(rows: int) -> dict[str, int]:
    return {"fetched": rows, "inserted": 0, "updated": 0, "deleted": 0, "restored": 0,
            "unchanged": rows}  # fmt: skip


def lock_name(resource: Resource, partner_id: str) -> str:
    return f"comm100-sync:{resource.name}:{partner_id}"


def run_once(
    engine: Engine,
    client: PartnerClient,
    options: CycleOptions,
    *,
    resource: Resource = PLATFORMS,
    now: Callable[[], datetime] = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
    cancelled: Callable[[], bool] = lambda: False,
) -> RunResult:
    """Run one cycle and record it in sync_runs; never raises for an expected failure.

    The token comes first because it names the partner (its `partnerId` claim) whose lock and
    rows the cycle works on. The lock is held across the fetch, so a second process either
    waits a little or records 'skipped', and any 'running' row it finds is a dead process's.
    """
    started_at, t0 = now(), monotonic()
    deadline = Deadline(options.cycle_timeout_seconds, monotonic, cancelled)
    # Known before any request when configured or remembered; failures are filed under it.
    partner_id = client.tokens.known_partner
    run_id: int | None = None
    recorded = False

    def result(
        status: str, error: BaseException | None = None, counts: dict[str, int] | None = None
    ) -> RunResult:
        outcome = RunResult(
            status, run_id, partner_id, resource.name, monotonic() - t0, counts or {}, error
        )
        with run_context(run_id):
            log_summary(outcome)
        return outcome

    def record_failure(error: BaseException) -> None:
        nonlocal recorded
        if recorded or isinstance(error, AuthPausedError):
            return  # a paused login sent nothing: there is no attempt to record
        recorded = True
        if partner_id is None:
            log.warning("the partner is not known yet, so this failure is not in sync_runs")
            return
        text = (
            str(error)
            if isinstance(error, SyncError)
            else f"internal error: {type(error).__name__}"
        )
        # Error texts quote servers; make sure none of them echoes a credential into the table.
        for secret in client.tokens.secrets():
            text = text.replace(secret, "***")
        try:
            if run_id is None:
                store.record_run(
                    engine,
                    resource=resource.name,
                    partner_id=partner_id,
                    status="failed",
                    started_at=started_at,
                    now=now(),
                    error=text,
                )
            else:
                store.finish_run_now(
                    engine, run_id, status="failed", now=now(), partner_id=partner_id, error=text
                )
        except StoreError as store_error:
            log.warning("could not record the failed run: %s", store_error)

    try:
        partner_id = client.tokens.partner(deadline)
        with store.named_lock(
            engine, lock_name(resource, partner_id), options.lock_wait_seconds
        ) as held:
            if not held:
                run_id = store.record_run(
                    engine,
                    resource=resource.name,
                    partner_id=partner_id,
                    status="skipped",
                    started_at=started_at,
                    now=now(),
                    error=None,
                )
                log.info(
                    "another process is syncing %s for partner %r; skipped",
                    resource.name,
                    partner_id,
                )
                return result("skipped")
            try:
                abandoned = store.fail_abandoned_runs(
                    engine, resource=resource.name, partner_id=partner_id, now=now()
                )
                if abandoned:
                    log.warning("marked %d abandoned run(s) as failed", abandoned)
                run_id = store.start_run(
                    engine, resource=resource.name, partner_id=partner_id, now=started_at
                )
                with run_context(run_id):
                    body = client.fetch_body(resource.path, deadline)
                    digest = content_digest(body)
                    same = store.unchanged_snapshot(
                        engine,
                        resource.table,
                        resource=resource.name,
                        partner_id=partner_id,
                        snapshot_hash=digest,
                    )
                    if same is not None:
                        # Byte for byte what the last success applied: nothing to compare.
                        counts = counts_of_unchanged(same)
                        store.finish_run_now(
                            engine, run_id, status="success", now=now(),
                            partner_id=partner_id, counts=counts, snapshot_hash=digest,
                        )  # fmt: skip
                        return result("success", counts=counts)
                    records = client.parse_body(resource.path, resource.parse, body)
                    del body  # a 100,000-platform answer is megabytes; the records suffice
                    plan = store.apply_snapshot(
                        engine,
                        resource,
                        run_id=run_id,
                        partner_id=partner_id,
                        records=records,
                        now=now(),
                        max_delete_fraction=options.max_delete_fraction,
                        snapshot_hash=digest,
                    )
                return result("success", counts=counts_of(plan, fetched=len(records)))
            except BaseException as error:
                # Close the run row while still holding the lock, so nobody sees it 'running'.
                record_failure(error)
                raise
    except SyncError as error:
        record_failure(error)
        return result("failed", error)
    except BaseException as error:
        record_failure(error)
        raise
