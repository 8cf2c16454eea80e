"""One sync cycle: token → partner lock → fetch → diff and write in one transaction → RunResult."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from sync import store
from sync.client import PartnerClient
from sync.errors import (
    EX_INTERNAL,
    EX_OK,
    AuthPausedError,
    InterruptedCycleError,
    StoreError,
    SyncError,
)
from sync.logs import run_context
from sync.models import snapshot_digest
from sync.pause_points import pause_point
from sync.resources import PLATFORMS, Resource
from sync.retry import Deadline, StopSignal
from sync.store.snapshot import counts_of

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunResult:
    """What a cycle did. `status` is one of sync_runs' statuses (success, skipped, failed,
    interrupted), or `paused` for credentials on hold, which sent nothing and is not recorded.
    """

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
    full_compare_seconds: float = 3600.0
    run_retention_days: float = 90.0


@dataclass
class Upkeep:
    """What one process remembers between its cycles: when it last compared each resource in
    full, and when it last pruned old runs. A new process knows nothing, so its first cycle
    of each resource compares in full and it prunes once.
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
    upkeep: Upkeep | None = None,
    now: Callable[[], datetime] = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
    stop: StopSignal | None = None,
) -> RunResult:
    """Run one cycle and record it in sync_runs; never raises for an expected failure.

    The token comes first because it names the partner (its `partnerId` claim) whose lock and
    rows the cycle works on. The lock is held across the fetch, so a second process either
    waits a little or records 'skipped', and any 'running' row it finds is a dead process's.
    A stop request lets the cycle go on within its budget; what it cuts short is recorded as
    'interrupted'. `upkeep` is the process's memory (a fresh one: compare in full, prune).
    """
    cycle = _Cycle(engine, client, options, resource, upkeep or Upkeep(), now, monotonic, stop)
    return cycle.run()


class _Cycle:
    """The state of one run_once call: its run row, its partner, its deadline."""

    def __init__(
        self,
        engine: Engine,
        client: PartnerClient,
        options: CycleOptions,
        resource: Resource,
        upkeep: Upkeep,
        now: Callable[[], datetime],
        monotonic: Callable[[], float],
        stop: StopSignal | None,
    ) -> None:
        self.engine, self.client, self.options = engine, client, options
        self.resource, self.upkeep, self.now, self.monotonic = resource, upkeep, now, monotonic
        self.stop = stop
        self.started_at, self.t0 = now(), monotonic()
        self.deadline = Deadline(options.cycle_timeout_seconds, monotonic, stop)
        # Known before any request when configured or remembered; failures are filed under it.
        self.partner_id: str | None = client.tokens.known_partner
        self.run_id: int | None = None

    def run(self) -> RunResult:
        if self.stop is not None and self.stop.requested:
            return self.result("interrupted", InterruptedCycleError("stopping: not started"))
        try:
            self.partner_id = partner_id = self.client.tokens.partner(self.deadline)
            with store.named_lock(
                self.engine, lock_name(self.resource, partner_id), self.options.lock_wait_seconds
            ) as held:
                if not held:
                    return self.skipped(partner_id)
                try:
                    counts = self.sync(partner_id)
                    pause_point("after_commit")
                except BaseException as error:
                    # Close the run row while still holding the lock: nobody sees it running.
                    return self.failed(error)
            self.prune()
            return self.result("success", counts=counts)
        except BaseException as error:
            return self.failed(error)

    def sync(self, partner_id: str) -> dict[str, int]:
        engine, resource, options = self.engine, self.resource, self.options
        abandoned = store.fail_abandoned_runs(
            engine, resource=resource.name, partner_id=partner_id, now=self.now()
        )
        if abandoned:
            log.warning("marked %d abandoned run(s) as failed", abandoned)
        self.run_id = store.start_run(
            engine, resource=resource.name, partner_id=partner_id, now=self.started_at
        )
        with run_context(self.run_id):
            body = self.client.fetch_body(resource.path, self.deadline)
            digest = snapshot_digest(body)
            key, compared_at = (resource.name, partner_id), self.monotonic()
            full = self.upkeep.full_compare_due(key, compared_at, options.full_compare_seconds)
            if not full:
                same = store.unchanged_snapshot(
                    engine, resource.table, resource=resource.name, partner_id=partner_id,
                    snapshot_hash=digest,
                )  # fmt: skip
                if same is not None:
                    # Byte for byte what the last success applied, compared in full lately.
                    counts = counts_of_unchanged(same)
                    store.finish_run_now(
                        engine, self.run_id, status="success", now=self.now(),
                        partner_id=partner_id, counts=counts, snapshot_hash=digest,
                    )  # fmt: skip
                    return counts
            records = self.client.parse_body(resource.path, resource.parse, body)
            del body  # a 100,000-platform answer is megabytes; the records suffice
            plan = store.apply_snapshot(
                engine,
                resource,
                run_id=self.run_id,
                partner_id=partner_id,
                records=records,
                now=self.now(),
                max_delete_fraction=options.max_delete_fraction,
                snapshot_hash=digest,
                full_compare=full,
            )
            if full:
                self.upkeep.full_compares[key] = compared_at
            return counts_of(plan, fetched=len(records))

    def skipped(self, partner_id: str) -> RunResult:
        self.run_id = store.record_run(
            self.engine,
            resource=self.resource.name,
            partner_id=partner_id,
            status="skipped",
            started_at=self.started_at,
            now=self.now(),
            error=None,
        )
        log.info(
            "another process is syncing %s for partner %r; skipped", self.resource.name, partner_id
        )
        return self.result("skipped")

    def failed(self, error: BaseException) -> RunResult:
        """Record the failure (once, over a run still 'running'); re-raise unexpected ones."""
        if isinstance(error, AuthPausedError):
            return self.result("paused", error)  # nothing was sent: nothing to record
        status = "interrupted" if isinstance(error, InterruptedCycleError) else "failed"
        self.record(status, error)
        if not isinstance(error, SyncError):
            raise error
        return self.result(status, error)

    def record(self, status: str, error: BaseException) -> None:
        if self.partner_id is None:
            log.warning("the partner is not known yet, so this failure is not in sync_runs")
            return
        text = (
            str(error)
            if isinstance(error, SyncError)
            else f"internal error: {type(error).__name__}"
        )
        # Error texts quote servers; make sure none of them echoes a credential into the table.
        text = self.client.tokens.secrets.mask(text)
        try:
            if self.run_id is None:
                store.record_run(
                    self.engine,
                    resource=self.resource.name,
                    partner_id=self.partner_id,
                    status=status,
                    started_at=self.started_at,
                    now=self.now(),
                    error=text,
                )
            elif not store.finish_run_now(
                self.engine, self.run_id, status=status, now=self.now(),
                partner_id=self.partner_id, error=text, only_if_running=True,
            ):  # fmt: skip
                log.warning("run %d was closed already; its record stands", self.run_id)
        except StoreError as store_error:
            log.warning("could not record the failed run: %s", store_error)

    def prune(self) -> None:
        """Delete old no-change runs, outside the data transaction and after the lock."""
        days = self.options.run_retention_days
        if days <= 0 or not self.upkeep.prune_due(self.monotonic()):
            return
        self.upkeep.last_prune = self.monotonic()
        try:
            removed = store.prune_runs(self.engine, older_than=self.now() - timedelta(days=days))
        except StoreError as error:
            log.warning("could not prune old runs: %s", error)
            return
        if removed:
            log.info("pruned %d no-change run(s) older than %g days", removed, days)

    def result(
        self, status: str, error: BaseException | None = None, counts: dict[str, int] | None = None
    ) -> RunResult:
        outcome = RunResult(
            status,
            self.run_id,
            self.partner_id,
            self.resource.name,
            self.monotonic() - self.t0,
            counts or {},
            error,
        )
        with run_context(self.run_id):
            log_summary(outcome)
        return outcome
