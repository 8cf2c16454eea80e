"""Reading whole tables back, for tests that compare the database before and after a step."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.schema import platform_audit, platforms, sync_runs


def contents(engine: Engine, table: sa.Table) -> list[dict[str, Any]]:
    """Every row of `table` as a dict, in primary-key order."""
    with engine.connect() as conn:
        query = sa.select(table).order_by(*table.primary_key.columns)
        return [dict(row) for row in conn.execute(query).mappings()]


def synced_tables(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """The tables a failed cycle must leave exactly as they were."""
    return {table.name: contents(engine, table) for table in (platforms, platform_audit)}


def runs(engine: Engine) -> list[dict[str, Any]]:
    """sync_runs, oldest first."""
    return contents(engine, sync_runs)
