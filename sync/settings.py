"""Settings from the environment, a `.env` file and a secrets directory (pydantic-settings).

Only the CLI builds these; every other module receives plain values.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from sync.accounts import SINGLE_ACCOUNT, Account, Credentials, named_accounts, parse_account_names
from sync.errors import ConfigError
from sync.resources import (
    DEFAULT_RESOURCES,
    PARTNER_ID_LENGTH,
    REGISTRY,
    Resource,
    parse_resource_names,
)

ENV_PREFIX = "SYNC_"
DEFAULT_AUTH_URL = "https://partner.comm100.io/oauth/token"
DEFAULT_API_URL = "https://partnerapi.comm100.io/v4"
DEFAULT_DATABASE_URL = "sqlite:///comm100_sync.db"
# Where Kubernetes Secrets are mounted when the operator follows deploy/; systemd's
# LoadCredential= directory is used when the unit sets one.
DEFAULT_SECRETS_DIR = "/run/secrets/comm100-sync"
MIN_TOKEN_CACHE_KEY_LENGTH = 32

# Drivers the project installs; a bare scheme picks them so users can paste ordinary URLs.
_DRIVER_FOR_SCHEME = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: the only hosts plain http:// may reach."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalise_database_url(url: str) -> str:
    """Give bare `postgresql://` / `mysql://` URLs the driver this project ships."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not a URL (expected e.g. postgresql://user@host/db)")
    return f"{_DRIVER_FOR_SCHEME.get(scheme.lower(), scheme)}://{rest}"


class DatabaseSettings(BaseSettings):
    """What every command needs: where the database is and how to log."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    database_url: str = DEFAULT_DATABASE_URL
    auto_migrate: bool = True
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Short on purpose: a cycle that loses the race is recorded as skipped rather than queued.
    lock_wait_seconds: float = Field(default=5.0, ge=0, le=600)
    interval_seconds: float = Field(default=300.0, gt=0)
    # Unset: 3 x each list's interval. `status` and /healthz call older successes stale.
    health_max_age_seconds: float | None = Field(default=None, gt=0)
    # The lists to mirror (sync.resources.REGISTRY); `status` reports on the same ones.
    resources: str = ",".join(DEFAULT_RESOURCES)
    # CALLS/SECONDS shared by every process on this database and every account; 0: no limit.
    rate_limit: str = "270/300"
    # Per-list periods, e.g. "agents=3600,departments=86400"; the rest use the interval.
    resource_intervals: str = ""

    @field_validator("resources")
    @classmethod
    def _resources(cls, value: str) -> str:
        return ",".join(r.name for r in parse_resource_names(value))

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        value = value.strip()
        if value == "0":
            return value
        calls, slash, seconds = value.partition("/")
        try:
            if not slash or int(calls) < 1 or float(seconds) <= 0:
                raise ValueError
        except ValueError:
            raise ValueError("expected CALLS/SECONDS (e.g. 270/300), or 0 for no limit") from None
        return f"{int(calls)}/{float(seconds):g}"

    @field_validator("resource_intervals")
    @classmethod
    def _resource_intervals(cls, value: str) -> str:
        parsed = _parse_intervals(value)
        return ",".join(f"{name}={seconds:g}" for name, seconds in parsed.items())

    @property
    def rate(self) -> tuple[int, float] | None:
        """(calls, seconds) of the shared budget, or None without one."""
        if self.rate_limit == "0":
            return None
        calls, _, seconds = self.rate_limit.partition("/")
        return int(calls), float(seconds)

    def interval_of(self, resource: str) -> float:
        """How often a list syncs: its SYNC_RESOURCE_INTERVALS entry, else the interval."""
        return _parse_intervals(self.resource_intervals).get(resource, self.interval_seconds)

    @property
    def resource_list(self) -> tuple[Resource, ...]:
        """The lists to sync, partner lists first (sites before the per-site ones)."""
        return parse_resource_names(self.resources)

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _case_insensitive(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str):
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return normalise_database_url(value.strip())

    def max_age_of(self, resource: str) -> float:
        """How old a list's last success may be before /healthz and `status` call it stale:
        SYNC_HEALTH_MAX_AGE_SECONDS, else three of the list's own intervals."""
        return self.health_max_age_seconds or 3 * self.interval_of(resource)

    @property
    def database_url_for_display(self) -> str:
        """The database URL with any password masked, for logs and status output."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.database_url).render_as_string(hide_password=True)
        except ValueError:  # ArgumentError: not a URL SQLAlchemy can read; show its scheme only
            return self.database_url.partition("://")[0] + "://***"

    def secret_values(self) -> list[str]:
        """What must never be shown: the database password (and, in Settings, more)."""
        from sqlalchemy.engine import make_url

        try:
            password = make_url(self.database_url).password
        except ValueError:
            return []
        return [str(password)] if password else []

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (self.database_url_for_display if name == "database_url" else value)


class Settings(DatabaseSettings):
    """Everything `once` and `run` need: credentials, endpoints, limits."""

    # One account from these three, unless SYNC_ACCOUNTS names several (see sync.accounts).
    client_id: str | None = None
    email: str | None = None
    password: SecretStr | None = None
    partner_id: str | None = None
    accounts: str | None = None
    # The accounts of SYNC_ACCOUNTS, read by load() from the same sources (see sync.accounts).
    _accounts: tuple[Account, ...] | None = PrivateAttr(default=None)
    # After a refused password grant, the next one waits one interval, doubling up to this.
    auth_backoff_max_seconds: float = Field(default=21600.0, gt=0)
    # Set: tokens are kept in the database sealed with a key derived from this secret.
    token_cache_key: SecretStr | None = None
    auth_url: str = DEFAULT_AUTH_URL
    api_url: str = DEFAULT_API_URL
    http_timeout_seconds: float = Field(default=30.0, gt=0)
    http_retries: int = Field(default=3, ge=0, le=20)
    cycle_timeout_seconds: float = Field(default=300.0, gt=0)
    max_delete_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    # A byte-identical answer skips the comparison, except the first cycle of each process and
    # at least once per this many seconds: manual edits and old rows get corrected.
    full_compare_seconds: float = Field(default=3600.0, gt=0)
    # No-change and skipped runs older than this are deleted (0 keeps every run).
    run_retention_days: float = Field(default=90.0, ge=0)
    # After SIGTERM/SIGINT, how long a cycle in flight may still take before it is cut.
    stop_timeout_seconds: float = Field(default=8.0, gt=0, le=3600)
    # How many requests may be in flight at once.
    http_concurrency: int = Field(default=4, ge=1, le=64)
    # Agents' email, phone, names, bio, title and avatar fields are dropped unless true.
    keep_personal_data: bool = False
    max_response_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    allow_insecure_http: bool = False
    # Service mode (`run`).
    cron: str | None = None
    start_jitter_seconds: float = Field(default=0.0, ge=0)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    # OpenTelemetry traces of `once` and `run` (the `otel` extra). Unset: on when
    # OTEL_EXPORTER_OTLP_ENDPOINT is set; false: off even then (see sync.tracing.wanted).
    otel: bool | None = None

    @field_validator("otel", mode="before")
    @classmethod
    def _otel(cls, value: Any) -> Any:
        # SYNC_OTEL= (empty, as a template leaves it) means unset, not an invalid boolean.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("partner_id")
    @classmethod
    def _partner_id(cls, value: str | None) -> str | None:
        value = value.strip() if value is not None else None
        if value and len(value) > PARTNER_ID_LENGTH:
            raise ValueError(f"must be at most {PARTNER_ID_LENGTH} characters")
        return value or None

    @field_validator("token_cache_key")
    @classmethod
    def _token_cache_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if len(value.get_secret_value().strip()) < MIN_TOKEN_CACHE_KEY_LENGTH:
            raise ValueError(
                f"must be at least {MIN_TOKEN_CACHE_KEY_LENGTH} characters "
                "(e.g. the output of `openssl rand -base64 32`)"
            )
        return SecretStr(value.get_secret_value().strip())

    @field_validator("password")
    @classmethod
    def _password_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("must not be empty")
        return value

    @field_validator("client_id", "email")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("accounts")
    @classmethod
    def _account_names(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return ",".join(parse_account_names(value))

    @model_validator(mode="after")
    def _one_account_or_several(self) -> Settings:
        if self.accounts is None:
            missing = [
                f"{ENV_PREFIX}{name.upper()}: is required"
                for name in ("client_id", "email", "password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError("; ".join(missing))
        return self

    @field_validator("cron")
    @classmethod
    def _cron_expression(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value.strip(), timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a five-field cron expression ({exc})") from None
        return value.strip()

    @field_validator("auth_url", "api_url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _https_unless_loopback(self) -> Settings:
        for name in ("auth_url", "api_url"):
            parts = urlsplit(getattr(self, name))
            if (
                parts.scheme == "http"
                and not self.allow_insecure_http
                and not is_loopback_host(parts.hostname or "")
            ):
                raise ValueError(
                    f"{ENV_PREFIX}{name.upper()}: http:// is only allowed for loopback hosts; "
                    f"use https:// or set {ENV_PREFIX}ALLOW_INSECURE_HTTP=true"
                )
        return self

    @property
    def platforms_url(self) -> str:
        return f"{self.api_url}/global/platforms"

    def secret_values(self) -> list[str]:
        values = [*super().secret_values()]
        if self.password is not None:
            values.append(self.password.get_secret_value())
        if self.token_cache_key is not None:
            values.append(self.token_cache_key.get_secret_value())
        values += [account.credentials.password for account in self.account_list]
        return list(dict.fromkeys(values))

    def identifiers(self) -> list[str]:
        """Who the accounts are (client ids, emails): no secrets, so logs and errors name them,
        but traces, kept by a third party's collector, carry none of them."""
        return list(
            dict.fromkeys(
                value
                for account in self.account_list
                for value in (account.credentials.client_id, account.credentials.email)
            )
        )

    @property
    def account_list(self) -> tuple[Account, ...]:
        """The partner accounts: those of SYNC_ACCOUNTS, or the one from SYNC_CLIENT_ID…"""
        if self._accounts is not None:
            return self._accounts
        assert self.client_id and self.email and self.password  # _one_account_or_several
        credentials = Credentials(self.client_id, self.email, self.password.get_secret_value())
        return (Account(SINGLE_ACCOUNT, credentials, self.partner_id, self.resource_list),)


def _parse_intervals(value: str) -> dict[str, float]:
    """ "agents=3600,departments=86400" → {"agents": 3600.0, ...}; ValueError says why not."""
    intervals: dict[str, float] = {}
    for part in (p.strip() for p in value.split(",") if p.strip()):
        name, equals, seconds = part.partition("=")
        name = name.strip().lower()
        if name not in REGISTRY:
            raise ValueError(f"unknown list {name!r}; known: {', '.join(REGISTRY)}")
        try:
            intervals[name] = float(seconds)
            if not equals or intervals[name] <= 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"{name}: expected a number of seconds, as in {name}=3600") from None
    return intervals


def _secrets_dir() -> str | None:
    explicit = os.environ.get(f"{ENV_PREFIX}SECRETS_DIR")
    if explicit and not Path(explicit).is_dir():
        raise ConfigError(
            f"invalid settings: {ENV_PREFIX}SECRETS_DIR: no such directory: {explicit}"
        )
    for candidate in (
        explicit,
        os.environ.get("CREDENTIALS_DIRECTORY"),
        DEFAULT_SECRETS_DIR,
    ):
        if candidate and Path(candidate).is_dir():
            return candidate
    return None


def _describe(exc: ValidationError) -> str:
    """One line naming each bad variable; never the value (it may be a password)."""
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = err.get("loc") or ()
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if loc:
            name = f"{ENV_PREFIX}{str(loc[0]).upper()}"
            if err.get("type") == "missing":
                msg = "is required"
            problems.append(f"{name}: {msg}")
        else:
            problems.append(msg.removeprefix("Value error, "))
    return "invalid settings: " + "; ".join(problems)


def load(kind: type[DatabaseSettings] = Settings, **overrides: Any) -> Any:
    """Build settings of `kind` or raise ConfigError with a one-line message.

    `.env` is read from the working directory, or from SYNC_ENV_FILE when set; secrets from
    SYNC_SECRETS_DIR, $CREDENTIALS_DIRECTORY (systemd) or /run/secrets/comm100-sync.
    """
    env_file = os.environ.get(f"{ENV_PREFIX}ENV_FILE", ".env")
    if env_file and env_file != ".env" and not Path(env_file).is_file():
        raise ConfigError(f"invalid settings: {ENV_PREFIX}ENV_FILE: no such file: {env_file}")
    secrets_dir = _secrets_dir()
    try:
        loaded = kind(  # type: ignore[call-arg]
            _env_file=env_file or None, _secrets_dir=secrets_dir, **overrides
        )
        if isinstance(loaded, Settings) and loaded.accounts is not None:
            lookup = _lookup(env_file or None, secrets_dir)
            loaded._accounts = named_accounts(
                loaded.accounts.split(","), lookup, loaded.resource_list
            )
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"invalid settings: cannot read .env or secrets: {exc}") from None
    return loaded


def _lookup(env_file: str | None, secrets_dir: str | None) -> Callable[[str], str | None]:
    """Reads one variable as pydantic-settings would: the environment, then .env, then a file
    of the secrets directory named like it (case ignored, a trailing newline dropped)."""
    from dotenv import dotenv_values

    dotenv = {
        key.upper(): value
        for key, value in (dotenv_values(env_file) if env_file and Path(env_file).is_file()
                           else {}).items()
        if value is not None
    }  # fmt: skip
    files = (
        {path.name.upper(): path for path in Path(secrets_dir).iterdir() if path.is_file()}
        if secrets_dir
        else {}
    )
    environment = {key.upper(): value for key, value in os.environ.items()}

    def lookup(name: str) -> str | None:
        name = name.upper()
        if name in environment:
            return environment[name]
        if name in dotenv:
            return dotenv[name]
        if name in files:
            return files[name].read_text(encoding="utf-8").rstrip("\r\n")
        return None

    return lookup
