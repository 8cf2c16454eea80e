"""Tokens: password grant, cache, renewal margin, refresh grant and its fallback, refusals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from sync.auth import Credentials, SavedToken, TokenProvider
from sync.errors import (
    AuthError,
    AuthPausedError,
    PartnerUnknownError,
    PayloadError,
    RejectedError,
    RemoteError,
    UnavailableError,
)
from sync.retry import Deadline
from tests.unit.fake_partner_api import (
    AUTH_URL,
    CLIENT_ID,
    EMAIL,
    PASSWORD,
    WALL_EPOCH,
    FakePartnerApi,
    connect_refused,
    dropped_after_send,
    jwt,
)

MakeTokens = Callable[..., TokenProvider]
ACCESS = "canary-access-3b7d"
REFRESH = "canary-refresh-e41c"


def cycle(clock) -> Deadline:
    """A new cycle's deadline: each renewal happens in a cycle of its own."""
    return Deadline(300.0, clock)


def grant_types(api: FakePartnerApi) -> list[str]:
    return [form["grant_type"] for form in api.token_forms()]


def assert_no_secret_in(error: BaseException) -> None:
    text = f"{error} {error!r} {vars(error)}"
    for secret in (PASSWORD, ACCESS, REFRESH):
        assert secret not in text


# --------------------------------------------------------------------------- password grant


def test_password_grant_is_a_form_encoded_post_with_the_credentials(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.grant(ACCESS)

    assert make_tokens().token(deadline) == ACCESS

    (request,) = api.requests_to(AUTH_URL)
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert api.token_forms() == [
        {"grant_type": "password", "client_id": CLIENT_ID, "email": EMAIL, "password": PASSWORD}
    ]
    assert urlsplit(request.url).query == ""


def test_configured_partner_id_is_sent_as_a_query_parameter(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.grant(ACCESS)

    make_tokens(partner_id="p-77").token(deadline)

    (request,) = api.requests_to(AUTH_URL)
    assert parse_qs(urlsplit(request.url).query) == {"partnerId": ["p-77"]}
    assert "partnerId" not in api.token_forms()[0]


# --------------------------------------------------------------------------- cache and renewal


def test_token_is_cached_and_reused(api: FakePartnerApi, make_tokens: MakeTokens, clock) -> None:
    api.grant(ACCESS, expires_in=3600)
    tokens = make_tokens()

    first = tokens.token(cycle(clock))
    clock.advance(1800)
    second = tokens.token(cycle(clock))

    assert first == second == ACCESS
    assert len(api.mock.calls) == 1


@pytest.mark.parametrize(
    ("lifetime", "renew_after"),
    [
        pytest.param(3600, 3540, id="margin-60s"),
        pytest.param(600, 540, id="margin-60s-is-10%"),
        pytest.param(300, 270, id="margin-10%"),
        pytest.param(20, 18, id="short-lived"),
    ],
)
def test_token_is_renewed_within_the_margin_of_its_expiry(
    api: FakePartnerApi,
    make_tokens: MakeTokens,
    clock,
    lifetime: int,
    renew_after: int,
) -> None:
    """Margin is min(60 s, 10 % of the token's life)."""
    api.grant("first", expires_in=lifetime)
    api.grant("second", expires_in=lifetime)
    tokens = make_tokens()
    tokens.token(cycle(clock))

    clock.advance(renew_after - 0.5)
    assert tokens.token(cycle(clock)) == "first"
    clock.advance(0.5)
    assert tokens.token(cycle(clock)) == "second"


def test_missing_expires_in_is_taken_as_an_hour(
    api: FakePartnerApi, make_tokens: MakeTokens, clock
) -> None:
    api.grant("first", expires_in=None)
    api.grant("second")
    tokens = make_tokens()
    tokens.token(cycle(clock))

    clock.advance(3539)
    assert tokens.token(cycle(clock)) == "first"
    clock.advance(1)
    assert tokens.token(cycle(clock)) == "second"


def test_renewal_without_a_refresh_token_repeats_the_password_grant(
    api: FakePartnerApi, make_tokens: MakeTokens, clock
) -> None:
    api.grant("first", expires_in=300)
    api.grant("second", expires_in=300)
    tokens = make_tokens()
    tokens.token(cycle(clock))

    clock.advance(300)

    assert tokens.token(cycle(clock)) == "second"
    assert grant_types(api) == ["password", "password"]


def test_renewal_uses_the_refresh_grant_when_a_refresh_token_was_issued(
    api: FakePartnerApi, make_tokens: MakeTokens, clock
) -> None:
    api.grant("first", expires_in=300, refresh_token=REFRESH)
    api.grant("second", expires_in=300, refresh_token="next-refresh")
    tokens = make_tokens()
    tokens.token(cycle(clock))

    clock.advance(300)

    assert tokens.token(cycle(clock)) == "second"
    assert api.token_forms()[1] == {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "refresh_token": REFRESH,
    }


def test_rotated_refresh_token_is_used_next_time(
    api: FakePartnerApi, make_tokens: MakeTokens, clock
) -> None:
    api.grant("t1", expires_in=300, refresh_token="r1")
    api.grant("t2", expires_in=300, refresh_token="r2")
    api.grant("t3", expires_in=300)
    tokens = make_tokens()
    for _ in range(3):
        tokens.token(cycle(clock))
        clock.advance(300)

    assert [f.get("refresh_token") for f in api.token_forms()] == [None, "r1", "r2"]


def test_refresh_answer_without_a_refresh_token_keeps_the_previous_one(
    api: FakePartnerApi, make_tokens: MakeTokens, clock
) -> None:
    api.grant("t1", expires_in=300, refresh_token="r1")
    api.grant("t2", expires_in=300)
    api.grant("t3", expires_in=300)
    tokens = make_tokens()
    for _ in range(3):
        tokens.token(cycle(clock))
        clock.advance(300)

    assert grant_types(api) == ["password", "refresh_token", "refresh_token"]
    assert [f.get("refresh_token") for f in api.token_forms()] == [None, "r1", "r1"]


@pytest.mark.parametrize("status", [400, 401])
def test_refused_refresh_falls_back_to_one_password_grant(
    api: FakePartnerApi, make_tokens: MakeTokens, clock, status: int
) -> None:
    api.grant("t1", expires_in=300, refresh_token="r1")
    api.token_error(status, "invalid_grant", "refresh token expired")
    api.grant("t2", expires_in=300)
    tokens = make_tokens()
    tokens.token(cycle(clock))
    clock.advance(300)

    assert tokens.token(cycle(clock)) == "t2"
    assert grant_types(api) == ["password", "refresh_token", "password"]


def test_refused_refresh_and_refused_password_fail_after_one_password_grant(
    api: FakePartnerApi, make_tokens: MakeTokens, clock
) -> None:
    api.grant("t1", expires_in=300, refresh_token="r1")
    api.token_error(400, "invalid_grant", "refresh token revoked")
    api.token_error(400, "invalid_grant", "password changed")
    tokens = make_tokens()
    tokens.token(cycle(clock))
    clock.advance(300)

    with pytest.raises(AuthError, match="refused the password grant: invalid_grant"):
        tokens.token(cycle(clock))

    assert grant_types(api) == ["password", "refresh_token", "password"]


def test_invalidated_token_is_renewed_on_the_next_request(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.grant("t1")
    api.grant("t2")
    tokens = make_tokens()

    tokens.invalidate(tokens.token(deadline))

    assert tokens.token(deadline) == "t2"


def test_invalidating_an_older_token_keeps_the_current_one(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.grant("t1")
    tokens = make_tokens()
    tokens.token(deadline)

    tokens.invalidate("some-older-token")

    assert tokens.token(deadline) == "t1"
    assert len(api.mock.calls) == 1


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("status", "error", "description", "expected"),
    [
        (
            400,
            "invalid_grant",
            "The user name or password is incorrect.",
            "token endpoint refused the password grant: invalid_grant: "
            "The user name or password is incorrect.",
        ),
        (401, "invalid_client", None, "token endpoint refused the password grant: invalid_client"),
        (
            400,
            "invalid_request",
            "partnerId is required",
            "token endpoint refused the password grant: invalid_request: partnerId is required",
        ),
    ],
)
def test_token_endpoint_refusal_fails_at_once_naming_the_cause(
    api: FakePartnerApi,
    make_tokens: MakeTokens,
    deadline: Deadline,
    clock,
    status: int,
    error: str,
    description: str | None,
    expected: str,
) -> None:
    api.token_error(status, error, description)

    with pytest.raises(AuthError) as caught:
        make_tokens().token(deadline)

    refusal = caught.value
    assert str(refusal) == expected
    assert (refusal.status, refusal.oauth_error, refusal.endpoint) == (
        status,
        error,
        "/oauth/token",
    )
    assert refusal.exit_code == 77
    assert len(api.mock.calls) == 1
    assert clock.sleeps == []


def test_refusal_without_an_oauth_body_names_the_status(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.token_reply(status=401, body=b"<html>Unauthorized</html>", content_type="text/html")

    with pytest.raises(AuthError) as caught:
        make_tokens().token(deadline)

    assert str(caught.value) == "token endpoint refused the password grant: HTTP 401"
    assert caught.value.oauth_error is None


def test_refusal_text_is_one_printable_line(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.token_error(400, "invalid_grant", "bad\ncredentials\x1b[31m" + "x" * 500)

    with pytest.raises(AuthError) as caught:
        make_tokens().token(deadline)

    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message
    assert len(message) < 300


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_token_endpoint_unavailable_is_retried_then_reported(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline, clock, status: int
) -> None:
    api.token_reply(status=status, body=b"")

    with pytest.raises(UnavailableError) as caught:
        make_tokens(retries=3).token(deadline)

    assert caught.value.status == status
    assert caught.value.exit_code == 75
    assert len(api.mock.calls) == 4
    assert len(clock.sleeps) == 3


def test_token_endpoint_recovering_from_a_5xx_gives_a_token(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline, clock
) -> None:
    api.token_reply(status=503, body=b"")
    api.grant(ACCESS)

    assert make_tokens().token(deadline) == ACCESS
    assert len(clock.sleeps) == 1


def test_token_post_is_not_repeated_after_the_connection_dropped_mid_request(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    """The server may have counted the attempt (lockouts); the next cycle tries again."""
    api.token_reply(body=dropped_after_send())

    with pytest.raises(UnavailableError):
        make_tokens().token(deadline)

    assert len(api.mock.calls) == 1


def test_token_post_is_retried_when_the_connection_could_not_be_opened(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.token_reply(body=connect_refused())
    api.grant(ACCESS)

    assert make_tokens().token(deadline) == ACCESS
    assert len(api.mock.calls) == 2


def test_other_token_endpoint_status_is_rejected(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.token_reply(status=403, json={"error": "forbidden"})

    with pytest.raises(RejectedError) as caught:
        make_tokens().token(deadline)

    assert str(caught.value) == "token endpoint answered HTTP 403"
    assert len(api.mock.calls) == 1


@pytest.mark.parametrize(
    "reply",
    [
        {"body": b"<html>login</html>", "content_type": "text/html"},
        {"json": {"access_token": ACCESS, "token_type": "mac"}},
        {"json": {"token_type": "Bearer"}},
    ],
)
def test_unusable_token_answer_is_a_payload_error(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline, reply: dict
) -> None:
    api.token_reply(**reply)

    with pytest.raises(PayloadError) as caught:
        make_tokens().token(deadline)

    assert caught.value.endpoint == "/oauth/token"
    assert_no_secret_in(caught.value)


# --------------------------------------------------------------------------- secrets


def test_refusal_never_repeats_the_password_even_when_the_server_echoes_it(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.token_error(400, "invalid_grant", f"password '{PASSWORD}' is wrong for {EMAIL}")

    with pytest.raises(AuthError) as caught:
        make_tokens().token(deadline)

    assert_no_secret_in(caught.value)
    assert str(caught.value) == (
        "token endpoint refused the password grant: invalid_grant: "
        f"password '***' is wrong for {EMAIL}"
    )


def test_refused_refresh_never_repeats_the_refresh_token(
    api: FakePartnerApi, make_tokens: MakeTokens, clock, caplog
) -> None:
    api.grant(ACCESS, expires_in=300, refresh_token=REFRESH)
    api.token_error(400, "invalid_grant", f"unknown refresh token {REFRESH}")
    api.token_error(400, "invalid_grant", f"bad password {PASSWORD}")
    tokens = make_tokens()
    tokens.token(cycle(clock))
    clock.advance(300)

    with pytest.raises(AuthError) as caught:
        tokens.token(cycle(clock))

    assert_no_secret_in(caught.value)
    for secret in (PASSWORD, ACCESS, REFRESH):
        assert secret not in caplog.text


@pytest.mark.parametrize(
    "reply",
    [
        {"status": 503, "body": f"password={PASSWORD}".encode()},
        {"body": dropped_after_send()},
        {"status": 404, "body": PASSWORD.encode()},
        {"status": 200, "body": f"access_token={ACCESS}".encode()},
    ],
)
def test_no_token_error_carries_the_password(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline, reply: dict
) -> None:
    api.token_reply(**reply)

    with pytest.raises(RemoteError) as caught:
        make_tokens(retries=0).token(deadline)

    assert_no_secret_in(caught.value)


def test_credentials_repr_hides_the_password() -> None:
    credentials = Credentials(CLIENT_ID, EMAIL, PASSWORD)

    assert PASSWORD not in repr(credentials)
    assert PASSWORD not in str(credentials)


def test_every_token_received_joins_the_secrets_registry(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.grant(ACCESS, refresh_token=REFRESH)
    tokens = make_tokens()
    text = f"{PASSWORD} {ACCESS} {REFRESH}"

    assert tokens.secrets.mask(text) == f"*** {ACCESS} {REFRESH}"
    tokens.token(deadline)
    assert tokens.secrets.mask(text) == "*** *** ***"


# --------------------------------------------------------------------------- partner id


def test_partner_comes_from_the_token_claim_when_not_configured(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.grant(jwt({"sub": "u1", "partnerId": 10042}))
    tokens = make_tokens()

    assert tokens.known_partner is None
    assert tokens.partner(deadline) == "10042"
    assert tokens.known_partner == "10042"


def test_configured_partner_is_known_before_any_request(
    api: FakePartnerApi, make_tokens: MakeTokens
) -> None:
    assert make_tokens(partner_id="10042").known_partner == "10042"
    assert len(api.mock.calls) == 0


def test_configured_partner_must_match_the_claim(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.grant(jwt({"partnerId": "20000"}))
    tokens = make_tokens(partner_id="10000")

    with pytest.raises(AuthError, match="belong to partner 20000") as caught:
        tokens.partner(deadline)

    assert caught.value.exit_code == 77


def test_configured_partner_serves_when_the_token_has_no_claim(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.grant("opaque-token")

    assert make_tokens(partner_id="10000").partner(deadline) == "10000"


def test_no_configured_partner_and_no_claim_is_a_configuration_error(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.grant("opaque-token")

    with pytest.raises(PartnerUnknownError, match="set SYNC_PARTNER_ID") as caught:
        make_tokens().partner(deadline)

    assert caught.value.exit_code == 78


# --------------------------------------------------------------------------- refusal pause


class MemoryLedger:
    """An AuthLedger that pauses until a fixed time after each refusal."""

    def __init__(self, paused_until: datetime | None = None) -> None:
        self.paused_until = paused_until
        self.refusals: list[str] = []
        self.accepted_partners: list[str | None] = []

    def next_attempt_at(self) -> datetime | None:
        return self.paused_until

    def refused(self, error: str) -> datetime:
        self.refusals.append(error)
        self.paused_until = datetime(2030, 1, 1, tzinfo=UTC)
        return self.paused_until

    def accepted(self, partner_id: str | None) -> None:
        self.accepted_partners.append(partner_id)
        self.paused_until = None

    def known_partner(self) -> str | None:
        return "remembered"


def test_a_refused_password_is_recorded_and_the_next_grant_is_not_sent(
    api: FakePartnerApi, make_transport: Callable[..., Any], clock: Any
) -> None:
    api.token_error(400, "invalid_grant")
    ledger = MemoryLedger()
    tokens = provider(make_transport(), clock, ledger=ledger)

    with pytest.raises(AuthError):
        tokens.token(cycle(clock))
    with pytest.raises(AuthPausedError, match="2030-01-01T00:00:00Z") as caught:
        tokens.token(cycle(clock))

    assert ledger.refusals == ["invalid_grant"]
    assert caught.value.exit_code == 77
    assert len(api.token_forms()) == 1


def test_force_auth_sends_the_grant_despite_the_pause(
    api: FakePartnerApi, make_transport: Callable[..., Any], clock: Any
) -> None:
    api.grant(jwt({"partnerId": "10000"}))
    ledger = MemoryLedger(paused_until=datetime(2030, 1, 1, tzinfo=UTC))
    tokens = provider(make_transport(), clock, ledger=ledger, force_auth=True)

    tokens.token(cycle(clock))

    assert ledger.accepted_partners == ["10000"]
    assert ledger.paused_until is None


def test_a_paused_login_still_renews_with_its_refresh_token(
    api: FakePartnerApi, make_transport: Callable[..., Any], clock: Any
) -> None:
    """Only the password grant risks a lockout; a refresh grant is no login attempt."""
    api.grant("first", expires_in=600, refresh_token=REFRESH)
    api.grant("second", expires_in=600)
    ledger = MemoryLedger()
    tokens = provider(make_transport(), clock, ledger=ledger)
    tokens.token(cycle(clock))
    ledger.paused_until = datetime(2030, 1, 1, tzinfo=UTC)

    clock.advance(600)
    assert tokens.token(cycle(clock)) == "second"
    assert grant_types(api) == ["password", "refresh_token"]


def test_the_last_known_partner_comes_from_the_ledger(
    make_transport: Callable[..., Any], clock: Any
) -> None:
    assert provider(make_transport(), clock, ledger=MemoryLedger()).known_partner == "remembered"


# --------------------------------------------------------------------------- shared cache


class MemoryCache:
    def __init__(self) -> None:
        self.saved: SavedToken | None = None
        self.loads = 0

    def load(self) -> SavedToken | None:
        self.loads += 1
        return self.saved

    def save(self, token: SavedToken) -> None:
        self.saved = token


def test_a_token_saved_by_one_process_is_used_by_the_next(
    api: FakePartnerApi, make_transport: Callable[..., Any], clock: Any
) -> None:
    api.grant(ACCESS, expires_in=43200, refresh_token=REFRESH)
    cache = MemoryCache()
    provider(make_transport(), clock, cache=cache).token(cycle(clock))

    later = provider(make_transport(), clock, cache=cache, wall_offset=3600)

    assert later.token(cycle(clock)) == ACCESS
    assert len(api.token_forms()) == 1


def test_an_expired_shared_token_is_renewed_with_its_refresh_token(
    api: FakePartnerApi, make_transport: Callable[..., Any], clock: Any
) -> None:
    api.grant(ACCESS, expires_in=600, refresh_token=REFRESH)
    api.grant("renewed", expires_in=600)
    cache = MemoryCache()
    provider(make_transport(), clock, cache=cache).token(cycle(clock))

    later = provider(make_transport(), clock, cache=cache, wall_offset=590)

    assert later.token(cycle(clock)) == "renewed"
    assert grant_types(api) == ["password", "refresh_token"]
    assert api.token_forms()[1]["refresh_token"] == REFRESH
    assert cache.saved is not None and cache.saved.access_token == "renewed"


def test_a_refused_refresh_takes_the_token_another_process_just_saved(
    api: FakePartnerApi, make_transport: Callable[..., Any], clock: Any
) -> None:
    """Rotating refresh tokens: the loser of a renewal race reuses the winner's token."""
    api.grant(ACCESS, expires_in=600, refresh_token=REFRESH)
    api.token_error(400, "invalid_grant")
    cache = MemoryCache()
    tokens = provider(make_transport(), clock, cache=cache)
    tokens.token(cycle(clock))
    clock.advance(600)

    class RacedCache(MemoryCache):
        def load(self) -> SavedToken | None:
            self.loads += 1
            if self.loads == 2:  # after our refresh was refused, the winner's token is there
                return SavedToken("winner", "r2", WALL_EPOCH + clock(), 600)
            return cache.saved

    tokens._cache = RacedCache()

    assert tokens.token(cycle(clock)) == "winner"
    assert grant_types(api) == ["password", "refresh_token"]


def test_token_reprs_show_no_secret(
    api: FakePartnerApi, make_tokens: MakeTokens, deadline: Deadline
) -> None:
    api.grant(ACCESS, refresh_token=REFRESH)
    tokens = make_tokens()
    tokens.token(deadline)
    shown = f"{tokens._cached!r} {SavedToken(ACCESS, REFRESH, 0, 1)!r}"

    assert ACCESS not in shown and REFRESH not in shown


def provider(
    transport: Any,
    clock: Any,
    *,
    wall_offset: float = 0.0,
    **options: Any,
) -> TokenProvider:
    return TokenProvider(
        transport,
        auth_url=AUTH_URL,
        credentials=Credentials(CLIENT_ID, EMAIL, PASSWORD),
        clock=clock,
        wall_clock=lambda: WALL_EPOCH + clock() + wall_offset,
        **options,
    )
