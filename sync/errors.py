"""The exception tree of comm100-sync, and the process exit code each failure maps to.

    SyncError                  exit 1 unless a subclass says otherwise
    ├── ConfigError            settings invalid; nothing contacted; exit 78
    │   └── PartnerUnknownError  the token names no partner and SYNC_PARTNER_ID is unset
    ├── RemoteError            the Partner API did not give us a usable answer
    │   ├── AuthError          token endpoint refused us (400/401), or a second 401; exit 77
    │   │   └── AuthPausedError  credentials refused earlier; no password grant until a set time
    │   ├── UnavailableError   5xx / 429 / timeout / connection error, retries used up; exit 75
    │   ├── RejectedError      any other 4xx (never retried); exit 65
    │   └── PayloadError       body is not a valid platform list (or token response); exit 65
    ├── SafetyLimitError       would soft-delete more than SYNC_MAX_DELETE_FRACTION; exit 65
    ├── PartialError           some sites of a per-site list failed, the others committed;
    │                          exit 65 if a site's answer was rejected, else 75
    ├── StoreError             database failure (down, locked, full); exit 75
    └── InterruptedCycleError  SIGTERM/SIGINT arrived mid-cycle; rolled back; exit 75

Messages are built from structured attributes and never carry a password, a token or a request body.
"""

from __future__ import annotations

from datetime import datetime

# sysexits.h: the codes a Kubernetes podFailurePolicy or a systemd unit can act on.
EX_OK = 0
EX_INTERNAL = 1
EX_DATAERR = 65
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


class SyncError(Exception):
    """Base of every failure the job expects and reports without a traceback."""

    exit_code = EX_INTERNAL


class ConfigError(SyncError):
    """The settings are missing or invalid; raised before anything is contacted."""

    exit_code = EX_CONFIG


class PartnerUnknownError(ConfigError):
    """The one configuration error found only after contacting: no partner to file rows under."""


class RemoteError(SyncError):
    """The Partner API did not give a usable answer.

    Attributes:
        endpoint: path of the URL that failed (no query string, so no credentials).
        status: HTTP status, when a response arrived.
    """

    exit_code = EX_DATAERR

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class AuthError(RemoteError):
    """The token endpoint refused our credentials, or the API refused a fresh token.

    Attributes:
        oauth_error: the RFC 6749 `error` code, when the server sent one.
        paused_until: when the refused credentials may next be tried (None: not paused)."""

    exit_code = EX_NOPERM

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status: int | None = None,
        oauth_error: str | None = None,
        paused_until: datetime | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, status=status)
        self.oauth_error = oauth_error
        # Set when these credentials are now paused: no password grant before that time.
        self.paused_until = paused_until


class AuthPausedError(AuthError):
    """A refused credential set is paused: no password grant is sent before `next_attempt_at`.

    Attributes:
        next_attempt_at: when (UTC) the next password grant for these credentials is allowed.
    """

    def __init__(self, message: str, *, next_attempt_at: datetime) -> None:
        super().__init__(message, paused_until=next_attempt_at)
        self.next_attempt_at = next_attempt_at


class UnavailableError(RemoteError):
    """Transient failure (5xx, 429, timeout, connection error) after the retries were used up."""

    exit_code = EX_TEMPFAIL


class RejectedError(RemoteError):
    """A 4xx other than 401/429: retrying the same request cannot help."""

    exit_code = EX_DATAERR


class PayloadError(RemoteError):
    """The body is not what the contract promises (not JSON, not a list of platforms, ...)."""

    exit_code = EX_DATAERR


class SafetyLimitError(SyncError):
    """The cycle would soft-delete more rows than SYNC_MAX_DELETE_FRACTION allows."""

    exit_code = EX_DATAERR


class PartialError(SyncError):
    """Some sites of a per-site list failed while the others committed (run status `partial`).

    Attributes:
        failures: site id → what went wrong with it.
        exit_code: 65 when a site's answer was refused as data (a bad payload, a 4xx), else 75.
    """

    def __init__(self, failures: dict[int, SyncError]) -> None:
        self.failures = failures
        shown = "; ".join(f"site {site}: {error}" for site, error in sorted(failures.items())[:5])
        more = f" (and {len(failures) - 5} more sites)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} site(s) failed and kept their rows: {shown}{more}")
        codes = {error.exit_code for error in failures.values()}
        self.exit_code = EX_DATAERR if EX_DATAERR in codes else EX_TEMPFAIL


class StoreError(SyncError):
    """The database failed: unreachable, locked, full, or a statement error."""

    exit_code = EX_TEMPFAIL


class InterruptedCycleError(SyncError):
    """A stop signal arrived during a cycle; its transaction was rolled back."""

    exit_code = EX_TEMPFAIL


# Most severe first: what `once` exits with when accounts or lists end differently.
SEVERITY = (EX_CONFIG, EX_NOPERM, EX_DATAERR, EX_INTERNAL, EX_TEMPFAIL, EX_OK)


def most_severe(codes: list[int] | tuple[int, ...]) -> int:
    """The exit code that matters most among `codes` (EX_OK for none)."""
    return min(codes, key=SEVERITY.index, default=EX_OK)
