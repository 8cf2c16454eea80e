"""Declarations of the list resources the job syncs: where each lives in the API and in SQL.

A new list (sites, products) is a declaration here plus a migration for its tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from sync import schema
from sync.models import Record, parse_platform_list


@dataclass(frozen=True)
class Resource:
    """One Partner API list mirrored into one table plus its audit table.

    Attributes:
        name: value of sync_runs.resource.
        path: API path under SYNC_API_URL.
        parse: body → validated records (raises PayloadError).
        table: live rows; primary key (partner_id, id); columns raw, raw_hash, first_seen_at,
            updated_at, deleted_at, plus `typed_columns`.
        audit: change rows; `audit_key` names the column holding the record's id.
        typed_columns: the table's columns filled from each record besides the common ones.
        typed_fields: the JSON field each of `typed_columns` comes from.
        typed_values: record → values for `typed_columns`, in that order.
    """

    name: str
    path: str
    parse: Callable[[bytes], list[Record]]
    table: sa.Table
    audit: sa.Table
    audit_key: str
    typed_columns: tuple[str, ...]
    typed_fields: tuple[str, ...]
    typed_values: Callable[[Record], tuple[Any, ...]]

    def shown(self, raw: dict[str, Any], typed: tuple[Any, ...]) -> dict[str, Any]:
        """A row as a dashboard saw it: `raw`, with typed columns that disagree laid over it."""
        shown = dict(raw)
        for field, value in zip(self.typed_fields, typed, strict=True):
            if raw.get(field) != value:
                shown[field] = value.isoformat() if isinstance(value, datetime) else value
        return shown


PLATFORMS = Resource(
    name="platforms",
    path="/global/platforms",
    parse=parse_platform_list,
    table=schema.platforms,
    audit=schema.platform_audit,
    audit_key="platform_id",
    typed_columns=("name",),
    typed_fields=("name",),
    typed_values=lambda record: (record.name,),
)
