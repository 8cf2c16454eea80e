"""Partner accounts: one from SYNC_CLIENT_ID/SYNC_EMAIL/SYNC_PASSWORD, or several named in
SYNC_ACCOUNTS, each from SYNC_<NAME>__CLIENT_ID, __EMAIL, __PASSWORD, __PARTNER_ID (required)
and an optional __RESOURCES, read from the same sources as every setting (the environment, the
.env file, the secrets directory)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from sync.errors import ConfigError
from sync.resources import PARTNER_ID_LENGTH, Resource, parse_resource_names


@dataclass(frozen=True)
class Credentials:
    client_id: str
    email: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(client_id={self.client_id!r}, email={self.email!r}, password='***')"

    @property
    def login_key(self) -> str:
        """Names the login (client id and email, never the password) in the database."""
        return hashlib.sha256(f"{self.client_id}\0{self.email}".encode()).hexdigest()


ACCOUNT_NAME = re.compile(r"[a-z0-9_]+")
SINGLE_ACCOUNT = "default"


@dataclass(frozen=True)
class Account:
    """One partner account: its credentials, its partner and its lists."""

    name: str
    credentials: Credentials
    partner_id: str | None
    resources: tuple[Resource, ...]

    def __repr__(self) -> str:
        return f"Account({self.name!r}, partner_id={self.partner_id!r})"


def parse_account_names(value: str) -> list[str]:
    """SYNC_ACCOUNTS as a list of names; ValueError says what is wrong."""
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    if not names:
        raise ValueError("name at least one account")
    bad = [name for name in names if not ACCOUNT_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"not account names ([a-z0-9_]+): {', '.join(bad)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"named twice: {', '.join(repeated)}")
    return names


def named_accounts(
    names: list[str],
    lookup: Callable[[str], str | None],
    default_resources: tuple[Resource, ...],
) -> tuple[Account, ...]:
    """The accounts of SYNC_ACCOUNTS; `lookup(variable)` reads one setting from the sources.

    Raises:
        ConfigError: one line naming every missing or invalid variable, never a value.
    """
    accounts, problems = [], []
    for name in names:
        prefix = f"SYNC_{name.upper()}__"
        keys = ("CLIENT_ID", "EMAIL", "PASSWORD", "PARTNER_ID", "RESOURCES")
        values = {key: (lookup(prefix + key) or "").strip() for key in keys}
        for key in ("CLIENT_ID", "EMAIL", "PASSWORD", "PARTNER_ID"):
            if not values[key]:
                problems.append(f"{prefix}{key}: is required")
        if len(values["PARTNER_ID"]) > PARTNER_ID_LENGTH:
            problems.append(f"{prefix}PARTNER_ID: must be at most {PARTNER_ID_LENGTH} characters")
        resources = default_resources
        if values["RESOURCES"]:
            try:
                resources = parse_resource_names(values["RESOURCES"])
            except ValueError as exc:
                problems.append(f"{prefix}RESOURCES: {exc}")
        credentials = Credentials(values["CLIENT_ID"], values["EMAIL"], values["PASSWORD"])
        accounts.append(Account(name, credentials, values["PARTNER_ID"] or None, resources))
    if problems:
        raise ConfigError("invalid settings: " + "; ".join(problems))
    return tuple(accounts)
