"""Settings: the three sources, their precedence, and one-line errors that never show a value."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sync.errors import EX_CONFIG, ConfigError
from sync.settings import (
    DEFAULT_API_URL,
    DEFAULT_AUTH_URL,
    DEFAULT_DATABASE_URL,
    DatabaseSettings,
    Settings,
    load,
)

CANARY = "canary-pw-7f3a9c"


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_CLIENT_ID", "client-1")
    monkeypatch.setenv("SYNC_EMAIL", "ops@example.com")
    monkeypatch.setenv("SYNC_PASSWORD", CANARY)


def config_error(**env: str) -> str:
    """Load Settings with `env` set; return the ConfigError message, checked to be one line."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        with pytest.raises(ConfigError) as caught:
            load(Settings)
    message = str(caught.value)
    assert "\n" not in message
    assert CANARY not in message
    return message


# --------------------------------------------------------------------------- required values


def test_missing_credentials_name_every_variable() -> None:
    message = config_error()

    assert message.startswith("invalid settings: ")
    for name in ("SYNC_CLIENT_ID", "SYNC_EMAIL", "SYNC_PASSWORD"):
        assert f"{name}: is required" in message


def test_missing_variables_are_named_but_the_password_that_is_set_is_not_shown() -> None:
    message = config_error(SYNC_PASSWORD=CANARY)

    assert "SYNC_CLIENT_ID: is required" in message
    assert "SYNC_EMAIL: is required" in message
    assert "SYNC_PASSWORD" not in message


def test_config_error_exits_78() -> None:
    with pytest.raises(ConfigError) as caught:
        load(Settings)

    assert caught.value.exit_code == EX_CONFIG == 78


@pytest.mark.parametrize("name", ["SYNC_CLIENT_ID", "SYNC_EMAIL", "SYNC_PASSWORD"])
def test_empty_required_value_is_refused(credentials: None, name: str) -> None:
    assert name in config_error(**{name: ""})


def test_defaults_when_only_credentials_are_given(credentials: None) -> None:
    settings = load(Settings)

    assert settings.client_id == "client-1"
    assert settings.email == "ops@example.com"
    assert settings.password.get_secret_value() == CANARY
    assert CANARY not in repr(settings)
    assert settings.partner_id is None
    assert settings.auth_url == DEFAULT_AUTH_URL
    assert settings.api_url == DEFAULT_API_URL
    assert settings.platforms_url == f"{DEFAULT_API_URL}/global/platforms"
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.http_timeout_seconds == 30
    assert settings.http_retries == 3
    assert settings.cycle_timeout_seconds == 300
    assert settings.interval_seconds == 300
    assert settings.max_delete_fraction == 0.5
    assert settings.allow_insecure_http is False
    assert settings.auto_migrate is True
    assert (settings.log_format, settings.log_level) == ("text", "INFO")


def test_database_settings_need_no_credentials() -> None:
    """`migrate` and `status` work without API credentials."""
    assert load(DatabaseSettings).database_url == DEFAULT_DATABASE_URL


def test_blank_partner_id_counts_as_unset(credentials: None, monkeypatch) -> None:
    monkeypatch.setenv("SYNC_PARTNER_ID", "   ")

    assert load(Settings).partner_id is None


def test_partner_id_is_trimmed(credentials: None, monkeypatch) -> None:
    monkeypatch.setenv("SYNC_PARTNER_ID", " p-9 ")

    assert load(Settings).partner_id == "p-9"


# --------------------------------------------------------------------------- sources


def test_env_file_named_by_sync_env_file(monkeypatch, tmp_path: Path) -> None:
    env_file = tmp_path / "conf" / "sync.env"
    env_file.parent.mkdir()
    env_file.write_text(
        f"SYNC_CLIENT_ID=from-file\nSYNC_EMAIL=file@example.com\nSYNC_PASSWORD={CANARY}\n"
        "SYNC_HTTP_RETRIES=5\n"
    )
    monkeypatch.setenv("SYNC_ENV_FILE", str(env_file))

    settings = load(Settings)

    assert (settings.client_id, settings.http_retries) == ("from-file", 5)
    assert settings.password.get_secret_value() == CANARY


def test_env_file_in_the_working_directory_by_default(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SYNC_ENV_FILE")
    (tmp_path / ".env").write_text(
        f"SYNC_CLIENT_ID=cwd\nSYNC_EMAIL=cwd@example.com\nSYNC_PASSWORD={CANARY}\n"
    )

    assert load(Settings).client_id == "cwd"


def test_empty_sync_env_file_disables_the_env_file(monkeypatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SYNC_CLIENT_ID=cwd\nSYNC_EMAIL=e\nSYNC_PASSWORD=p\n")
    monkeypatch.setenv("SYNC_ENV_FILE", "")

    assert "SYNC_CLIENT_ID: is required" in config_error()


def test_missing_env_file_is_a_config_error(tmp_path: Path) -> None:
    message = config_error(SYNC_ENV_FILE=str(tmp_path / "absent.env"))

    assert "SYNC_ENV_FILE: no such file" in message


def test_environment_beats_the_env_file(credentials: None, monkeypatch, tmp_path: Path) -> None:
    env_file = tmp_path / "sync.env"
    env_file.write_text("SYNC_CLIENT_ID=from-file\nSYNC_HTTP_RETRIES=9\n")
    monkeypatch.setenv("SYNC_ENV_FILE", str(env_file))
    monkeypatch.setenv("SYNC_CLIENT_ID", "from-env")

    settings = load(Settings)

    assert settings.client_id == "from-env"
    assert settings.http_retries == 9


def test_password_from_the_secrets_directory_without_its_trailing_newline(
    monkeypatch, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "SYNC_PASSWORD").write_text(CANARY + "\n")
    monkeypatch.setenv("SYNC_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("SYNC_CLIENT_ID", "client-1")
    monkeypatch.setenv("SYNC_EMAIL", "ops@example.com")

    assert load(Settings).password.get_secret_value() == CANARY


def test_environment_beats_the_secrets_directory(
    credentials: None, monkeypatch, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "SYNC_CLIENT_ID").write_text("from-secret\n")
    monkeypatch.setenv("SYNC_SECRETS_DIR", str(secrets))

    assert load(Settings).client_id == "client-1"


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize("name", ["SYNC_AUTH_URL", "SYNC_API_URL"])
@pytest.mark.parametrize(
    "url", ["http://partnerapi.comm100.io/v4", "HTTP://10.0.0.5/v4", "http://localhost.evil.com/"]
)
def test_plain_http_is_refused_for_other_hosts(credentials: None, name: str, url: str) -> None:
    message = config_error(**{name: url})

    assert name in message
    assert "SYNC_ALLOW_INSECURE_HTTP=true" in message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v4",
        "http://127.9.9.9/v4",
        "http://localhost:8080/v4",
        "http://LOCALHOST/v4",
        "http://[::1]:8080/v4",
    ],
)
def test_plain_http_is_allowed_for_loopback(credentials: None, monkeypatch, url: str) -> None:
    monkeypatch.setenv("SYNC_AUTH_URL", url)
    monkeypatch.setenv("SYNC_API_URL", url)

    settings = load(Settings)

    assert (settings.auth_url, settings.api_url) == (url, url)


def test_plain_http_is_allowed_anywhere_when_explicitly_allowed(
    credentials: None, monkeypatch
) -> None:
    monkeypatch.setenv("SYNC_API_URL", "http://partner.internal/v4")
    monkeypatch.setenv("SYNC_ALLOW_INSECURE_HTTP", "true")

    assert load(Settings).api_url == "http://partner.internal/v4"


@pytest.mark.parametrize("name", ["SYNC_AUTH_URL", "SYNC_API_URL"])
def test_url_with_credentials_is_refused_without_showing_them(credentials: None, name: str) -> None:
    message = config_error(**{name: f"https://user:{CANARY}@partner.comm100.io/x"})

    assert f"{name}: " in message
    assert "credentials" in message


@pytest.mark.parametrize(
    "url", ["ftp://partner.comm100.io/v4", "https:///v4", "partner.comm100.io"]
)
def test_url_must_be_http_with_a_host(credentials: None, url: str) -> None:
    assert "SYNC_API_URL" in config_error(SYNC_API_URL=url)


def test_api_url_trailing_slash_is_dropped(credentials: None, monkeypatch) -> None:
    monkeypatch.setenv("SYNC_API_URL", "https://api.example.com/v4/")

    assert load(Settings).platforms_url == "https://api.example.com/v4/global/platforms"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@db/sync", "postgresql+psycopg://u@db/sync"),
        ("postgres://u@db/sync", "postgresql+psycopg://u@db/sync"),
        ("mysql://u@db/sync", "mysql+pymysql://u@db/sync"),
        ("mariadb://u@db/sync", "mariadb+pymysql://u@db/sync"),
        ("postgresql+psycopg://u@db/sync", "postgresql+psycopg://u@db/sync"),
        ("sqlite:////var/lib/sync.db", "sqlite:////var/lib/sync.db"),
    ],
)
def test_database_url_gets_the_shipped_driver(monkeypatch, given: str, expected: str) -> None:
    monkeypatch.setenv("SYNC_DATABASE_URL", given)

    assert load(DatabaseSettings).database_url == expected


def test_database_url_that_is_not_a_url_is_refused(credentials: None) -> None:
    assert "SYNC_DATABASE_URL" in config_error(SYNC_DATABASE_URL="comm100.db")


def test_database_url_for_display_masks_the_password(monkeypatch) -> None:
    monkeypatch.setenv("SYNC_DATABASE_URL", f"postgresql://sync:{CANARY}@db:5432/sync")

    shown = load(DatabaseSettings).database_url_for_display

    assert CANARY not in shown
    assert shown == "postgresql+psycopg://sync:***@db:5432/sync"


# --------------------------------------------------------------------------- numbers and enums


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SYNC_HTTP_RETRIES", "-1"),
        ("SYNC_HTTP_RETRIES", "three"),
        ("SYNC_HTTP_RETRIES", "1.5"),
        ("SYNC_MAX_DELETE_FRACTION", "1.5"),
        ("SYNC_MAX_DELETE_FRACTION", "-0.1"),
        ("SYNC_HTTP_TIMEOUT_SECONDS", "0"),
        ("SYNC_CYCLE_TIMEOUT_SECONDS", "-5"),
        ("SYNC_INTERVAL_SECONDS", "0"),
        ("SYNC_ALLOW_INSECURE_HTTP", "maybe"),
        ("SYNC_AUTO_MIGRATE", "sometimes"),
        ("SYNC_LOG_FORMAT", "xml"),
        ("SYNC_LOG_LEVEL", "loud"),
    ],
)
def test_out_of_range_values_name_the_variable(credentials: None, name: str, value: str) -> None:
    message = config_error(**{name: value})

    assert message.startswith(f"invalid settings: {name}: ")


def test_every_bad_variable_is_reported_at_once(credentials: None) -> None:
    message = config_error(SYNC_HTTP_RETRIES="-1", SYNC_MAX_DELETE_FRACTION="2")

    assert "SYNC_HTTP_RETRIES" in message
    assert "SYNC_MAX_DELETE_FRACTION" in message


@pytest.mark.parametrize("fraction", ["0", "1", "1.0", "0.25"])
def test_delete_fraction_bounds_are_inclusive(credentials: None, monkeypatch, fraction) -> None:
    monkeypatch.setenv("SYNC_MAX_DELETE_FRACTION", fraction)

    assert load(Settings).max_delete_fraction == float(fraction)


def test_zero_retries_is_allowed(credentials: None, monkeypatch) -> None:
    monkeypatch.setenv("SYNC_HTTP_RETRIES", "0")

    assert load(Settings).http_retries == 0


def test_log_format_and_level_are_case_insensitive(monkeypatch) -> None:
    monkeypatch.setenv("SYNC_LOG_FORMAT", "JSON")
    monkeypatch.setenv("SYNC_LOG_LEVEL", "debug")

    settings = load(DatabaseSettings)

    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")


def test_variable_names_are_case_insensitive(monkeypatch) -> None:
    monkeypatch.setenv("sync_auto_migrate", "false")

    assert load(DatabaseSettings).auto_migrate is False


def test_a_secrets_directory_that_does_not_exist_is_a_config_error(
    credentials: None, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SYNC_SECRETS_DIR", str(tmp_path / "missing"))
    message = config_error()
    assert "SYNC_SECRETS_DIR: no such directory" in message


def test_messages_do_not_carry_pydantic_prefixes(credentials: None) -> None:
    message = config_error(SYNC_API_URL="https://user:pw@example.com/v4")
    assert "SYNC_API_URL: must not carry credentials" in message
    assert "Value error" not in message


# --------------------------------------------------------------------------- partner and tokens


def test_an_over_long_partner_id_is_a_configuration_error(credentials: None) -> None:
    assert "SYNC_PARTNER_ID: must be at most 64 characters" in config_error(
        SYNC_PARTNER_ID="9" * 65
    )


def test_a_partner_id_of_64_characters_is_accepted(
    credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNC_PARTNER_ID", " " + "9" * 64 + " ")

    assert load(Settings).partner_id == "9" * 64


def test_a_short_token_cache_key_is_refused_without_showing_it(credentials: None) -> None:
    key = "short-key-canary-1234"
    message = config_error(SYNC_TOKEN_CACHE_KEY=key)

    assert "SYNC_TOKEN_CACHE_KEY: must be at least 32 characters" in message
    assert key not in message


def test_the_token_cache_key_is_optional_and_hidden(
    credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load(Settings).token_cache_key is None
    key = "a-token-cache-key-of-enough-length-0123"
    monkeypatch.setenv("SYNC_TOKEN_CACHE_KEY", key)

    settings = load(Settings)

    assert settings.token_cache_key is not None
    assert settings.token_cache_key.get_secret_value() == key
    assert key not in repr(settings)


def test_auth_backoff_cap_defaults_to_six_hours(credentials: None) -> None:
    assert load(Settings).auth_backoff_max_seconds == 21600
    assert "SYNC_AUTH_BACKOFF_MAX_SECONDS" in config_error(SYNC_AUTH_BACKOFF_MAX_SECONDS="0")


def test_repr_of_settings_shows_no_secret(
    credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNC_DATABASE_URL", "postgresql://sync:db-Canary-pw@db.example/bi")
    monkeypatch.setenv("SYNC_TOKEN_CACHE_KEY", "cache-Canary-key-0123456789abcdefghij")

    settings = load(Settings)

    shown = f"{settings!r} {settings}"
    for secret in ("db-Canary-pw", "cache-Canary-key", CANARY):
        assert secret not in shown
    assert sorted(settings.secret_values()) == sorted(
        ["db-Canary-pw", CANARY, "cache-Canary-key-0123456789abcdefghij"]
    )


def test_an_unreadable_database_url_is_refused_without_showing_it(credentials: None) -> None:
    from sync.store import create_engine

    with pytest.raises(ConfigError) as caught:
        create_engine("postgresql://sync:pw-Canary@db.example:notaport/bi")

    assert "pw-Canary" not in str(caught.value)
    assert "SYNC_DATABASE_URL" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("postgresql://sync:pw-Canary@db/bi", "psycopg", "postgresql"),
        ("mysql://sync:pw-Canary@db/bi", "pymysql", "mysql"),
    ],
)
def test_a_database_url_whose_driver_is_not_installed_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str, extra: str
) -> None:
    """The drivers are extras: without one, the error says which to install, in one line."""
    from sync.settings import normalise_database_url
    from sync.store import create_engine

    monkeypatch.setitem(sys.modules, module, None)  # as if never installed: import fails

    with pytest.raises(ConfigError) as caught:
        create_engine(normalise_database_url(url))

    message = str(caught.value)
    assert message == (
        f"invalid settings: SYNC_DATABASE_URL: its driver {module} is not installed: "
        f"pip install 'comm100-sync[{extra}]'"
    )
    assert "pw-Canary" not in message


# --------------------------------------------------------------------------- lists


def test_the_default_lists_are_the_partner_lists(credentials: None) -> None:
    names = [r.name for r in load(Settings).resource_list]
    assert names == ["platforms", "sites", "products", "plans"]


def test_lists_are_put_in_sync_order(credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_RESOURCES", " Agents, sites ,platforms,agents")

    settings = load(Settings)

    assert settings.resources == "platforms,sites,agents"
    assert [r.name for r in settings.resource_list] == ["platforms", "sites", "agents"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("platforms,contacts", "SYNC_RESOURCES: unknown list(s) contacts; known: platforms"),
        ("platforms,agents", "SYNC_RESOURCES: agents are fetched per site: add sites"),
        (" , ", "SYNC_RESOURCES: name at least one list"),
    ],
)
def test_an_unusable_list_of_lists_is_a_configuration_error(
    credentials: None, value: str, expected: str
) -> None:
    assert expected in config_error(SYNC_RESOURCES=value)


def test_concurrency_and_personal_data_settings(
    credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load(Settings)
    assert (settings.http_concurrency, settings.keep_personal_data) == (4, False)
    assert "SYNC_HTTP_CONCURRENCY" in config_error(SYNC_HTTP_CONCURRENCY="0")


# --------------------------------------------------------------------------- accounts


def set_account(monkeypatch: pytest.MonkeyPatch, name: str, **values: str) -> None:
    defaults = {"CLIENT_ID": f"client-{name}", "EMAIL": f"{name}@example.com",
                "PASSWORD": f"pw-{name}-canary", "PARTNER_ID": f"p-{name}"}  # fmt: skip
    for key, value in (defaults | values).items():
        monkeypatch.setenv(f"SYNC_{name.upper()}__{key}", value)


def test_one_account_from_the_plain_settings_by_default(credentials: None) -> None:
    (account,) = load(Settings).account_list

    assert (account.name, account.credentials.client_id, account.partner_id) == (
        "default", "client-1", None,
    )  # fmt: skip
    assert CANARY not in repr(account)


def test_several_accounts_each_with_its_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_ACCOUNTS", "acme, globex_eu")
    set_account(monkeypatch, "acme")
    set_account(monkeypatch, "globex_eu", RESOURCES="sites,agents")

    acme, globex = load(Settings).account_list

    assert (acme.name, acme.credentials.email, acme.partner_id) == (
        "acme", "acme@example.com", "p-acme",
    )  # fmt: skip
    assert [r.name for r in acme.resources] == ["platforms", "sites", "products", "plans"]
    assert [r.name for r in globex.resources] == ["sites", "agents"]
    assert globex.credentials.password == "pw-globex_eu-canary"


def test_account_settings_come_from_the_secrets_directory_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "SYNC_ACCOUNTS").write_text("acme\n")
    for key, value in {"CLIENT_ID": "c", "EMAIL": "e@x", "PASSWORD": "from-a-file",
                       "PARTNER_ID": "42"}.items():  # fmt: skip
        (secrets / f"SYNC_ACME__{key}").write_text(value + "\n")
    monkeypatch.setenv("SYNC_SECRETS_DIR", str(secrets))

    (acme,) = load(Settings).account_list

    assert (acme.credentials.password, acme.partner_id) == ("from-a-file", "42")


def test_every_missing_account_setting_is_named_never_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNC_ACCOUNTS", "acme,globex")
    set_account(monkeypatch, "acme")
    monkeypatch.setenv("SYNC_GLOBEX__PASSWORD", CANARY)
    monkeypatch.setenv("SYNC_ACME__RESOURCES", "agents")

    message = config_error()

    for name in ("SYNC_GLOBEX__CLIENT_ID", "SYNC_GLOBEX__EMAIL", "SYNC_GLOBEX__PARTNER_ID"):
        assert f"{name}: is required" in message
    assert "SYNC_ACME__RESOURCES: agents are fetched per site" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("acme,Acme!", "not account names ([a-z0-9_]+): acme!"), ("a,b,a", "named twice: a")],
)
def test_bad_account_names_are_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    assert f"SYNC_ACCOUNTS: {expected}" in config_error(SYNC_ACCOUNTS=value)


def test_with_accounts_the_single_account_credentials_are_not_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNC_ACCOUNTS", "acme")
    set_account(monkeypatch, "acme")

    assert [a.name for a in load(Settings).account_list] == ["acme"]


def test_every_account_password_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_ACCOUNTS", "acme,globex")
    set_account(monkeypatch, "acme")
    set_account(monkeypatch, "globex")

    settings = load(Settings)

    assert {"pw-acme-canary", "pw-globex-canary"} <= set(settings.secret_values())
    assert "pw-acme-canary" not in repr(settings) + repr(settings.account_list)


# --------------------------------------------------------------------------- budget, cadence


@pytest.mark.parametrize(
    ("value", "rate"),
    [("270/300", (270, 300.0)), (" 30/5.5 ", (30, 5.5)), ("0", None)],
)
def test_the_rate_limit_is_calls_per_seconds_or_off(
    credentials: None, monkeypatch: pytest.MonkeyPatch, value: str, rate: object
) -> None:
    monkeypatch.setenv("SYNC_RATE_LIMIT", value)
    assert load(Settings).rate == rate


@pytest.mark.parametrize("value", ["300", "0/300", "a/b", "10/0", "-1/5"])
def test_a_malformed_rate_limit_is_a_configuration_error(credentials: None, value: str) -> None:
    assert "SYNC_RATE_LIMIT: expected CALLS/SECONDS" in config_error(SYNC_RATE_LIMIT=value)


def test_per_list_intervals_default_to_the_interval(
    credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNC_INTERVAL_SECONDS", "120")
    monkeypatch.setenv("SYNC_RESOURCE_INTERVALS", "agents=3600, Departments=86400")

    settings = load(Settings)

    assert [settings.interval_of(n) for n in ("agents", "departments", "sites")] == [
        3600, 86400, 120,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected"),
    [("contacts=60", "unknown list 'contacts'"), ("agents=soon", "agents: expected a number"),
     ("agents=0", "agents: expected a number"), ("agents", "agents: expected a number")],
)  # fmt: skip
def test_malformed_per_list_intervals_are_refused(
    credentials: None, value: str, expected: str
) -> None:
    assert f"SYNC_RESOURCE_INTERVALS: {expected}" in config_error(SYNC_RESOURCE_INTERVALS=value)
