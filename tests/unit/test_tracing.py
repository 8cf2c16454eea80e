"""sync.tracing: when it is on, the spans it makes, what they may carry; HTTP attempts as spans."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from sync import tracing
from sync.client import PartnerClient
from sync.errors import AuthError, StoreError, UnavailableError
from sync.parsing import parse_list
from sync.redaction import Secrets
from sync.resources import PLATFORMS
from sync.retry import Deadline
from tests.spans import every_text, recording
from tests.unit.fake_partner_api import (
    AUTH_URL,
    CLIENT_ID,
    EMAIL,
    PASSWORD,
    PLATFORMS_PATH,
    FakePartnerApi,
    connect_refused,
)

MakeClient = Callable[..., PartnerClient]
ACCESS = "canary-access-token-5be1"
REFRESH = "canary-refresh-token-77c0"


@pytest.mark.parametrize(
    ("setting", "environ", "reason"),
    [
        (None, {}, None),
        (
            None,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            None,
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"},
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, None),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, None),
        (True, {}, "SYNC_OTEL"),
        (True, {"OTEL_SDK_DISABLED": "true"}, "SYNC_OTEL"),
        (False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, None),
    ],
)
def test_tracing_is_on_when_sync_otel_or_an_otlp_endpoint_says_so(
    setting: bool | None, environ: dict[str, str], reason: str | None
) -> None:
    assert tracing.wanted(setting, environ) == reason


def test_off_a_span_is_one_shared_no_op_and_bind_returns_the_function_itself() -> None:
    assert not tracing.enabled()

    def work() -> int:
        return 1

    with tracing.span("a", {"k": 1}) as first, tracing.span("b") as second:
        first.set({"k": 2})
        first.fail(StoreError("nothing records this"))
    assert first is second
    assert tracing.bind(work) is work


def test_a_span_nests_under_the_current_one_and_leaves_out_missing_attributes() -> None:
    attributes = {"sync.partner_id": "p1", "sync.run_id": None}
    with recording() as recorded, tracing.span("outer", attributes) as outer:
        outer.set({"sync.resources": 2, "sync.outcome": None})
        with tracing.span("inner", kind="client"):
            pass

    outer_span, inner_span = recorded.one("outer"), recorded.one("inner")
    assert dict(outer_span.attributes or {}) == {"sync.partner_id": "p1", "sync.resources": 2}
    assert recorded.parent(inner_span) is outer_span
    assert inner_span.kind is SpanKind.CLIENT
    assert outer_span.status.status_code is StatusCode.UNSET


def test_our_error_is_recorded_masked_and_a_foreign_one_by_its_type_only() -> None:
    secrets = Secrets([PASSWORD])
    with recording(secrets) as recorded:
        with pytest.raises(StoreError), tracing.span("ours"):
            raise StoreError(f"database error (OperationalError): password {PASSWORD} refused")
        with pytest.raises(ValueError), tracing.span("foreign"):
            raise ValueError(f"INSERT … VALUES ('{PASSWORD}')")

    ours, foreign = recorded.one("ours"), recorded.one("foreign")
    assert ours.status.status_code is StatusCode.ERROR
    assert ours.status.description == (
        "StoreError: database error (OperationalError): password *** refused"
    )
    assert (ours.attributes or {})["error.type"] == "StoreError"
    assert [dict(e.attributes or {}) for e in ours.events] == [
        {
            "exception.type": "StoreError",
            "exception.message": "StoreError: database error (OperationalError): password *** "
            "refused",
        }
    ]
    assert foreign.status.description == "ValueError"
    assert [dict(e.attributes or {}) for e in foreign.events] == [
        {"exception.type": "ValueError", "exception.message": "ValueError"}
    ]
    assert not any(PASSWORD in text for span in recorded.spans for text in every_text(span))


def test_a_description_given_by_the_block_is_kept_when_the_error_then_leaves_it() -> None:
    with recording() as recorded, pytest.raises(OSError), tracing.span("attempt") as span:
        span.fail("ConnectTimeout", "connect timeout")
        raise OSError("from a library, with text we do not keep")

    attempt = recorded.one("attempt")
    assert attempt.status.description == "connect timeout"
    assert (attempt.attributes or {})["error.type"] == "ConnectTimeout"


def test_bind_carries_the_current_span_into_a_pool_thread() -> None:
    def child(name: str) -> str:
        with tracing.span(name):
            return threading.current_thread().name

    with recording() as recorded, ThreadPoolExecutor(2) as pool, tracing.span("parent"):
        bound = pool.submit(tracing.bind(child), "bound").result()
        unbound = pool.submit(child, "unbound").result()

    assert bound != threading.current_thread().name
    assert recorded.parent(recorded.one("bound")) is recorded.one("parent")
    # Without bind a pool thread starts from an empty context: the span is a root of its own.
    assert recorded.one("unbound").parent is None
    assert unbound != threading.current_thread().name


# --------------------------------------------------------------------------- HTTP attempts


def fetch(client: PartnerClient, deadline: Deadline) -> None:
    client.fetch(PLATFORMS_PATH, lambda body: parse_list(body, resource=PLATFORMS), deadline)


def test_each_attempt_is_a_client_span_with_path_status_and_resend_count(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    client = make_client(partner_id="p-42")
    api.grant(ACCESS, refresh_token=REFRESH)
    api.platforms(status=503, body=b"down")
    api.platforms()

    with recording(client.tokens.secrets) as recorded, tracing.span("list"):
        fetch(client, deadline)

    token, first, second = recorded.children(recorded.one("list"))
    assert token.name == "POST /oauth/token"
    assert dict(token.attributes or {}) == {
        "http.request.method": "POST",
        "url.scheme": "https",
        "url.path": "/oauth/token",
        "url.template": "/oauth/token",
        "server.address": "partner.example.test",
        "server.port": 443,
        "http.response.status_code": 200,
    }
    assert api.requests_to(AUTH_URL)[0].url == AUTH_URL + "?partnerId=p-42"  # not in the span
    assert [first.name, second.name] == ["GET /v4/global/platforms"] * 2
    assert first.kind is SpanKind.CLIENT
    assert (first.attributes or {})["url.path"] == "/v4/global/platforms"
    assert (first.attributes or {})["http.response.status_code"] == 503
    assert "http.request.resend_count" not in (first.attributes or {})
    assert (first.status.status_code, first.status.description) == (StatusCode.ERROR, "HTTP 503")
    assert (first.attributes or {})["error.type"] == "503"
    assert (second.attributes or {})["http.request.resend_count"] == 1
    assert (second.attributes or {})["http.response.status_code"] == 200
    assert second.status.status_code is StatusCode.UNSET
    texts = [text for span in recorded.spans for text in every_text(span)]
    for secret in (PASSWORD, ACCESS, REFRESH, CLIENT_ID, EMAIL, "partnerId", "p-42", "Bearer"):
        assert not any(secret in text for text in texts), secret


def test_a_connection_failure_is_recorded_as_its_kind_not_the_library_text(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    client = make_client(retries=0)
    api.grant(ACCESS)
    api.platforms(body=connect_refused())

    with recording(client.tokens.secrets) as recorded, pytest.raises(UnavailableError):
        fetch(client, deadline)

    (attempt,) = recorded.named("GET /v4/global/platforms")
    assert attempt.status.description == "connection failed"
    assert (attempt.attributes or {})["error.type"] == "ConnectionError"
    assert "http.response.status_code" not in (attempt.attributes or {})


def test_a_refused_login_echoing_the_password_leaves_no_trace_of_it(
    api: FakePartnerApi, make_client: MakeClient, deadline: Deadline
) -> None:
    client = make_client()
    api.token_error(400, "invalid_grant", f"password '{PASSWORD}' is wrong for {EMAIL}")

    secrets = client.tokens.secrets
    with recording(secrets) as recorded, pytest.raises(AuthError), tracing.span("cycle"):
        fetch(client, deadline)

    cycle = recorded.one("cycle")
    assert cycle.status.description is not None
    assert cycle.status.description.startswith("AuthError: token endpoint refused")
    assert (recorded.one("POST /oauth/token").attributes or {})["error.type"] == "400"
    assert not any(PASSWORD in text for span in recorded.spans for text in every_text(span))
