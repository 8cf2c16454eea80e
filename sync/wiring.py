"""Builds the engine, the Partner API client and the cycle options from Settings.

Shared by the CLI, the scheduler and the demo, so each wires the job the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

from sync.auth import Credentials, TokenProvider
from sync.auth_pause import DatabaseAuthLedger
from sync.client import PartnerClient
from sync.job import CycleOptions
from sync.redaction import Secrets
from sync.retry import RetryPolicy
from sync.settings import DatabaseSettings, Settings
from sync.store import create_engine
from sync.transport import OpenSockets, Transport, new_session

DEFAULT_ACCOUNT = "default"


def build_engine(settings: DatabaseSettings) -> Engine:
    return create_engine(settings.database_url, lock_wait_seconds=settings.lock_wait_seconds)


def build_client(
    settings: Settings,
    engine: Engine,
    *,
    sleep: Callable[[float], object] = time.sleep,
    force_auth: bool = False,
    monotonic: Callable[[], float] = time.monotonic,
    secrets: Secrets | None = None,
) -> PartnerClient:
    """`sleep` waits between retries: Shutdown.sleep, so that a stop's cutoff ends it.

    The engine keeps the refused-password pause and, with SYNC_TOKEN_CACHE_KEY, the tokens.
    """
    sockets = OpenSockets()
    transport = Transport(
        new_session(sockets, pool_size=settings.http_concurrency),
        sleep=sleep,
        policy=RetryPolicy(retries=settings.http_retries),
        timeout_seconds=settings.http_timeout_seconds,
        max_response_bytes=settings.max_response_bytes,
        sockets=sockets,
    )
    credentials = Credentials(
        settings.client_id, settings.email, settings.password.get_secret_value()
    )
    cache = None
    if settings.token_cache_key is not None:
        from sync.token_cache import SealedTokenCache

        cache = SealedTokenCache(engine, credentials, settings.token_cache_key.get_secret_value())
    tokens = TokenProvider(
        transport,
        auth_url=settings.auth_url,
        credentials=credentials,
        partner_id=settings.partner_id,
        ledger=DatabaseAuthLedger(
            engine,
            credentials,
            account=DEFAULT_ACCOUNT,
            interval_seconds=settings.interval_seconds,
            cap_seconds=settings.auth_backoff_max_seconds,
        ),
        cache=cache,
        force_auth=force_auth,
        clock=monotonic,
        secrets=secrets if secrets is not None else Secrets(settings.secret_values()),
    )
    return PartnerClient(transport, tokens, settings.api_url)


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
