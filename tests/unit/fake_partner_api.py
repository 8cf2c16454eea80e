"""A scripted Partner API on the `responses` library: no socket is opened, every request is kept."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses
import urllib3.exceptions

AUTH_URL = "https://partner.example.test/oauth/token"
API_URL = "https://partnerapi.example.test/v4"
PLATFORMS_PATH = "/global/platforms"
PLATFORMS_URL = API_URL + PLATFORMS_PATH
# Secrets with shapes the log patterns would not catch: only exact matching finds them.
PASSWORD = "canary-Password-91f2"
CLIENT_ID = "client-7"
EMAIL = "ops@example.com"
WALL_EPOCH = 1_750_000_000.0


def jwt(claims: dict[str, Any]) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def connect_refused() -> requests.exceptions.ConnectionError:
    """What requests raises when the TCP connection cannot be opened: nothing was sent."""
    reason = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, PLATFORMS_URL, reason)  # type: ignore[arg-type]
    )


def dropped_after_send() -> requests.exceptions.ConnectionError:
    """What requests raises when the server drops the connection after the request went out."""
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError(
            "Connection aborted.", ConnectionResetError(104, "Connection reset by peer")
        )
    )


@dataclass
class FakePartnerApi:
    """Scripts answers in order (the last one repeats) and reads back what was sent."""

    mock: responses.RequestsMock

    # ----------------------------------------------------------------- scripting
    def grant(
        self,
        access_token: str = "canary-access-1",
        *,
        expires_in: float | None = 3600,
        refresh_token: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer"}
        if expires_in is not None:
            body["expires_in"] = expires_in
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        self.mock.post(AUTH_URL, json=body)

    def token_error(self, status: int, error: str, description: str | None = None) -> None:
        body = {"error": error}
        if description is not None:
            body["error_description"] = description
        self.mock.post(AUTH_URL, status=status, json=body)

    def token_reply(self, **kwargs: Any) -> None:
        self.mock.post(AUTH_URL, **kwargs)

    def platforms(self, items: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        if "body" not in kwargs and "json" not in kwargs:
            kwargs["json"] = [{"id": 1, "name": "Web"}] if items is None else items
        self.mock.get(PLATFORMS_URL, **kwargs)

    # ----------------------------------------------------------------- reading back
    def requests_to(self, url: str) -> list[requests.PreparedRequest]:
        path = urlsplit(url).path
        return [
            call.request
            for call in self.mock.calls
            if urlsplit(call.request.url or "").path == path
        ]

    def token_forms(self) -> list[dict[str, str]]:
        """The form of every token request, one value per field."""
        forms = []
        for request in self.requests_to(AUTH_URL):
            body = request.body or ""
            text = body.decode() if isinstance(body, bytes) else body
            forms.append({k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()})
        return forms

    def bearer_tokens(self) -> list[str]:
        """The Authorization header of every API request."""
        return [r.headers.get("Authorization", "") for r in self.requests_to(PLATFORMS_URL)]
