"""Bearer tokens for the Partner API: password grant, refresh grant, cache and expiry margin.

Comm100 marks the password grant deprecated, so once a refresh token is held it is used first;
the password grant is the fallback when there is none or it is refused.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sync.errors import AuthError, PayloadError, RejectedError
from sync.models import TokenGrant, parse_token_response, partner_id_claim
from sync.retry import Deadline
from sync.transport import HttpResponse, Transport, endpoint_of

log = logging.getLogger(__name__)

RENEW_MARGIN_MAX_SECONDS = 60.0
RENEW_MARGIN_FRACTION = 0.10
# RFC 6749 makes expires_in optional; without it assume an hour and rely on 401 → renew.
DEFAULT_LIFETIME_SECONDS = 3600.0
_SAFE_TEXT = re.compile(r"[^\w .,:;'()/@+-]")


@dataclass(frozen=True)
class Credentials:
    client_id: str
    email: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(client_id={self.client_id!r}, email={self.email!r}, password='***')"


@dataclass
class _CachedToken:
    access_token: str
    refresh_token: str | None
    obtained_at: float
    lifetime: float

    def needs_renewal(self, now: float) -> bool:
        margin = min(RENEW_MARGIN_MAX_SECONDS, RENEW_MARGIN_FRACTION * self.lifetime)
        return now >= self.obtained_at + self.lifetime - margin


def _oauth_error(response: HttpResponse, secrets: Iterable[str] = ()) -> tuple[str | None, str]:
    """The `error` code and a printable one-line description from an RFC 6749 §5.2 body.

    Servers may echo what they were sent ("password 'x' is wrong"): `secrets` are masked
    before the text is cleaned up and cut, so no part of them survives.
    """
    try:
        data = json.loads(response.body.decode("utf-8", "replace"))
    except ValueError:
        return None, f"HTTP {response.status}"
    if not isinstance(data, dict):
        return None, f"HTTP {response.status}"
    code = data.get("error") if isinstance(data.get("error"), str) else None
    description = data.get("error_description")
    parts = [p for p in (code, description if isinstance(description, str) else None) if p]
    text = ": ".join(parts) or f"HTTP {response.status}"
    for secret in secrets:
        if secret:
            text = text.replace(secret, "(redacted)")
            code = code.replace(secret, "(redacted)") if code else code
    return (
        _SAFE_TEXT.sub("", code)[:64] if code else None,
        _SAFE_TEXT.sub(" ", text)[:200],
    )


class TokenProvider:
    """Hands out a valid access token, renewing it only when it is close to expiry."""

    def __init__(
        self,
        transport: Transport,
        *,
        auth_url: str,
        credentials: Credentials,
        partner_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._auth_url = auth_url
        self._credentials = credentials
        self._configured_partner = partner_id
        self._clock = clock
        self._cached: _CachedToken | None = None
        self._claimed_partner: str | None = None
        self.requests_by_grant: Counter[str] = Counter()

    @property
    def partner_id(self) -> str:
        """SYNC_PARTNER_ID, else the token's partnerId claim, else ''."""
        return self._configured_partner or self._claimed_partner or ""

    def token(self, deadline: Deadline) -> str:
        """A cached token while it is fresh; otherwise a renewed one."""
        cached = self._cached
        if cached is not None and not cached.needs_renewal(self._clock()):
            return cached.access_token
        return self._renew(deadline)

    def invalidate(self, access_token: str) -> None:
        """Forget `access_token` after the API refused it; the refresh token stays usable."""
        if self._cached is not None and self._cached.access_token == access_token:
            self._cached.obtained_at = float("-inf")

    def secrets(self) -> list[str]:
        """The password and current token values, to mask in anything we write or log."""
        values = [self._credentials.password]
        if self._cached is not None:
            values += [self._cached.access_token, self._cached.refresh_token or ""]
        return [v for v in values if v]

    def _renew(self, deadline: Deadline) -> str:
        refresh = self._cached.refresh_token if self._cached else None
        if refresh:
            try:
                return self._store(self._grant("refresh_token", deadline, refresh), refresh)
            except AuthError as exc:
                log.warning("refresh token refused (%s); falling back to the password grant", exc)
                self._cached = None
        return self._store(self._grant("password", deadline), None)

    def _store(self, grant: TokenGrant, previous_refresh: str | None) -> str:
        lifetime = grant.expires_in or DEFAULT_LIFETIME_SECONDS
        if grant.expires_in is None:
            log.warning("token response has no expires_in; assuming %.0fs", lifetime)
        self._cached = _CachedToken(
            access_token=grant.access_token,
            # A server that does not rotate refresh tokens may omit it on refresh: keep ours.
            refresh_token=grant.refresh_token or previous_refresh,
            obtained_at=self._clock(),
            lifetime=lifetime,
        )
        self._claimed_partner = partner_id_claim(grant.access_token)
        return grant.access_token

    def _grant(self, grant_type: str, deadline: Deadline, refresh: str | None = None) -> TokenGrant:
        creds = self._credentials
        form = {"grant_type": grant_type, "client_id": creds.client_id}
        if grant_type == "password":
            form |= {"email": creds.email, "password": creds.password}
        else:
            form["refresh_token"] = refresh or ""
        params = {"partnerId": self._configured_partner} if self._configured_partner else None
        self.requests_by_grant[grant_type] += 1
        log.debug("requesting a token (grant_type=%s)", grant_type)
        # Retried only when nothing was sent or the server said 5xx/429 (see retry.decide).
        response = self._transport.request(
            "POST",
            self._auth_url,
            deadline=deadline,
            idempotent=False,
            data=form,
            params=params,
            headers={"Accept": "application/json"},
        )
        endpoint = endpoint_of(self._auth_url)
        if response.status in (400, 401):
            code, text = _oauth_error(response, (creds.password, refresh or ""))
            raise AuthError(
                f"token endpoint refused the {grant_type} grant: {text}",
                endpoint=endpoint,
                status=response.status,
                oauth_error=code,
            )
        if response.status != 200:
            raise RejectedError(
                f"token endpoint answered HTTP {response.status}",
                endpoint=endpoint,
                status=response.status,
            )
        try:
            return parse_token_response(response.body)
        except PayloadError as exc:
            raise PayloadError(str(exc), endpoint=endpoint, status=200) from None
