"""One cycle of a partner account: its token once, then each list in order, each with its own
run row, lock, transaction and delete guard, so that one list's failure never stops another.

Partner lists run concurrently; per-site lists run after them (they need this cycle's `sites`),
side by side, their per-site requests queued on the same SYNC_HTTP_CONCURRENCY workers. An auth
failure ends the account after one token request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import datetime

from sqlalchemy.engine import Engine

from sync import tracing
from sync.client import PartnerClient
from sync.errors import AuthError, most_severe
from sync.job.cycle import Cycle
from sync.job.results import CycleOptions, RunResult, Upkeep, utc_now
from sync.resources import PLATFORMS, Resource
from sync.retry import Deadline, StopSignal


def run_account(
    engine: Engine,
    client: PartnerClient,
    options: CycleOptions,
    resources: Sequence[Resource],
    *,
    upkeep: Upkeep | None = None,
    account: str = "default",
    now: Callable[[], datetime] = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
    stop: StopSignal | None = None,
    pool: Executor | None = None,
) -> list[RunResult]:
    """Sync `resources` (in sync order) for the client's partner; one RunResult per list.

    Never raises for an expected failure. `upkeep` is the process's memory (a fresh one:
    compare in full, prune); `pool` runs the requests (SYNC_HTTP_CONCURRENCY workers).
    """
    with tracing.span("sync.cycle", {"sync.account": account}) as span:
        results = _run_account(
            engine, client, options, resources, upkeep=upkeep if upkeep is not None else Upkeep(),
            account=account, now=now, monotonic=monotonic, stop=stop, pool=pool,
        )  # fmt: skip
        record_outcome(span, results)
        return results


def record_outcome(span: tracing.Traced, results: Sequence[RunResult]) -> None:
    """A cycle span's closing attributes: its lists, the worst of their outcomes."""
    code = exit_code_of(results)
    worst = next((r for r in results if r.exit_code == code), None)
    partners = sorted({r.partner_id for r in results if r.partner_id})
    span.set(
        {
            "sync.partner_id": ",".join(partners) or None,
            "sync.resources": len(results),
            "sync.outcome": worst.status if worst is not None else "nothing due",
            "sync.exit_code": code,
        }
    )
    errors = [r.error for r in results if r.error is not None]
    if errors:
        span.fail(errors[0], f"{len(errors)} of {len(results)} lists failed")


def _run_account(
    engine: Engine,
    client: PartnerClient,
    options: CycleOptions,
    resources: Sequence[Resource],
    *,
    upkeep: Upkeep,
    account: str,
    now: Callable[[], datetime],
    monotonic: Callable[[], float],
    stop: StopSignal | None,
    pool: Executor | None,
) -> list[RunResult]:
    def cycle(resource: Resource, workers: Executor | None) -> Cycle:
        return Cycle(
            engine, client, options, resource, upkeep=upkeep, now=now, monotonic=monotonic,
            stop=stop, pool=workers, account=account,
        )  # fmt: skip

    # The token names the partner whose locks and rows every list works on.
    try:
        partner_id = client.tokens.partner(Deadline(options.cycle_timeout_seconds, monotonic, stop))
    except BaseException as error:
        return [cycle(resource, None).failed(error) for resource in resources]

    own_pool = pool is None
    workers = pool or ThreadPoolExecutor(
        max_workers=options.http_concurrency, thread_name_prefix="fetch"
    )
    try:
        partner_lists = [r for r in resources if not r.site_scoped]
        per_site_lists = [r for r in resources if r.site_scoped]

        # Bound, each list's span nests under the cycle's whichever thread runs it.
        @tracing.bind
        def partner_list(resource: Resource) -> RunResult:
            return cycle(resource, None).run(partner_id)

        @tracing.bind
        def per_site_list(resource: Resource) -> RunResult:
            return cycle(resource, workers).run(partner_id)

        # Each partner list is one request: they go out together, up to the concurrency.
        results = list(workers.map(partner_list, partner_lists))
        failed_auth = next((r.error for r in results if isinstance(r.error, AuthError)), None)
        if failed_auth is not None:
            return results + [
                cycle(resource, None).failed(failed_auth) for resource in per_site_lists
            ]
        # The per-site lists run side by side, their requests queued on the same workers: one
        # list writes while the next one's requests are answered.
        with ThreadPoolExecutor(max(1, len(per_site_lists)), thread_name_prefix="list") as lists:
            results += lists.map(per_site_list, per_site_lists)
        return results
    finally:
        if own_pool:
            workers.shutdown(wait=True, cancel_futures=True)


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
    """One cycle of one list: run_account for `resource` alone."""
    (result,) = run_account(
        engine, client, options, [resource], upkeep=upkeep, now=now, monotonic=monotonic,
        stop=stop,
    )  # fmt: skip
    return result


def exit_code_of(results: Sequence[RunResult]) -> int:
    """`once`'s exit code: the most severe among the lists (78, 77, 65, 1, 75, then 0)."""
    return most_severe([result.exit_code for result in results])
