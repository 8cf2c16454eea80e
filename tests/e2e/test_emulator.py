"""The Partner API emulator, exercised over real sockets on 127.0.0.1 with requests."""

from __future__ import annotations

import base64
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sync.emulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_EMAIL,
    DEFAULT_PARTNER_ID,
    DEFAULT_PASSWORD,
    DEFAULT_PLATFORMS,
    FAULT_KINDS,
    STAT_KEYS,
    Emulator,
    Fault,
)

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 5


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


def password_form(**overrides: str) -> dict[str, str]:
    form = {
        "client_id": DEFAULT_CLIENT_ID,
        "grant_type": "password",
        "email": DEFAULT_EMAIL,
        "password": DEFAULT_PASSWORD,
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v != "<omit>"}


def token_request(emu: Emulator, form: dict[str, str], **kwargs: Any) -> requests.Response:
    return requests.post(emu.auth_url, data=form, timeout=TIMEOUT, **kwargs)


def get_tokens(emu: Emulator) -> dict[str, Any]:
    response = token_request(emu, password_form())
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def get_platforms(emu: Emulator, token: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return requests.get(
        emu.api_url + "/global/platforms", headers=headers, timeout=TIMEOUT, **kwargs
    )


def jwt_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def raw_exchange(emu: Emulator, request: bytes) -> tuple[bytes, BaseException | None]:
    """Send raw bytes and read until EOF or an error; returns what arrived and the error."""
    received = b""
    with socket.create_connection((emu.host, int(emu.url.rsplit(":", 1)[1])), TIMEOUT) as sock:
        sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as exc:
            return received, exc
    return received, None


def raw_get_platforms(emu: Emulator) -> tuple[bytes, BaseException | None]:
    request = b"GET /v4/global/platforms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    return raw_exchange(emu, request)


# -- token endpoint -----------------------------------------------------------------------


def test_password_grant_answers_in_the_quick_start_shape(emu: Emulator) -> None:
    response = token_request(emu, password_form())
    body = response.json()
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert list(body) == ["access_token", "expires_in", "token_type", "refresh_token", "scope"]
    assert body["expires_in"] == 43200
    assert body["token_type"] == "Bearer"
    assert re.fullmatch(r"[0-9A-F]{64}", body["refresh_token"])
    assert body["scope"] == "comm100 offline_access"


def test_access_token_is_an_hs256_jwt_with_the_reference_claims() -> None:
    with Emulator(token_lifetime_seconds=600, partner_id="4242", client_id="c1") as emu:
        form = password_form(client_id="c1")
        token = token_request(emu, form, params={"partnerId": "4242"}).json()["access_token"]
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token), "base64url without padding"
    assert jwt_part(token, 0) == {"alg": "HS256", "typ": "at+jwt"}
    claims = jwt_part(token, 1)
    expected = {"nbf", "exp", "iat", "iss", "aud", "client_id", "sub", "auth_time", "idp"}
    expected |= {"userId", "partnerId", "role", "jti", "scope", "amr"}
    assert set(claims) == expected
    assert claims["exp"] - claims["nbf"] == 600
    assert abs(claims["iat"] - time.time()) < 5
    assert claims["partnerId"] == "4242"
    assert claims["client_id"] == "c1"
    assert claims["iss"] == emu.url
    assert claims["aud"] == "ids.resource.1"
    assert (claims["idp"], claims["role"], claims["amr"]) == ("local", "User", ["pwd"])
    assert claims["scope"] == ["ids.scope", "openid", "profile", "offline_access"]
    assert claims["sub"] == claims["userId"]


def test_each_issue_gives_a_distinct_token_and_jti(emu: Emulator) -> None:
    first, second = get_tokens(emu)["access_token"], get_tokens(emu)["access_token"]
    assert first != second
    assert jwt_part(first, 1)["jti"] != jwt_part(second, 1)["jti"]


@pytest.mark.parametrize(
    "override", [{"password": "wrong"}, {"email": "someone@example.com"}], ids=["password", "email"]
)
def test_wrong_credentials_are_invalid_grant(emu: Emulator, override: dict[str, str]) -> None:
    response = token_request(emu, password_form(**override))
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "invalid username or password",
    }
    assert response.headers["Cache-Control"] == "no-store"


def test_unknown_client_is_401_invalid_client(emu: Emulator) -> None:
    response = token_request(emu, password_form(client_id="someone-else"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("missing", ["client_id", "grant_type", "email", "password"])
def test_missing_field_is_invalid_request(emu: Emulator, missing: str) -> None:
    response = token_request(emu, password_form(**{missing: "<omit>"}))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert missing in response.json()["error_description"]


def test_unsupported_grant_type_is_rejected(emu: Emulator) -> None:
    response = token_request(emu, password_form(grant_type="client_credentials"))
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_json_body_is_invalid_request(emu: Emulator) -> None:
    response = requests.post(emu.auth_url, json=password_form(), timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert emu.stats["token_rejected"] == 1


def test_quick_start_literal_content_type_is_accepted(emu: Emulator) -> None:
    """The quick start's curl sends 'Content-Type: x-www-form-urlencoded'."""
    body = "&".join(f"{k}={v}" for k, v in password_form().items())
    headers = {"Content-Type": "x-www-form-urlencoded"}
    response = requests.post(emu.auth_url, data=body, headers=headers, timeout=TIMEOUT)
    assert response.status_code == 200
    assert "access_token" in response.json()


def test_partner_id_mismatch_is_invalid_request(emu: Emulator) -> None:
    response = token_request(emu, password_form(), params={"partnerId": "99999"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "99999" in response.json()["error_description"]


def test_matching_partner_id_is_accepted(emu: Emulator) -> None:
    response = token_request(emu, password_form(), params={"partnerId": DEFAULT_PARTNER_ID})
    assert response.status_code == 200


def test_refresh_grant_issues_a_new_access_token_and_keeps_the_refresh_token(
    emu: Emulator,
) -> None:
    first = get_tokens(emu)
    form = {
        "client_id": DEFAULT_CLIENT_ID,
        "grant_type": "refresh_token",
        "refresh_token": first["refresh_token"],
    }
    second = token_request(emu, form).json()
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] == first["refresh_token"]
    assert (
        jwt_part(second["access_token"], 1)["auth_time"]
        == jwt_part(first["access_token"], 1)["auth_time"]
    )
    assert token_request(emu, form).status_code == 200
    assert get_platforms(emu, second["access_token"]).status_code == 200
    assert emu.stats["token_refresh"] == 2


def test_rotation_issues_a_new_refresh_token_and_revokes_the_used_one() -> None:
    with Emulator(rotate_refresh_tokens=True) as emu:
        old = get_tokens(emu)["refresh_token"]
        form = {"client_id": DEFAULT_CLIENT_ID, "grant_type": "refresh_token"}
        renewed = token_request(emu, {**form, "refresh_token": old})
        reused = token_request(emu, {**form, "refresh_token": old})
        new = renewed.json()["refresh_token"]
        again = token_request(emu, {**form, "refresh_token": new})
    assert renewed.status_code == 200
    assert new != old
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert again.status_code == 200


def test_revoked_refresh_tokens_are_invalid_grant(emu: Emulator) -> None:
    tokens = get_tokens(emu)
    emu.revoke_refresh_tokens()
    form = {
        "client_id": DEFAULT_CLIENT_ID,
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
    }
    response = token_request(emu, form)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert get_platforms(emu, tokens["access_token"]).status_code == 200


def test_without_refresh_tokens_the_scope_lacks_offline_access() -> None:
    with Emulator(issue_refresh_tokens=False) as emu:
        body = get_tokens(emu)
    assert "refresh_token" not in body
    assert body["scope"] == "comm100"


# -- platform list ------------------------------------------------------------------------


def test_platform_list_with_a_valid_token(emu: Emulator) -> None:
    response = get_platforms(emu, get_tokens(emu)["access_token"])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.json() == DEFAULT_PLATFORMS


def test_set_platforms_serves_objects_as_given_in_utf8(emu: Emulator) -> None:
    platforms: list[dict[str, object]] = [{"id": 7, "name": "Montréal", "region": "CA"}]
    emu.set_platforms(platforms)
    response = get_platforms(emu, get_tokens(emu)["access_token"])
    assert json.loads(response.content.decode("utf-8")) == platforms
    assert "Montréal".encode() in response.content
    assert int(response.headers["Content-Length"]) == len(response.content)


def test_platforms_without_a_token_is_401_with_a_bearer_challenge(emu: Emulator) -> None:
    response = get_platforms(emu)
    assert response.status_code == 401
    assert 'Bearer error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.json()["error"] == "invalid_token"
    assert emu.stats["platforms_unauthorized"] == 1


def _tampered(token: str) -> str:
    header, _, signature = token.split(".")
    claims = jwt_part(token, 1) | {"partnerId": "1"}
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda token: "garbage",
        lambda token: token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
        _tampered,
    ],
    ids=["not-a-jwt", "bad-signature", "forged-claims"],
)
def test_platforms_with_a_bad_token_is_401(emu: Emulator, mangle: Any) -> None:
    response = get_platforms(emu, mangle(get_tokens(emu)["access_token"]))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_token_from_another_instance_is_401(emu: Emulator) -> None:
    with Emulator() as other:
        foreign = get_tokens(other)["access_token"]
    assert get_platforms(emu, foreign).status_code == 401


def test_non_bearer_scheme_is_401(emu: Emulator) -> None:
    token = get_tokens(emu)["access_token"]
    response = requests.get(
        emu.api_url + "/global/platforms",
        headers={"Authorization": f"Basic {token}"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 401


def test_revoked_access_token_is_401_and_a_new_one_works(emu: Emulator) -> None:
    token = get_tokens(emu)["access_token"]
    emu.revoke_tokens()
    response = get_platforms(emu, token)
    assert response.status_code == 401
    assert "revoked" in response.json()["error_description"]
    assert get_platforms(emu, get_tokens(emu)["access_token"]).status_code == 200


def test_expire_tokens_makes_issued_tokens_401_as_expired(emu: Emulator) -> None:
    token = get_tokens(emu)["access_token"]
    emu.expire_tokens()
    response = get_platforms(emu, token)
    assert response.status_code == 401
    assert "expired" in response.json()["error_description"]
    assert "expired" in response.headers["WWW-Authenticate"]


def test_token_past_its_exp_by_the_wall_clock_is_401() -> None:
    """A zero lifetime gives exp == nbf == now, already past by the time it is used."""
    with Emulator(token_lifetime_seconds=0) as emu:
        response = get_platforms(emu, get_tokens(emu)["access_token"])
    assert response.status_code == 401
    assert "expired" in response.json()["error_description"]


def test_unknown_path_is_404_json(emu: Emulator) -> None:
    response = requests.get(emu.url + "/v4/global/nowhere", timeout=TIMEOUT)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(("method", "path"), [("POST", "/v4/global/platforms"), ("GET", "")])
def test_wrong_method_is_405(emu: Emulator, method: str, path: str) -> None:
    url = emu.url + path if path else emu.auth_url
    response = requests.request(method, url, timeout=TIMEOUT)
    assert response.status_code == 405
    assert "Allow" in response.headers


def test_connections_are_kept_alive_between_requests(emu: Emulator) -> None:
    """HTTP/1.1 keep-alive, as a requests.Session expects of the real API."""
    connection = http.client.HTTPConnection(emu.host, int(emu.url.rsplit(":", 1)[1]), TIMEOUT)
    try:
        answers = []
        for _ in range(2):
            connection.request("GET", "/v4/global/platforms")
            response = connection.getresponse()
            answers.append((response.status, response.will_close, json.loads(response.read())))
            sock = connection.sock
            assert sock is not None
            if not answers[1:]:
                first_sock = sock
        assert connection.sock is first_sock
    finally:
        connection.close()
    assert [(status, will_close) for status, will_close, _ in answers] == [(401, False)] * 2


# -- request log and stats ----------------------------------------------------------------


def test_request_log_masks_the_password(emu: Emulator) -> None:
    token_request(emu, password_form(), params={"partnerId": DEFAULT_PARTNER_ID})
    get_platforms(emu, "abc")
    token_record, platforms_record = emu.requests
    assert token_record.method == "POST"
    assert token_record.path == "/oauth/token"
    assert token_record.query == {"partnerId": DEFAULT_PARTNER_ID}
    assert token_record.form["password"] == "***"
    assert token_record.form["email"] == DEFAULT_EMAIL
    assert DEFAULT_PASSWORD not in repr(token_record)
    assert platforms_record.headers["Authorization"] == "Bearer abc"
    assert platforms_record.form == {}
    assert token_record.timestamp <= platforms_record.timestamp


def test_stats_count_each_outcome_and_reset(emu: Emulator) -> None:
    tokens = get_tokens(emu)
    token_request(emu, password_form(password="nope"))
    refresh = {
        "client_id": DEFAULT_CLIENT_ID,
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
    }
    token_request(emu, refresh)
    get_platforms(emu, tokens["access_token"])
    get_platforms(emu)
    emu.inject("platforms", Fault("status", status=502))
    get_platforms(emu)
    emu.inject("token", Fault("status", status=503))
    token_request(emu, password_form())
    expected = {
        "token_password": 1,
        "token_refresh": 1,
        "token_rejected": 1,
        "token_fault": 1,
        "platforms_ok": 1,
        "platforms_unauthorized": 1,
        "platforms_fault": 1,
    }
    assert emu.stats == dict.fromkeys(STAT_KEYS, 0) | expected
    emu.reset_stats()
    assert set(emu.stats.values()) == {0}


# -- faults -------------------------------------------------------------------------------


def test_status_fault_fires_before_the_token_check_with_retry_after(emu: Emulator) -> None:
    emu.inject("platforms", Fault("status", status=503, retry_after="1"))
    response = get_platforms(emu)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"] == "temporarily_unavailable"
    assert get_platforms(emu).status_code == 401, "the fault is used up"


def test_status_fault_with_a_custom_body(emu: Emulator) -> None:
    emu.inject("platforms", Fault("status", status=500, body=b"oops", content_type="text/plain"))
    response = get_platforms(emu)
    assert (response.status_code, response.content) == (500, b"oops")
    assert response.headers["Content-Type"] == "text/plain"


def test_faults_fire_in_order_and_times_counts_requests(emu: Emulator) -> None:
    emu.inject("platforms", Fault("status", status=502), times=2)
    emu.inject("platforms", Fault("status", status=504))
    statuses = [get_platforms(emu).status_code for _ in range(4)]
    assert statuses == [502, 502, 504, 401]


def test_fault_with_times_none_fires_until_cleared(emu: Emulator) -> None:
    emu.inject("platforms", Fault("status", status=500), times=None)
    assert [get_platforms(emu).status_code for _ in range(3)] == [500, 500, 500]
    emu.clear_faults()
    assert get_platforms(emu).status_code == 401


def test_token_fault_fires_before_the_grant_is_checked(emu: Emulator) -> None:
    emu.inject("token", Fault("status", status=503, retry_after="3600"))
    response = token_request(emu, password_form(password="wrong"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "3600"
    assert token_request(emu, password_form()).status_code == 200


def test_token_missing_fields_fault_omits_the_access_token(emu: Emulator) -> None:
    emu.inject("token", Fault("missing_fields"))
    body = token_request(emu, password_form()).json()
    assert "access_token" not in body
    assert body["token_type"] == "Bearer"


def test_delay_fault_answers_normally_after_the_delay(emu: Emulator) -> None:
    token = get_tokens(emu)["access_token"]
    emu.inject("platforms", Fault("delay", delay_seconds=0.3))
    started = time.monotonic()
    response = get_platforms(emu, token)
    assert time.monotonic() - started >= 0.3
    assert response.json() == DEFAULT_PLATFORMS


def test_malformed_json_fault_sends_a_cut_array(emu: Emulator) -> None:
    emu.inject("platforms", Fault("malformed_json"))
    response = get_platforms(emu)
    assert response.status_code == 200
    assert response.content.startswith(b'[{"id": 100')
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_html_fault_sends_a_maintenance_page(emu: Emulator) -> None:
    emu.inject("platforms", Fault("html"))
    response = get_platforms(emu)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert b"<html>" in response.content


def test_wrong_content_type_fault_labels_json_as_text(emu: Emulator) -> None:
    token = get_tokens(emu)["access_token"]
    emu.inject("platforms", Fault("wrong_content_type"))
    response = get_platforms(emu, token)
    assert response.headers["Content-Type"].startswith("text/plain")
    assert json.loads(response.content) == DEFAULT_PLATFORMS


def test_object_fault_wraps_the_list(emu: Emulator) -> None:
    emu.inject("platforms", Fault("object"))
    assert get_platforms(emu).json() == {"data": DEFAULT_PLATFORMS}


def test_wrong_types_fault_has_a_string_id_and_a_numeric_name(emu: Emulator) -> None:
    emu.inject("platforms", Fault("wrong_types"))
    items = get_platforms(emu).json()
    assert {"id": "100", "name": "US"} in items
    assert any(item["name"] == 123 for item in items)


def test_missing_fields_fault_drops_a_name(emu: Emulator) -> None:
    emu.inject("platforms", Fault("missing_fields"))
    items = get_platforms(emu).json()
    assert any("name" not in item for item in items)
    assert all("id" in item for item in items)


def test_duplicate_conflict_fault_repeats_an_id_with_another_name(emu: Emulator) -> None:
    emu.inject("platforms", Fault("duplicate_conflict"))
    items = get_platforms(emu).json()
    names_of_100 = [item["name"] for item in items if item["id"] == 100]
    assert len(names_of_100) == 2
    assert names_of_100[0] != names_of_100[1]


def test_duplicate_identical_fault_repeats_the_first_object(emu: Emulator) -> None:
    emu.inject("platforms", Fault("duplicate_identical"))
    items = get_platforms(emu).json()
    assert items == [*DEFAULT_PLATFORMS, DEFAULT_PLATFORMS[0]]


def test_duplicate_faults_are_refused_on_the_token_endpoint(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="list endpoints only"):
        emu.inject("token", Fault("duplicate_conflict"))


def test_raw_fault_sends_the_bytes_as_given(emu: Emulator) -> None:
    emu.inject("platforms", Fault("raw", body=b"\x00\xffnot json", content_type="image/png"))
    response = get_platforms(emu)
    assert (response.status_code, response.content) == (200, b"\x00\xffnot json")
    assert response.headers["Content-Type"] == "image/png"


def test_non_utf8_fault_sends_latin1_bytes(emu: Emulator) -> None:
    emu.inject("platforms", Fault("non_utf8"))
    content = get_platforms(emu).content
    with pytest.raises(UnicodeDecodeError):
        content.decode("utf-8")
    assert {"id": 400, "name": "Montréal"} in json.loads(content.decode("latin-1"))


def test_truncated_fault_sends_less_than_content_length(emu: Emulator) -> None:
    emu.inject("platforms", Fault("truncated"), times=2)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get_platforms(emu)
    received, error = raw_get_platforms(emu)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    assert error is None, "an orderly close, not a reset"
    assert 0 < len(body) < length


def test_reset_before_response_sends_nothing_then_resets(emu: Emulator) -> None:
    emu.inject("platforms", Fault("reset_before_response"), times=2)
    with pytest.raises(requests.exceptions.ConnectionError):
        get_platforms(emu)
    received, error = raw_get_platforms(emu)
    assert received == b""
    assert isinstance(error, ConnectionResetError)


def test_reset_mid_body_sends_headers_and_part_of_the_body_then_resets(emu: Emulator) -> None:
    emu.inject("platforms", Fault("reset_mid_body"), times=2)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get_platforms(emu)
    received, error = raw_get_platforms(emu)
    assert received.startswith(b"HTTP/1.1 200")
    assert received.partition(b"\r\n\r\n")[2].startswith(b"[")
    assert isinstance(error, ConnectionResetError)


def test_drip_fault_sends_the_normal_body_slowly(emu: Emulator) -> None:
    emu.set_platforms([{"id": 1, "name": "A"}])  # 24 bytes
    token = get_tokens(emu)["access_token"]
    emu.inject("platforms", Fault("drip", delay_seconds=0.02))
    started = time.monotonic()
    with get_platforms(emu, token, stream=True) as response:
        chunks = list(response.iter_content(chunk_size=1))
    assert time.monotonic() - started >= 23 * 0.02
    assert json.loads(b"".join(chunks)) == [{"id": 1, "name": "A"}]
    assert len(chunks) == 24


def test_drip_survives_a_client_that_hangs_up(
    emu: Emulator, capfd: pytest.CaptureFixture[str]
) -> None:
    emu.inject("platforms", Fault("drip", delay_seconds=0.01))
    with get_platforms(emu, stream=True) as response:
        assert response.raw.read(1) == b"{"
    time.sleep(0.1)
    assert get_platforms(emu).status_code == 401
    assert capfd.readouterr().err == ""


def test_big_fault_streams_a_valid_array_of_about_the_size(emu: Emulator) -> None:
    emu.inject("platforms", Fault("big", size_bytes=2_000_000))
    response = get_platforms(emu)
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert abs(len(response.content) - 2_000_000) < 100
    items = response.json()
    assert all(isinstance(i["id"], int) and isinstance(i["name"], str) for i in items)
    assert len({i["id"] for i in items}) == len(items)


def test_every_fault_kind_is_accepted_on_platforms(emu: Emulator) -> None:
    for kind in FAULT_KINDS:
        emu.inject("platforms", Fault(kind))
    emu.clear_faults()
    assert get_platforms(emu).status_code == 401


def test_invalid_fault_arguments_are_refused(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")
    with pytest.raises(ValueError, match="unknown endpoint"):
        emu.inject("nowhere", Fault("html"))
    with pytest.raises(ValueError, match="times"):
        emu.inject("platforms", Fault("html"), times=0)


def test_broken_faults_print_nothing_on_stderr(
    emu: Emulator, capfd: pytest.CaptureFixture[str]
) -> None:
    for kind in ("reset_before_response", "reset_mid_body", "truncated"):
        emu.inject("platforms", Fault(kind))
        with pytest.raises(requests.exceptions.RequestException):
            get_platforms(emu)
    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("", "")


def test_requests_are_served_concurrently(emu: Emulator) -> None:
    emu.inject("platforms", Fault("delay", delay_seconds=0.4), times=None)
    results: list[int] = []
    workers = [
        threading.Thread(target=lambda: results.append(get_platforms(emu).status_code))
        for _ in range(5)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results == [401] * 5
    assert time.monotonic() - started < 1.5


# -- rate limit ---------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_across_endpoints() -> None:
    with Emulator(rate_limit=3, rate_window_seconds=60) as emu:
        token = get_tokens(emu)["access_token"]
        assert get_platforms(emu, token).status_code == 200
        assert get_platforms(emu, token).status_code == 200
        limited = get_platforms(emu, token)
        token_limited = token_request(emu, password_form())
        stats = emu.stats
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["error"] == "too_many_requests"
    assert token_limited.status_code == 429
    assert stats["rate_limited"] == 2


def test_rate_limit_frees_a_slot_when_the_window_slides() -> None:
    with Emulator(rate_limit=2, rate_window_seconds=0.4) as emu:
        statuses = [get_platforms(emu).status_code for _ in range(3)]
        time.sleep(0.45)
        statuses.append(get_platforms(emu).status_code)
    assert statuses == [401, 401, 429, 401]


def test_rate_limit_none_disables_it() -> None:
    with Emulator(rate_limit=None) as emu:
        statuses = {get_platforms(emu).status_code for _ in range(10)}
    assert statuses == {401}


def test_control_requests_do_not_count_against_the_rate_limit() -> None:
    with Emulator(rate_limit=1) as emu:
        for _ in range(3):
            requests.get(emu.url + "/_emulator/stats", timeout=TIMEOUT).raise_for_status()
        assert get_platforms(emu).status_code == 401


# -- control API --------------------------------------------------------------------------


def control(emu: Emulator, method: str, name: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{emu.url}/_emulator/{name}", timeout=TIMEOUT, **kwargs)


def test_control_put_platforms_replaces_the_list(emu: Emulator) -> None:
    platforms = [{"id": 1, "name": "One", "extra": True}]
    assert control(emu, "PUT", "platforms", json=platforms).status_code == 200
    assert control(emu, "GET", "platforms").json() == platforms
    assert get_platforms(emu, get_tokens(emu)["access_token"]).json() == platforms


def test_control_put_platforms_refuses_a_non_array(emu: Emulator) -> None:
    response = control(emu, "PUT", "platforms", json={"id": 1})
    assert response.status_code == 400
    assert emu.platforms == DEFAULT_PLATFORMS


def test_control_post_fault_scripts_the_next_answer(emu: Emulator) -> None:
    fault = {"kind": "status", "status": 503, "retry_after": "1"}
    body = {"endpoint": "platforms", "times": 1, "fault": fault}
    assert control(emu, "POST", "faults", json=body).status_code == 200
    response = get_platforms(emu)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "1")
    assert get_platforms(emu).status_code == 401


@pytest.mark.parametrize(
    "field",
    [{"body": "caf\u00e9"}, {"body_b64": base64.b64encode(b"caf\xe9").decode()}],
    ids=["latin1", "base64"],
)
def test_control_fault_body_carries_arbitrary_bytes(emu: Emulator, field: dict[str, str]) -> None:
    body = {"endpoint": "platforms", "fault": {"kind": "raw", **field}}
    control(emu, "POST", "faults", json=body).raise_for_status()
    assert get_platforms(emu).content == b"caf\xe9"


def test_control_fault_with_null_times_fires_until_deleted(emu: Emulator) -> None:
    body = {"endpoint": "token", "times": None, "fault": {"kind": "status", "status": 500}}
    control(emu, "POST", "faults", json=body).raise_for_status()
    assert [token_request(emu, password_form()).status_code for _ in "ab"] == [500, 500]
    control(emu, "DELETE", "faults").raise_for_status()
    assert token_request(emu, password_form()).status_code == 200


def test_control_post_fault_refuses_an_unknown_kind(emu: Emulator) -> None:
    body = {"endpoint": "platforms", "fault": {"kind": "explode"}}
    response = control(emu, "POST", "faults", json=body)
    assert response.status_code == 400
    assert "explode" in response.json()["error_description"]


def test_control_revoke_and_expire_invalidate_issued_tokens(emu: Emulator) -> None:
    first = get_tokens(emu)["access_token"]
    control(emu, "POST", "revoke").raise_for_status()
    second = get_tokens(emu)["access_token"]
    control(emu, "POST", "expire").raise_for_status()
    assert "revoked" in get_platforms(emu, first).json()["error_description"]
    assert "expired" in get_platforms(emu, second).json()["error_description"]


def test_control_revoke_refresh_invalidates_refresh_tokens(emu: Emulator) -> None:
    refresh_token = get_tokens(emu)["refresh_token"]
    control(emu, "POST", "revoke-refresh").raise_for_status()
    form = {
        "client_id": DEFAULT_CLIENT_ID,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
    }
    assert token_request(emu, form).json()["error"] == "invalid_grant"


def test_control_stats_and_reset(emu: Emulator) -> None:
    get_tokens(emu)
    assert control(emu, "GET", "stats").json()["token_password"] == 1
    control(emu, "POST", "reset").raise_for_status()
    assert control(emu, "GET", "stats").json()["token_password"] == 0


def test_control_requests_lists_api_requests_only(emu: Emulator) -> None:
    get_tokens(emu)
    records = control(emu, "GET", "requests").json()
    assert [(r["method"], r["path"]) for r in records] == [("POST", "/oauth/token")]
    assert records[0]["form"]["password"] == "***"


def test_control_is_absent_when_disabled() -> None:
    with Emulator(control=False) as emu:
        response = control(emu, "GET", "stats")
        fault_put = control(emu, "PUT", "platforms", json=[])
    assert response.status_code == 404
    assert fault_put.status_code == 404


# -- lifecycle ----------------------------------------------------------------------------


def test_stop_is_prompt_while_a_drip_is_running() -> None:
    emu = Emulator().start()
    emu.inject("platforms", Fault("drip", delay_seconds=5))
    first_byte = threading.Event()
    outcome: list[BaseException] = []

    def slow_client() -> None:
        try:
            with get_platforms(emu, stream=True) as response:
                response.raw.read(1)
                first_byte.set()
                response.raw.read()
        except Exception as exc:  # raw.read() raises urllib3's errors, not requests'
            outcome.append(exc)

    client = threading.Thread(target=slow_client)
    client.start()
    try:
        assert first_byte.wait(TIMEOUT)
        started = time.monotonic()
        emu.stop()
        elapsed = time.monotonic() - started
    finally:
        emu.stop()
        client.join(TIMEOUT)
    assert elapsed < 1.0
    assert not client.is_alive()
    assert outcome, "the client saw the drip cut short"
    with pytest.raises(requests.exceptions.ConnectionError):
        get_platforms(emu)


def test_url_is_unknown_before_start() -> None:
    with pytest.raises(RuntimeError):
        _ = Emulator().url


def test_main_prints_one_line_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    platforms_file = tmp_path / "platforms.json"
    platforms_file.write_text(json.dumps([{"id": 5, "name": "Five"}]), encoding="utf-8")
    code = (
        "import sys; from sync.emulator import main; "
        "main('127.0.0.1', 0, platforms_file=sys.argv[1])"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(platforms_file)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(
            r"emulator listening on (http://127\.0\.0\.1:\d+) \(client_id=demo-client "
            r"email=demo@example\.com password=demo-password\)\n",
            line,
        )
        assert match, line
        form = password_form()
        token = requests.post(match[1] + "/oauth/token", data=form, timeout=TIMEOUT).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        listed = requests.get(match[1] + "/v4/global/platforms", headers=headers, timeout=TIMEOUT)
        assert listed.json() == [{"id": 5, "name": "Five"}]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert (out, err) == ("", "")
