"""One cycle of one list for one partner: lock → fetch → diff and write in one transaction.

The lock is held across the fetch, so a second process either waits a little or records
'skipped', and any 'running' row it finds is a dead process's. A stop request lets the cycle go
on within its budget; what it cuts short is recorded as 'interrupted'.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from sync import store, tracing
from sync.client import PartnerClient
from sync.errors import (
    AuthPausedError,
    InterruptedCycleError,
    PartialError,
    StoreError,
    SyncError,
)
from sync.job.fetch import fetch, parse
from sync.job.results import CycleOptions, RunResult, Upkeep, counts_of_unchanged, log_summary
from sync.logs import run_context
from sync.pause_points import pause_point
from sync.resources import Resource
from sync.retry import Deadline, StopSignal
from sync.store.snapshot import counts_of

log = logging.getLogger("sync.job")


def lock_name(resource: Resource, partner_id: str) -> str:
    return f"comm100-sync:{resource.name}:{partner_id}"


class Cycle:
    """The state of one list's cycle: its run row, its partner, its deadline."""

    def __init__(
        self,
        engine: Engine,
        client: PartnerClient,
        options: CycleOptions,
        resource: Resource,
        *,
        upkeep: Upkeep,
        now: Callable[[], datetime],
        monotonic: Callable[[], float],
        stop: StopSignal | None,
        pool: Executor | None = None,
        account: str = "default",
    ) -> None:
        self.engine, self.client, self.options = engine, client, options
        self.resource, self.upkeep, self.now, self.monotonic = resource, upkeep, now, monotonic
        self.stop, self.pool, self.account = stop, pool, account
        self.started_at, self.t0 = now(), monotonic()
        self.deadline = Deadline(options.cycle_timeout_seconds, monotonic, stop)
        # Known before any request when configured or remembered; failures are filed under it.
        self.partner_id: str | None = client.tokens.known_partner
        self.run_id: int | None = None
        self.span: tracing.Traced | None = None

    @contextlib.contextmanager
    def traced(self) -> Iterator[None]:
        """The list's span (`sync.resource`) around the block, unless already inside it."""
        if self.span is not None:
            yield
            return
        attributes = {
            "sync.account": self.account,
            "sync.resource": self.resource.name,
            "sync.partner_id": self.partner_id,
        }
        with tracing.span("sync.resource", attributes) as self.span:
            try:
                yield
            finally:
                self.span = None

    def run(self, partner_id: str) -> RunResult:
        """The cycle for `partner_id`; records and returns every expected failure."""
        self.partner_id = partner_id
        with self.traced():
            return self._run(partner_id)

    def _run(self, partner_id: str) -> RunResult:
        if self.stop is not None and self.stop.requested:
            return self.result("interrupted", InterruptedCycleError("stopping: not started"))
        try:
            with store.named_lock(
                self.engine,
                lock_name(self.resource, partner_id),
                self.options.lock_wait_seconds,
            ) as held:
                if not held:
                    return self.skipped(partner_id)
                try:
                    status, counts, partial = self.sync(partner_id)
                    pause_point("after_commit")
                except BaseException as error:
                    # Close the run row while still holding the lock: nobody sees it running.
                    return self._failed(error)
            self.prune()
            return self.result(status, partial, counts)
        except BaseException as error:
            return self._failed(error)

    def sync(self, partner_id: str) -> tuple[str, dict[str, int], PartialError | None]:
        engine, resource, options = self.engine, self.resource, self.options
        abandoned = store.fail_abandoned_runs(
            engine, resource=resource.name, partner_id=partner_id, now=self.now()
        )
        if abandoned:
            log.warning("marked %d abandoned run(s) of %s as failed", abandoned, resource.name)
        sites = store.active_site_ids(engine, partner_id) if resource.site_scoped else []
        self.run_id = store.start_run(
            engine, resource=resource.name, partner_id=partner_id, now=self.started_at
        )
        with run_context(self.run_id):
            fetched = fetch(self.client, resource, self.deadline, sites=sites, pool=self.pool)
            if resource.site_scoped and not fetched.bodies and fetched.failures:
                raise PartialError(fetched.failures)  # every site failed: nothing to write
            digest = fetched.digest(f"personal={options.keep_personal_data}")
            key, compared_at = (resource.name, partner_id), self.monotonic()
            full = self.upkeep.full_compare_due(key, compared_at, options.full_compare_seconds)
            if self.span is not None:
                self.span.set(
                    {
                        "sync.run_id": self.run_id,
                        "sync.full_compare": full,
                        "sync.sites": len(sites) if resource.site_scoped else None,
                        "sync.sites_failed": len(fetched.failures)
                        if resource.site_scoped
                        else None,
                    }
                )
            if not full and digest is not None:
                same = store.unchanged_snapshot(
                    engine, resource.table, resource=resource.name, partner_id=partner_id,
                    snapshot_hash=digest, sites=sites if resource.site_scoped else None,
                )  # fmt: skip
                if same is not None:
                    # Byte for byte what the last success applied, compared in full lately.
                    counts = counts_of_unchanged(same)
                    store.finish_run_now(
                        engine, self.run_id, status="success", now=self.now(),
                        partner_id=partner_id, counts=counts, snapshot_hash=digest,
                    )  # fmt: skip
                    return "success", counts, None
            records, parsed_sites = parse(
                self.client, resource, fetched, keep_personal=options.keep_personal_data
            )
            if resource.site_scoped and fetched.failures and not parsed_sites:
                raise PartialError(fetched.failures)  # every answer was refused
            partial = PartialError(fetched.failures) if fetched.failures else None
            if partial is not None:
                log.warning("%s: %s", resource.name, partial)
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
                sites=parsed_sites if resource.site_scoped else None,
                status="partial" if partial else "success",
                error=self.client.tokens.secrets.mask(str(partial)) if partial else None,
            )
            if full:
                self.upkeep.full_compares[key] = compared_at
            counts = counts_of(plan, fetched=len(records))
            return ("partial" if partial else "success"), counts, partial

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
        with self.traced():
            return self._failed(error)

    def _failed(self, error: BaseException) -> RunResult:
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
            self.account,
        )
        with run_context(self.run_id):
            log_summary(outcome)
        if self.span is not None:
            self.span.set(
                {
                    "sync.partner_id": self.partner_id,
                    "sync.run_id": self.run_id,
                    "sync.status": status,
                    "sync.exit_code": outcome.exit_code,
                    **{f"sync.rows.{name}": count for name, count in outcome.counts.items()},
                }
            )
            if error is not None:
                self.span.fail(error)
        return outcome
