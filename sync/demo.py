"""`comm100-sync demo`: the emulator in a thread, a SQLite file, and a few cycles that show
an insert, a rename, a removal and a restore, then the table and the audit trail."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr

from sync.emulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_EMAIL,
    DEFAULT_PASSWORD,
    Emulator,
)
from sync.errors import ConfigError
from sync.job import RunResult, run_once
from sync.migrate import ensure_schema
from sync.schema import platform_audit, platforms
from sync.settings import Settings
from sync.wiring import build_client, build_engine, cycle_options

STEPS: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "first sync: three platforms appear",
        [{"id": 100, "name": "US"}, {"id": 200, "name": "EU"}, {"id": 300, "name": "AU"}],
    ),
    (
        "EU is renamed and CA is added",
        [
            {"id": 100, "name": "US"},
            {"id": 200, "name": "EU West"},
            {"id": 300, "name": "AU"},
            {"id": 400, "name": "CA"},
        ],
    ),
    (
        "AU disappears from the API (soft delete)",
        [{"id": 100, "name": "US"}, {"id": 200, "name": "EU West"}, {"id": 400, "name": "CA"}],
    ),
    (
        "AU comes back (restore)",
        [
            {"id": 100, "name": "US"},
            {"id": 200, "name": "EU West"},
            {"id": 300, "name": "AU"},
            {"id": 400, "name": "CA"},
        ],
    ),
    (
        "nothing changed: only a sync_runs row is written",
        [
            {"id": 100, "name": "US"},
            {"id": 200, "name": "EU West"},
            {"id": 300, "name": "AU"},
            {"id": 400, "name": "CA"},
        ],
    ),
]


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("  " + line for line in lines)


def _describe(result: RunResult) -> str:
    if result.error is not None:
        return f"failed: {result.error}"
    c = result.counts
    return (
        f"run {result.run_id}: {c['inserted']} inserted, {c['updated']} updated, "
        f"{c['deleted']} deleted, {c['restored']} restored, {c['unchanged']} unchanged"
    )


def _command() -> str:
    """How to call comm100-sync from here: by name if it is on PATH, else by its full path."""
    beside = Path(sys.executable).parent / "comm100-sync"
    if shutil.which("comm100-sync") or not beside.exists():
        return "comm100-sync"
    return str(beside)


# PRAGMA application_id of the databases the demo creates: the only files it will overwrite.
DEMO_APPLICATION_ID = 0x43314430  # "C1D0"


def is_demo_database(path: Path) -> bool:
    """True for a SQLite file this demo created; False for anything else, read-only."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
            (application_id,) = conn.execute("PRAGMA application_id").fetchone()
    except sqlite3.Error:
        return False
    return bool(application_id == DEMO_APPLICATION_ID)


def prepare(path: Path, *, force: bool) -> None:
    """Start from an empty database: remove a previous demo's file and its -wal/-shm files.

    Raises:
        ConfigError: `path` exists and is not a demo database (unless `force`), or is not
            a regular file.
    """
    companions = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise ConfigError(f"demo --database {path}: not a regular file; choose another path")
        if not force and not is_demo_database(path):
            raise ConfigError(
                f"demo --database {path}: the file exists and is not a demo database; "
                "choose another path, or pass --force to overwrite it"
            )
    for file in (path, *companions):
        file.unlink(missing_ok=True)


def main(database: str = "comm100_sync_demo.db", *, force: bool = False) -> int:
    """Run the demo; returns the exit code (0 when every cycle succeeded)."""
    path = Path(database).resolve()
    prepare(path, force=force)
    with Emulator(rate_limit=None) as emulator:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            _secrets_dir=None,
            client_id=DEFAULT_CLIENT_ID,
            email=DEFAULT_EMAIL,
            password=SecretStr(DEFAULT_PASSWORD),
            auth_url=emulator.auth_url,
            api_url=emulator.api_url,
            database_url=f"sqlite:///{path}",
            max_delete_fraction=1.0,
        )
        engine = build_engine(settings)
        ensure_schema(engine, auto_migrate=True)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"PRAGMA application_id = {DEMO_APPLICATION_ID}")
        client = build_client(settings, engine)
        print(f"Partner API emulator at {emulator.url}; database {path}\n")
        failed = False
        for number, (title, snapshot) in enumerate(STEPS, start=1):
            emulator.set_platforms(snapshot)
            result = run_once(engine, client, cycle_options(settings))
            failed |= result.error is not None
            print(f"cycle {number}: {title}\n  {_describe(result)}")
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    platforms.c.partner_id,
                    platforms.c.id,
                    platforms.c.name,
                    platforms.c.first_seen_at,
                    platforms.c.updated_at,
                    platforms.c.deleted_at,
                ).order_by(platforms.c.id)
            ).all()
            audit = conn.execute(
                sa.select(
                    platform_audit.c.run_id,
                    platform_audit.c.platform_id,
                    platform_audit.c.action,
                    platform_audit.c.old_values,
                    platform_audit.c.new_values,
                ).order_by(platform_audit.c.id)
            ).all()
        engine.dispose()

    def when(value: Any) -> str:
        return value.strftime("%H:%M:%S.%f")[:-3] if value else ""

    print("\nplatforms:")
    print(
        _table(
            ["partner_id", "id", "name", "first_seen_at", "updated_at", "deleted_at"],
            [
                [
                    r.partner_id,
                    r.id,
                    r.name,
                    when(r.first_seen_at),
                    when(r.updated_at),
                    when(r.deleted_at),
                ]
                for r in rows
            ],
        )
    )
    print("\nplatform_audit:")
    print(
        _table(
            ["run_id", "platform_id", "action", "old name", "new name"],
            [
                [
                    a.run_id,
                    a.platform_id,
                    a.action,
                    (a.old_values or {}).get("name"),
                    (a.new_values or {}).get("name"),
                ]
                for a in audit
            ],
        )
    )
    print(
        f"\nThe database is kept at {path}; try: SYNC_DATABASE_URL=sqlite:///{path} "
        f"{_command()} status"
    )
    return 1 if failed else 0
