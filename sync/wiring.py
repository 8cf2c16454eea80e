"""Builds the engine, the Partner API clients and the cycle options from Settings.

Shared by the CLI, the scheduler and the demo, so each wires the job the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

from sync.accounts import Account
from sync.auth import TokenProvider
from sync.auth_pause import DatabaseAuthLedger
from sync.client import PartnerClient
from sync.job import CycleOptions
from sync.redaction import Secrets
from sync.retry import RetryPolicy
from sync.settings import DatabaseSettings, Settings
from sync.store import create_engine
from sync.store.budget import SharedBudget
from sync.transport import OpenSockets, Transport, new_session


def build_engine(settings: DatabaseSettings) -> Engine:
    return create_engine(settings.database_url, lock_wait_seconds=settings.lock_wait_seconds)


def build_transport(
    settings: Settings, engine: Engine, *, sleep: Callable[[float], object] = time.sleep
) -> Transport:
    """One HTTP session for every account, under the rate budget shared through `engine`.

    `sleep` waits between retries and for the budget: Shutdown.sleep, so a stop's cutoff ends it.
    """
    sockets = OpenSockets()
    rate = settings.rate
    return Transport(
        new_session(sockets, pool_size=settings.http_concurrency),
        sleep=sleep,
        policy=RetryPolicy(retries=settings.http_retries),
        timeout_seconds=settings.http_timeout_seconds,
        max_response_bytes=settings.max_response_bytes,
        sockets=sockets,
        budget=None if rate is None else SharedBudget(engine, *rate),
    )


def build_client(
    settings: Settings,
    engine: Engine,
    *,
    account: Account | None = None,
    transport: Transport | None = None,
    sleep: Callable[[float], object] = time.sleep,
    force_auth: bool = False,
    monotonic: Callable[[], float] = time.monotonic,
    secrets: Secrets | None = None,
) -> PartnerClient:
    """The client of `account` (the first account by default).

    The engine keeps the refused-password pause and, with SYNC_TOKEN_CACHE_KEY, the tokens.
    """
    account = account or settings.account_list[0]
    transport = transport or build_transport(settings, engine, sleep=sleep)
    credentials = account.credentials
    cache = None
    if settings.token_cache_key is not None:
        from sync.token_cache import SealedTokenCache

        cache = SealedTokenCache(engine, credentials, settings.token_cache_key.get_secret_value())
    tokens = TokenProvider(
        transport,
        auth_url=settings.auth_url,
        credentials=credentials,
        partner_id=account.partner_id,
        ledger=DatabaseAuthLedger(
            engine,
            credentials,
            account=account.name,
            interval_seconds=settings.interval_seconds,
            cap_seconds=settings.auth_backoff_max_seconds,
        ),
        cache=cache,
        force_auth=force_auth,
        clock=monotonic,
        secrets=secrets if secrets is not None else Secrets(settings.secret_values()),
    )
    return PartnerClient(transport, tokens, settings.api_url)


def build_clients(
    settings: Settings,
    engine: Engine,
    *,
    sleep: Callable[[float], object] = time.sleep,
    force_auth: bool = False,
    secrets: Secrets | None = None,
) -> dict[str, PartnerClient]:
    """One client per account, all on one transport (one session, one rate budget)."""
    transport = build_transport(settings, engine, sleep=sleep)
    secrets = secrets if secrets is not None else Secrets(settings.secret_values())
    return {
        account.name: build_client(
            settings, engine, account=account, transport=transport, force_auth=force_auth,
            secrets=secrets,
        )
        for account in settings.account_list
    }  # fmt: skip


def cycle_options(settings: Settings) -> CycleOptions:
    return CycleOptions(
        max_delete_fraction=settings.max_delete_fraction,
        cycle_timeout_seconds=settings.cycle_timeout_seconds,
        lock_wait_seconds=settings.lock_wait_seconds,
        full_compare_seconds=settings.full_compare_seconds,
        run_retention_days=settings.run_retention_days,
        http_concurrency=settings.http_concurrency,
        keep_personal_data=settings.keep_personal_data,
    )
