"""Wiring for the HTTP tests: the scripted Partner API, and transport, tokens and client on it.

They get the fake clock for time and sleep, and a seeded random source, so retries and token
expiry are driven by hand.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import responses

from sync.auth import Credentials, TokenProvider
from sync.client import PartnerClient
from sync.retry import Deadline, RetryPolicy
from sync.transport import Transport
from tests.unit.fake_partner_api import (
    API_URL,
    AUTH_URL,
    CLIENT_ID,
    EMAIL,
    PASSWORD,
    WALL_EPOCH,
    FakePartnerApi,
)


@pytest.fixture
def api() -> Iterator[FakePartnerApi]:
    """Every scripted answer must be used; an unscripted request fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield FakePartnerApi(mock)


@pytest.fixture
def make_transport(clock: Any) -> Callable[..., Transport]:
    def build(
        retries: int = 3, max_response_bytes: int = 64 * 1024, timeout_seconds: float = 30.0
    ) -> Transport:
        return Transport(
            requests.Session(),
            policy=RetryPolicy(retries=retries),
            timeout_seconds=timeout_seconds,
            max_response_bytes=max_response_bytes,
            sleep=clock.sleep,
            wall_clock=lambda: WALL_EPOCH + clock(),
            rng=random.Random(0),
        )

    return build


@pytest.fixture
def make_tokens(
    make_transport: Callable[..., Transport], clock: Any
) -> Callable[..., TokenProvider]:
    def build(
        partner_id: str | None = None, transport: Transport | None = None, **transport_options: Any
    ) -> TokenProvider:
        return TokenProvider(
            transport or make_transport(**transport_options),
            auth_url=AUTH_URL,
            credentials=Credentials(CLIENT_ID, EMAIL, PASSWORD),
            partner_id=partner_id,
            clock=clock,
        )

    return build


@pytest.fixture
def make_client(
    make_transport: Callable[..., Transport], make_tokens: Callable[..., TokenProvider]
) -> Callable[..., PartnerClient]:
    def build(partner_id: str | None = None, **transport_options: Any) -> PartnerClient:
        transport = make_transport(**transport_options)
        return PartnerClient(
            transport, make_tokens(partner_id=partner_id, transport=transport), API_URL
        )

    return build


@pytest.fixture
def deadline(clock: Any) -> Deadline:
    """The default cycle deadline (SYNC_CYCLE_TIMEOUT_SECONDS=300) on the fake clock."""
    return Deadline(300.0, clock)
