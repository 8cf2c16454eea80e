"""Alembic `upgrade head` from code, and the start-up check that skips Alembic when current."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.engine import Engine

from sync import tracing
from sync.errors import ConfigError, StoreError
from sync.schema import SCHEMA_REVISION
from sync.store import current_revision, named_lock, translate_errors

log = logging.getLogger(__name__)

MIGRATION_LOCK = "comm100-sync:migrate"
MIGRATION_LOCK_WAIT_SECONDS = 120.0


def script_location() -> Path:
    """Migrations shipped in the wheel (sync/migrations), else the checkout's migrations/."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "migrations", package_dir.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigError("the Alembic migrations are missing from this installation")


def upgrade(engine: Engine) -> str | None:
    """Upgrade to head under a cross-process lock; returns the revision before (None if empty).

    Idempotent: a database already at head is left alone.
    """
    with tracing.span("sync.migrate", {"sync.schema.target": SCHEMA_REVISION}) as span:
        before = _upgrade(engine)
        span.set({"sync.schema.before": before or "empty"})
    return before


def _upgrade(engine: Engine) -> str | None:
    from alembic import command
    from alembic.config import Config
    from alembic.util.exc import CommandError

    with named_lock(engine, MIGRATION_LOCK, MIGRATION_LOCK_WAIT_SECONDS) as held:
        if not held:
            raise StoreError("another process has been migrating this database for too long")
        before = current_revision(engine)
        config = Config()
        config.set_main_option("script_location", str(script_location()))
        with translate_errors("migrating the schema"), engine.begin() as conn:
            config.attributes["connection"] = conn
            try:
                command.upgrade(config, "head")
            except CommandError as exc:
                raise ConfigError(f"cannot migrate: {exc}") from None
    after = current_revision(engine)
    if before != after:
        log.info("schema migrated from %s to %s", before or "empty", after)
    return before


def ensure_schema(engine: Engine, *, auto_migrate: bool) -> None:
    """Make sure the schema is what this code expects, migrating first if allowed.

    Raises:
        ConfigError: the schema is behind and auto-migration is off, or ahead of this code.
    """
    revision = current_revision(engine)
    if revision == SCHEMA_REVISION:
        return
    if not auto_migrate:
        raise ConfigError(
            f"database schema is at {revision or 'nothing'}, this version needs "
            f"{SCHEMA_REVISION}: run `comm100-sync migrate` (SYNC_AUTO_MIGRATE=false)"
        )
    upgrade(engine)
