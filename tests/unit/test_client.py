"""The Partner API client: Bearer header, one fresh token after a 401, retries, payload checks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sync.client import PartnerClient
from sync.errors import AuthError, PayloadError, RejectedError, RemoteError, UnavailableError
from sync.models import Record
from sync.retry import BACKOFF_BASE_SECONDS, Deadline
from tests.records import parse_platform_list
from tests.unit.fake_partner_api import (
    AUTH_URL,
    PASSWORD,
    PLATFORMS_PATH,
    PLATFORMS_URL,
    FakePartnerApi,
    dropped_after_send,
)

MakeClient = Callable[..., PartnerClient]
ACCESS = "canary-access-3b7d"
REFRESH = "canary-refresh-e41c"
ENDPOINT = "/v4/global/platforms"


def fetch(client: PartnerClient, deadline: Deadline) -> list[Record]:
    return client.fetch(PLATFORMS_PATH, parse_platform_list, deadline)


def fails_with(client: PartnerClient, deadline: Deadline, kind: type[RemoteError]) -> RemoteError:
    """The error `fetch` raises, checked to be one line naming no secret."""
    with pytest.raises(kind) as caught:
        fetch(client, deadline)
    error = caught.value
    text = f"{error} {error!r} {vars(error)}"
    assert "\n" not in str(error)
    for secret in (PASSWORD, ACCESS, REFRESH):
        assert secret not in text
    return error


# --------------------------------------------------------------------------- success


def test_platforms_are_fetched_with_the_bearer_token(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    api.grant(ACCESS)
    api.platforms([{"id": 1, "name": "Web"}, {"id": 2, "name": "App", "beta": True}])

    records = fetch(make_client(), deadline)

    assert [(r.key, r.typed[0]) for r in records] == [(1, "Web"), (2, "App")]
    assert records[1].raw["beta"] is True
    (request,) = api.requests_to(PLATFORMS_URL)
    assert request.method == "GET"
    assert request.headers["Authorization"] == f"Bearer {ACCESS}"
    assert request.headers["Accept"] == "application/json"


def test_token_is_reused_across_fetches(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    api.grant(ACCESS)
    api.platforms()
    client = make_client()

    fetch(client, deadline)
    fetch(client, deadline)

    assert len(api.requests_to(AUTH_URL)) == 1
    assert api.bearer_tokens() == [f"Bearer {ACCESS}"] * 2


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/vnd.comm100+json"],
)
def test_json_content_types_are_accepted(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline, content_type: str
) -> None:
    api.grant(ACCESS)
    api.platforms(body=b'[{"id": 1, "name": "Web"}]', content_type=content_type)

    assert [r.key for r in fetch(make_client(), deadline)] == [1]


# --------------------------------------------------------------------------- 401


def test_401_gets_one_fresh_token_and_one_retry(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline, clock
) -> None:
    api.grant("revoked-token")
    api.grant(ACCESS)
    api.platforms(status=401, json={"message": "token revoked"})
    api.platforms()

    assert [r.key for r in fetch(make_client(), deadline)] == [1]
    assert api.bearer_tokens() == ["Bearer revoked-token", f"Bearer {ACCESS}"]
    assert len(api.requests_to(AUTH_URL)) == 2
    assert clock.sleeps == []


def test_fresh_token_after_a_401_uses_the_refresh_grant_when_possible(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    api.grant("revoked-token", refresh_token=REFRESH)
    api.grant(ACCESS)
    api.platforms(status=401, body=b"")
    api.platforms()

    fetch(make_client(), deadline)

    assert [f["grant_type"] for f in api.token_forms()] == ["password", "refresh_token"]


def test_second_401_fails_the_cycle(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    api.grant(ACCESS)
    api.platforms(status=401, body=b"")

    error = fails_with(make_client(), deadline, AuthError)

    assert str(error) == f"GET {ENDPOINT}: HTTP 401 with a freshly issued token"
    assert (error.status, error.endpoint, error.exit_code) == (401, ENDPOINT, 77)
    assert len(api.requests_to(PLATFORMS_URL)) == 2
    assert len(api.requests_to(AUTH_URL)) == 2


def test_token_refused_after_a_401_fails_the_cycle(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    api.grant(ACCESS)
    api.token_error(400, "invalid_grant", "account locked")
    api.platforms(status=401, body=b"")

    error = fails_with(make_client(), deadline, AuthError)

    assert "invalid_grant: account locked" in str(error)
    assert len(api.requests_to(PLATFORMS_URL)) == 1


# --------------------------------------------------------------------------- retries


def test_server_error_then_success_is_retried_with_a_backoff_sleep(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline, clock
) -> None:
    api.grant(ACCESS)
    api.platforms(status=502, body=b"<html>Bad gateway</html>", content_type="text/html")
    api.platforms()

    assert [r.key for r in fetch(make_client(), deadline)] == [1]
    (slept,) = clock.sleeps
    assert 0.0 <= slept <= BACKOFF_BASE_SECONDS
    assert len(api.requests_to(AUTH_URL)) == 1


def test_connection_dropped_during_the_get_is_retried(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    api.grant(ACCESS)
    api.platforms(body=dropped_after_send())
    api.platforms()

    assert [r.key for r in fetch(make_client(), deadline)] == [1]


def test_429_with_retry_after_is_honoured(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline, clock
) -> None:
    api.grant(ACCESS)
    api.platforms(status=429, headers={"Retry-After": "2"}, body=b"")
    api.platforms()

    fetch(make_client(), deadline)

    assert clock.sleeps == [2.0]


def test_429_asking_for_an_hour_fails_fast_without_sleeping(
    api: FakePartnerApi, make_client: MakeClient, clock
) -> None:
    api.grant(ACCESS)
    api.platforms(status=429, headers={"Retry-After": "3600"}, body=b"")

    error = fails_with(make_client(), Deadline(7200.0, clock), UnavailableError)

    assert (error.status, error.exit_code) == (429, 75)
    assert clock.sleeps == []
    assert len(api.requests_to(PLATFORMS_URL)) == 1


def test_retries_used_up_name_the_endpoint_and_status(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline, clock
) -> None:
    api.grant(ACCESS)
    api.platforms(status=503, body=b"")

    error = fails_with(make_client(retries=2), deadline, UnavailableError)

    assert str(error) == f"GET {ENDPOINT}: HTTP 503 (gave up after 3 attempts)"
    assert (error.endpoint, error.status) == (ENDPOINT, 503)
    assert len(api.requests_to(PLATFORMS_URL)) == 3
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_other_client_errors_are_rejected_without_retrying(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline, clock, status: int
) -> None:
    api.grant(ACCESS)
    api.platforms(status=status, json={"message": "nope"})

    error = fails_with(make_client(), deadline, RejectedError)

    assert str(error) == f"GET {ENDPOINT}: HTTP {status}"
    assert (error.status, error.exit_code) == (status, 65)
    assert len(api.requests_to(PLATFORMS_URL)) == 1
    assert clock.sleeps == []


# --------------------------------------------------------------------------- payload


def test_html_with_200_is_a_payload_error(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    api.grant(ACCESS)
    api.platforms(body=b"<html><body>Sign in</body></html>", content_type="text/html")

    error = fails_with(make_client(), deadline, PayloadError)

    assert str(error) == f"GET {ENDPOINT}: expected application/json, got Content-Type text/html"
    assert (error.status, error.exit_code) == (200, 65)
    assert len(api.requests_to(PLATFORMS_URL)) == 1


def test_missing_content_type_is_a_payload_error(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    api.grant(ACCESS)
    api.platforms(body=b"[]", content_type=None)

    error = fails_with(make_client(), deadline, PayloadError)

    assert str(error).endswith("got Content-Type none")


def test_html_labelled_as_json_is_a_payload_error(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    api.grant(ACCESS)
    api.platforms(body=b"<html>maintenance</html>", content_type="application/json")

    error = fails_with(make_client(), deadline, PayloadError)

    assert str(error).startswith(f"GET {ENDPOINT}: platform list is not valid JSON")


def test_invalid_platform_list_is_a_payload_error_naming_the_endpoint(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    api.grant(ACCESS)
    api.platforms([{"id": 1, "name": "a"}, {"id": "2", "name": "b"}])

    error = fails_with(make_client(), deadline, PayloadError)

    assert str(error).startswith(f"GET {ENDPOINT}: invalid platform list: item 1: id: ")
    assert error.endpoint == ENDPOINT
    assert len(api.requests_to(PLATFORMS_URL)) == 1


def test_response_larger_than_the_cap_is_a_payload_error(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    api.grant(ACCESS)
    api.platforms(body=b"[]", headers={"Content-Length": str(10 * 1024 * 1024)})

    error = fails_with(make_client(max_response_bytes=1024 * 1024), deadline, PayloadError)

    assert "exceeds the cap" in str(error)
    assert len(api.requests_to(PLATFORMS_URL)) == 1


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(
            lambda api: api.platforms(status=401, body=f"Bearer {ACCESS} refused".encode()),
            id="two-401s",
        ),
        pytest.param(
            lambda api: api.platforms(status=503, body=f"token={ACCESS}".encode()), id="503"
        ),
        pytest.param(
            lambda api: api.platforms(status=403, json={"token": ACCESS, "password": PASSWORD}),
            id="403",
        ),
        pytest.param(
            lambda api: api.platforms(body=f"<p>{ACCESS}</p>".encode(), content_type="text/html"),
            id="html",
        ),
        pytest.param(
            lambda api: api.platforms(json=[{"id": ACCESS, "name": PASSWORD}]), id="bad-payload"
        ),
        pytest.param(
            lambda api: api.platforms(body=f'[{{"id": 1, "name": "{ACCESS}'.encode()),
            id="truncated-json",
        ),
    ],
)
def test_no_error_message_carries_the_password_or_a_token(
    api: FakePartnerApi,
    make_client: MakeClient,
    deadline: Deadline,
    script: Callable[[FakePartnerApi], None],
) -> None:
    api.grant(ACCESS, refresh_token=REFRESH)
    script(api)

    fails_with(make_client(retries=1), deadline, RemoteError)
