"""Builds the engine, the Partner API client and the cycle options from Settings.

Shared by the CLI, the scheduler and the demo, so each wires the job the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

from sync.auth import Credentials, TokenProvider
from sync.client import PartnerClient
from sync.job import CycleOptions
from sync.retry import RetryPolicy
from sync.settings import DatabaseSettings, Settings
from sync.store import create_engine
from sync.transport import Transport, new_session


def build_engine(settings: DatabaseSettings) -> Engine:
    return create_engine(settings.database_url, lock_wait_seconds=settings.lock_wait_seconds)


def build_client(
    settings: Settings, *, sleep: Callable[[float], object] = time.sleep
) -> PartnerClient:
    """`sleep` waits between retries; the service passes one that a stop signal interrupts."""
    transport = Transport(
        new_session(),
        sleep=sleep,
        policy=RetryPolicy(retries=settings.http_retries),
        timeout_seconds=settings.http_timeout_seconds,
        max_response_bytes=settings.max_response_bytes,
    )
    tokens = TokenProvider(
        transport,
        auth_url=settings.auth_url,
        credentials=Credentials(
            settings.client_id, settings.email, settings.password.get_secret_value()
        ),
        partner_id=settings.partner_id,
    )
    return PartnerClient(transport, tokens, settings.api_url)


def cycle_options(settings: Settings) -> CycleOptions:
    return CycleOptions(
        max_delete_fraction=settings.max_delete_fraction,
        cycle_timeout_seconds=settings.cycle_timeout_seconds,
        lock_wait_seconds=settings.lock_wait_seconds,
    )
