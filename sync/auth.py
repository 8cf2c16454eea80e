"""Bearer tokens for the Partner API: password grant, refresh grant, cache and expiry margin.

Comm100 marks the password grant deprecated, so once a refresh token is held it is used first;
the password grant is the fallback when there is none or it is refused.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sync.accounts import Credentials as Credentials  # re-exported: the token side names it
from sync.errors import (
    AuthError,
    AuthPausedError,
    PartnerUnknownError,
    PayloadError,
    RejectedError,
    SyncError,
)
from sync.models import TokenGrant, parse_token_response, partner_id_claim
from sync.redaction import Secrets
from sync.retry import Deadline
from sync.transport import HttpResponse, Transport, endpoint_of

log = logging.getLogger(__name__)

RENEW_MARGIN_MAX_SECONDS = 60.0
RENEW_MARGIN_FRACTION = 0.10
# RFC 6749 makes expires_in optional; without it assume an hour and rely on 401 → renew.
DEFAULT_LIFETIME_SECONDS = 3600.0
_SAFE_TEXT = re.compile(r"[^\w .,:;'()/@+*-]")  # `*`: what masking leaves


@dataclass(frozen=True)
class SavedToken:
    """A token as another process can reuse it: times on the wall clock (Unix seconds)."""

    access_token: str
    refresh_token: str | None
    obtained_at: float
    lifetime: float

    def __repr__(self) -> str:
        return f"SavedToken(obtained_at={self.obtained_at!r}, lifetime={self.lifetime!r})"


class TokenCache(Protocol):
    """Where tokens outlive the process (SYNC_TOKEN_CACHE_KEY); load() never raises."""

    def load(self) -> SavedToken | None: ...

    def save(self, token: SavedToken) -> None: ...


class AuthLedger(Protocol):
    """Remembers refused credential sets, so a wrong password is not retried into a lockout.

    next_attempt_at() returns None when a password grant may be sent now.
    """

    def next_attempt_at(self) -> datetime | None: ...

    def refused(self, error: str) -> datetime: ...

    def accepted(self, partner_id: str | None) -> None: ...

    def known_partner(self) -> str | None: ...


@dataclass
class _CachedToken:
    access_token: str
    refresh_token: str | None
    obtained_at: float
    lifetime: float

    def __repr__(self) -> str:
        return f"_CachedToken(obtained_at={self.obtained_at!r}, lifetime={self.lifetime!r})"

    def needs_renewal(self, now: float) -> bool:
        margin = min(RENEW_MARGIN_MAX_SECONDS, RENEW_MARGIN_FRACTION * self.lifetime)
        return now >= self.obtained_at + self.lifetime - margin


def _oauth_error(response: HttpResponse, secrets: Secrets) -> tuple[str | None, str]:
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
    text = secrets.mask(": ".join(parts) or f"HTTP {response.status}")
    code = secrets.mask(code) if code else code
    return (
        _SAFE_TEXT.sub("", code)[:64] if code else None,
        _SAFE_TEXT.sub(" ", text)[:200],
    )


class TokenProvider:
    """Hands out a valid access token, renewing it only when it is close to expiry.

    Order of preference: the token in memory; a live token another process left in the cache;
    the refresh grant; the password grant, unless the ledger says this credential set was
    refused and its pause has not run out (`force_auth` ignores the pause).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        auth_url: str,
        credentials: Credentials,
        partner_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        ledger: AuthLedger | None = None,
        cache: TokenCache | None = None,
        force_auth: bool = False,
        secrets: Secrets | None = None,
    ) -> None:
        self._transport = transport
        self._auth_url = auth_url
        self._credentials = credentials
        self._configured_partner = partner_id
        self._clock = clock
        self._wall_clock = wall_clock
        self._ledger = ledger
        self._cache = cache
        self._force_auth = force_auth
        self._cached: _CachedToken | None = None
        self._lock = threading.RLock()
        self.requests_by_grant: Counter[str] = Counter()
        # Every token received joins the registry, so logs and stored errors mask it.
        self.secrets = secrets if secrets is not None else Secrets()
        self.secrets.add(credentials.password)

    @property
    def known_partner(self) -> str | None:
        """The partner as far as it is known without contacting anyone (for failure records)."""
        if self._configured_partner:
            return self._configured_partner
        if self._cached is not None and (claim := partner_id_claim(self._cached.access_token)):
            return claim
        if self._ledger is not None:
            try:
                return self._ledger.known_partner()
            except SyncError as exc:
                log.debug("could not read the last known partner: %s", exc)
        return None

    def partner(self, deadline: Deadline) -> str:
        """SYNC_PARTNER_ID, checked against the token's partnerId claim; else the claim.

        Raises:
            AuthError: the token belongs to another partner than SYNC_PARTNER_ID (exit 77).
            PartnerUnknownError: no SYNC_PARTNER_ID and no claim in the token (exit 78).
        """
        claim = partner_id_claim(self.token(deadline))
        configured = self._configured_partner
        if configured:
            if claim is not None and claim != configured:
                raise AuthError(
                    f"the credentials belong to partner {claim}, not to SYNC_PARTNER_ID="
                    f"{configured}: nothing was written",
                    endpoint=endpoint_of(self._auth_url),
                )
            return configured
        if claim is None:
            raise PartnerUnknownError(
                "the access token carries no partnerId claim, so the rows would have no "
                "partner: set SYNC_PARTNER_ID to the partner's id"
            )
        return claim

    def token(self, deadline: Deadline) -> str:
        """A cached token while it is fresh; otherwise one from the shared cache or a grant.

        Thread-safe: concurrent requests that find the token stale wait for one renewal.
        """
        with self._lock:
            return self._token(deadline)

    def _token(self, deadline: Deadline) -> str:
        cached = self._cached
        if cached is not None and not cached.needs_renewal(self._clock()):
            return cached.access_token
        shared = self._load_shared()
        if shared is not None and not shared.needs_renewal(self._clock()):
            self._cached = shared
            return shared.access_token
        if shared is not None and (cached is None or shared.refresh_token != cached.refresh_token):
            self._cached = shared  # its refresh token is the newest one
        return self._renew(deadline)

    def invalidate(self, access_token: str) -> None:
        """Forget `access_token` after the API refused it; the refresh token stays usable."""
        with self._lock:
            if self._cached is not None and self._cached.access_token == access_token:
                self._cached.obtained_at = float("-inf")
                self._save_shared(self._cached)

    # -- renewal ---------------------------------------------------------------------------

    def _renew(self, deadline: Deadline) -> str:
        refresh = self._cached.refresh_token if self._cached else None
        if refresh:
            try:
                return self._store(self._grant("refresh_token", deadline, refresh), refresh)
            except AuthError as exc:
                log.warning("refresh token refused (%s); falling back to the password grant", exc)
                self._cached = None
                # Another process may have rotated it a moment ago: take its token if so.
                shared = self._load_shared()
                if shared is not None and not shared.needs_renewal(self._clock()):
                    self._cached = shared
                    return shared.access_token
        return self._password_grant(deadline)

    def _password_grant(self, deadline: Deadline) -> str:
        ledger = self._ledger
        if ledger is not None and not self._force_auth:
            # A StoreError here fails the cycle: without the ledger we cannot know it is safe.
            resume_at = ledger.next_attempt_at()
            if resume_at is not None:
                raise AuthPausedError(
                    f"the token endpoint refused these credentials (client "
                    f"{self._credentials.client_id}); no password grant before "
                    f"{_utc(resume_at)} (fix SYNC_PASSWORD or the other credentials, or "
                    "`comm100-sync once --force-auth` to try now)",
                    next_attempt_at=resume_at,
                )
        try:
            grant = self._grant("password", deadline)
        except AuthError as exc:
            if ledger is None:
                raise
            try:
                resume_at = ledger.refused(exc.oauth_error or f"HTTP {exc.status}")
            except SyncError as store_error:
                log.warning("could not record the refused password grant: %s", store_error)
                raise exc from None
            raise AuthError(
                f"{exc}; the next password grant waits until {_utc(resume_at)}",
                endpoint=exc.endpoint,
                status=exc.status,
                oauth_error=exc.oauth_error,
                paused_until=resume_at,
            ) from None
        token = self._store(grant, None)
        if ledger is not None:
            try:
                ledger.accepted(self._configured_partner or partner_id_claim(token))
            except SyncError as store_error:
                log.warning("could not record the accepted password grant: %s", store_error)
        return token

    def _store(self, grant: TokenGrant, previous_refresh: str | None) -> str:
        lifetime = grant.expires_in or DEFAULT_LIFETIME_SECONDS
        if grant.expires_in is None:
            log.warning("token response has no expires_in; assuming %.0fs", lifetime)
        self.secrets.add(grant.access_token)
        self.secrets.add(grant.refresh_token)
        self._cached = _CachedToken(
            access_token=grant.access_token,
            # A server that does not rotate refresh tokens may omit it on refresh: keep ours.
            refresh_token=grant.refresh_token or previous_refresh,
            obtained_at=self._clock(),
            lifetime=lifetime,
        )
        self._save_shared(self._cached)
        return grant.access_token

    # -- the cache shared with other processes ----------------------------------------------

    def _load_shared(self) -> _CachedToken | None:
        if self._cache is None:
            return None
        saved = self._cache.load()
        if saved is None:
            return None
        self.secrets.add(saved.access_token)
        self.secrets.add(saved.refresh_token)
        # Wall-clock age carried over to this process's monotonic clock.
        age = max(0.0, self._wall_clock() - saved.obtained_at)
        return _CachedToken(
            saved.access_token, saved.refresh_token, self._clock() - age, saved.lifetime
        )

    def _save_shared(self, token: _CachedToken) -> None:
        if self._cache is None:
            return
        age = self._clock() - token.obtained_at
        obtained = self._wall_clock() - age if math.isfinite(age) else 0.0
        self._cache.save(
            SavedToken(token.access_token, token.refresh_token, obtained, token.lifetime)
        )

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
            template=endpoint_of(self._auth_url),
            data=form,
            params=params,
            headers={"Accept": "application/json"},
        )
        endpoint = endpoint_of(self._auth_url)
        if response.status in (400, 401):
            self.secrets.add(refresh)
            code, text = _oauth_error(response, self.secrets)
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


def _utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
