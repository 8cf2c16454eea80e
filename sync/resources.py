"""The registry of list resources: where each lives in the API and in SQL, its key, its scope, its
typed columns and the personal fields it must not keep.

A new list is a declaration here plus a migration for its tables; every consumer (parsing, the
store, the job, the scheduler, metrics, status, the demo) iterates REGISTRY. Pure declarations:
no I/O; the SQLAlchemy tables are built from these in sync.schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import sqlalchemy as sa

Kind = Literal["text", "bool", "int", "time"]
KeyKind = Literal["int", "text"]
Scope = Literal["partner", "site"]

# Text keys: guids (36 characters) and product names ("LiveChat"); room to spare.
KEY_TEXT_LENGTH = 128
PARTNER_ID_LENGTH = 64
# Statuses of a site whose per-site lists are fetched (Closed and Purged sites answer 403/404).
ACTIVE_SITE_STATUSES = ("Open", "Suspended")


def snake_case(name: str) -> str:
    """countryOrRegion → country_or_region (the SQL column of an API field)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class Column:
    """A typed column filled from one top-level field of each object.

    Kinds: text (a JSON string, or a number stored as its text), bool, int, time (an ISO-8601
    string, stored as UTC). Absent or null is NULL unless `required`; any other JSON type fails
    the list.
    """

    field: str
    kind: Kind = "text"
    required: bool = False

    @property
    def name(self) -> str:
        return snake_case(self.field)


@dataclass(frozen=True)
class Resource:
    """One Partner API list, mirrored into `<name>` and `<singular>_audit`.

    Attributes:
        name: the list's name: SYNC_RESOURCES, sync_runs.resource, the live table, the view
            `<name>_current`.
        path: the GET path under SYNC_API_URL; `{siteId}` for a per-site list.
        key: the JSON type of `id` (int or text).
        scope: partner (one list per partner) or site (one list per site of the partner).
        singular: names the audit table `<singular>_audit` and its key column `<singular>_id`.
        columns: the typed columns besides the common ones (partner_id, [site_id,] id, raw,
            raw_hash, first_seen_at, updated_at, deleted_at).
        personal: top-level keys dropped before anything is stored or logged (unless
            SYNC_KEEP_PERSONAL_DATA), plus every key containing `personal_substring`.
    """

    name: str
    path: str
    key: KeyKind
    scope: Scope
    singular: str
    columns: tuple[Column, ...]
    personal: tuple[str, ...] = ()
    personal_substring: str | None = None
    _personal_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_personal_set", frozenset(self.personal))

    @property
    def site_scoped(self) -> bool:
        return self.scope == "site"

    @property
    def audit_key(self) -> str:
        return f"{self.singular}_id"

    @property
    def typed_columns(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def typed_fields(self) -> tuple[str, ...]:
        return tuple(column.field for column in self.columns)

    def url_path(self, site_id: int | None = None) -> str:
        return self.path.format(siteId=site_id) if self.site_scoped else self.path

    def is_personal(self, key: str) -> bool:
        if key in self._personal_set:
            return True
        return self.personal_substring is not None and self.personal_substring in key.lower()

    @cached_property
    def table(self) -> sa.Table:
        from sync import schema

        return schema.metadata.tables[self.name]

    @cached_property
    def audit(self) -> sa.Table:
        from sync import schema

        return schema.metadata.tables[f"{self.singular}_audit"]


def _declare(*resources: Resource) -> dict[str, Resource]:
    return {resource.name: resource for resource in resources}


REGISTRY: dict[str, Resource] = _declare(
    Resource(
        "platforms", "/global/platforms", "int", "partner", "platform",
        (Column("name", required=True),),
    ),
    Resource(
        "sites", "/global/sites", "int", "partner", "site",
        (Column("platformId", "int"), Column("status"), Column("company"), Column("website"),
         Column("countryOrRegion"), Column("timeZone"), Column("externalId")),
    ),
    Resource(
        "products", "/global/products", "text", "partner", "product",
        (Column("moduleId"), Column("name"), Column("isDeleted", "bool")),
    ),
    Resource(
        "plans", "/global/plans", "int", "partner", "plan",
        (Column("name"), Column("isEnabled", "bool"), Column("groupName"),
         Column("createdTime", "time"), Column("lastUpdatedTime", "time")),
    ),
    Resource(
        "agents", "/global/sites/{siteId}/agents", "text", "site", "agent",
        (Column("isAdmin", "bool"), Column("isActive", "bool"), Column("isLocked", "bool"),
         Column("timeZone"), Column("createdTime", "time")),
        personal=("email", "phone", "firstName", "lastName", "displayName", "bio", "title"),
        personal_substring="avatar",
    ),
    Resource(
        "departments", "/global/sites/{siteId}/departments", "text", "site", "department",
        (Column("name"), Column("isDeleted", "bool")),
    ),
    Resource(
        "roles", "/global/sites/{siteId}/roles", "text", "site", "role",
        (Column("name"), Column("type")),
    ),
    Resource(
        "site_products", "/global/sites/{siteId}/products", "text", "site", "site_product",
        (Column("moduleId"), Column("name"), Column("isDeleted", "bool")),
    ),
)  # fmt: skip
DEFAULT_RESOURCES = ("platforms", "sites", "products", "plans")
PLATFORMS = REGISTRY["platforms"]
SITES = REGISTRY["sites"]


def in_sync_order(names: tuple[str, ...] | list[str]) -> Iterator[Resource]:
    """The resources named, partner lists first (sites before every per-site list)."""
    chosen = set(names)
    for scope in ("partner", "site"):
        yield from (r for r in REGISTRY.values() if r.name in chosen and r.scope == scope)


def parse_resource_names(value: str) -> tuple[Resource, ...]:
    """A comma list of list names (SYNC_RESOURCES) as resources in sync order.

    Raises:
        ValueError: an unknown name, no name, or a per-site list without `sites`.
    """
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown list(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    if not names:
        raise ValueError(f"name at least one list of: {', '.join(REGISTRY)}")
    per_site = [name for name in names if REGISTRY[name].site_scoped]
    if per_site and "sites" not in names:
        raise ValueError(f"{', '.join(per_site)} are fetched per site: add sites to the list")
    return tuple(in_sync_order(names))
