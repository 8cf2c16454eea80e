"""The Partner API client: authorised GETs of list resources, one fresh token after a 401."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sync.auth import TokenProvider
from sync.errors import AuthError, PayloadError, RejectedError
from sync.retry import Deadline
from sync.transport import HttpResponse, Transport, endpoint_of

log = logging.getLogger(__name__)

T = TypeVar("T")
_JSON_TYPES = ("application/json",)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in _JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


class PartnerClient:
    """Reads resources from the Partner API (`{api_url}{path}`)."""

    def __init__(self, transport: Transport, tokens: TokenProvider, api_url: str) -> None:
        self.transport = transport
        self.tokens = tokens
        self.api_url = api_url.rstrip("/")

    def fetch(
        self, path: str, parse: Callable[[bytes], T], deadline: Deadline, *, template: str = ""
    ) -> T:
        """GET `path` and parse its body (see fetch_body and parse_body)."""
        return self.parse_body(path, parse, self.fetch_body(path, deadline, template=template))

    def parse_body(self, path: str, parse: Callable[[bytes], T], body: bytes) -> T:
        """`parse(body)`, with the endpoint named in any PayloadError."""
        endpoint = endpoint_of(f"{self.api_url}{path}")
        try:
            return parse(body)
        except PayloadError as exc:
            raise PayloadError(f"GET {endpoint}: {exc}", endpoint=endpoint, status=200) from None

    def fetch_body(self, path: str, deadline: Deadline, *, template: str = "") -> bytes:
        """GET `path`; the body of a 200 JSON answer. `template` is the path with its
        placeholders (`/global/sites/{siteId}/agents`): it names the requests' spans.

        Raises:
            AuthError: the token endpoint refused us, or the API refused a fresh token.
            UnavailableError: network, timeout, 5xx or 429 after retries.
            RejectedError: another 4xx.
            PayloadError: wrong Content-Type or too large.
        """
        url = f"{self.api_url}{path}"
        route = endpoint_of(f"{self.api_url}{template or path}")
        response = self._get_authorised(url, deadline, route)
        endpoint = endpoint_of(url)
        if response.status != 200:
            raise RejectedError(
                f"GET {endpoint}: HTTP {response.status}", endpoint=endpoint, status=response.status
            )
        content_type = str(response.headers.get("Content-Type", ""))
        if not _is_json(content_type):
            shown = content_type.split(";", 1)[0].strip()[:60] or "none"
            raise PayloadError(
                f"GET {endpoint}: expected application/json, got Content-Type {shown}",
                endpoint=endpoint,
                status=200,
            )
        return response.body

    def _get_authorised(self, url: str, deadline: Deadline, route: str) -> HttpResponse:
        for attempt in (1, 2):
            token = self.tokens.token(deadline)
            response = self.transport.request(
                "GET",
                url,
                deadline=deadline,
                idempotent=True,
                template=route,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
            if response.status != 401:
                return response
            # Revoked or expired early: one fresh token, one more try, then give up.
            self.tokens.invalidate(token)
            if attempt == 1:
                log.info("GET %s: 401 with a cached token; renewing it once", endpoint_of(url))
        raise AuthError(
            f"GET {endpoint_of(url)}: HTTP 401 with a freshly issued token",
            endpoint=endpoint_of(url),
            status=401,
        )
