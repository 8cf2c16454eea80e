"""`comm100-sync demo`: the emulator in a thread, a SQLite file, and a few cycles of the whole
account that show an insert, a rename, a removal, a restore and a suspended site; then the
platform table, its audit trail, and the sites as they were at an earlier instant."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime
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
from sync.job import RunResult, Upkeep, run_account
from sync.migrate import ensure_schema
from sync.resources import REGISTRY
from sync.schema import platform_audit, platforms
from sync.settings import Settings
from sync.wiring import build_client, build_engine, cycle_options

# PRAGMA application_id of the databases the demo creates: the only files it will overwrite.
DEMO_APPLICATION_ID = 0x43314430  # "C1D0"
US, EU, AU, CA = ({"id": 100, "name": "US"}, {"id": 200, "name": "EU"},
                  {"id": 300, "name": "AU"}, {"id": 400, "name": "CA"})  # fmt: skip
EU_WEST = {**EU, "name": "EU West"}


def _rename_add_and_suspend(emulator: Emulator) -> None:
    emulator.set_platforms([US, EU_WEST, AU, CA])
    sites = emulator.get_list("sites")
    emulator.set_sites([{**s, "status": "Suspended"} if s["id"] == 10001 else s for s in sites])


STEPS: list[tuple[str, Callable[[Emulator], None]]] = [
    ("first sync: every list of the account appears",
     lambda e: e.set_platforms([US, EU, AU])),
    ("EU is renamed, CA is added, and site 10001 is suspended",
     _rename_add_and_suspend),
    ("AU disappears from the API (soft delete)",
     lambda e: e.set_platforms([US, EU_WEST, CA])),
    ("AU comes back (restore)",
     lambda e: e.set_platforms([US, EU_WEST, AU, CA])),
    ("nothing changed: only sync_runs rows are written",
     lambda e: None),
]  # fmt: skip


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


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("  " + line for line in lines)


def _describe(results: list[RunResult]) -> str:
    failed = [r for r in results if r.error is not None]
    if failed:
        return "; ".join(f"{r.resource} failed: {r.error}" for r in failed)
    totals = {k: sum(r.counts.get(k, 0) for r in results)
              for k in ("inserted", "updated", "deleted", "restored", "unchanged")}  # fmt: skip
    changed = [f"{r.resource} {r.changes}" for r in results if r.changes]
    return (
        f"{len(results)} lists: {totals['inserted']} inserted, {totals['updated']} updated, "
        f"{totals['deleted']} deleted, {totals['restored']} restored, "
        f"{totals['unchanged']} unchanged" + (f" ({', '.join(changed)})" if changed else "")
    )


def _command() -> str:
    """How to call comm100-sync from here: by name if it is on PATH, else by its full path."""
    beside = Path(sys.executable).parent / "comm100-sync"
    if shutil.which("comm100-sync") or not beside.exists():
        return "comm100-sync"
    return str(beside)


def _sites_at(conn: sa.Connection, instant: datetime) -> list[list[Any]]:
    """site_history's answer to "which sites were there at `instant`, in what status"."""
    # SQLite keeps UTC text with six fraction digits (see docs/bi.md).
    at = instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    rows = conn.execute(
        sa.text(
            "SELECT site_id, status, company FROM site_history "
            "WHERE valid_from <= :at AND (valid_to IS NULL OR valid_to > :at) ORDER BY site_id"
        ),
        {"at": at},
    )
    return [list(row) for row in rows]


def main(database: str = "comm100_sync_demo.db", *, force: bool = False) -> int:
    """Run the demo; returns the exit code (0 when every cycle succeeded)."""
    path = Path(database).resolve()
    prepare(path, force=force)
    resources = tuple(REGISTRY.values())
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
            resources=",".join(r.name for r in resources),
            rate_limit="0",  # the emulator runs without one
        )
        engine = build_engine(settings)
        ensure_schema(engine, auto_migrate=True)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"PRAGMA application_id = {DEMO_APPLICATION_ID}")
        client = build_client(settings, engine)
        upkeep = Upkeep()
        print(f"Partner API emulator at {emulator.url}; database {path}\n")
        failed, after_first = False, datetime.now(UTC)
        for number, (title, change) in enumerate(STEPS, start=1):
            change(emulator)
            results = run_account(engine, client, cycle_options(settings), resources, upkeep=upkeep)
            failed |= any(r.error is not None for r in results)
            print(f"cycle {number}: {title}\n  {_describe(results)}")
            if number == 1:
                after_first = datetime.now(UTC)
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
                    platform_audit.c.changed_fields,
                ).order_by(platform_audit.c.id)
            ).all()
            sites_then, sites_now = _sites_at(conn, after_first), _sites_at(conn, datetime.now(UTC))
            counts = [
                [r.name, conn.execute(sa.select(sa.func.count()).select_from(r.table)).scalar()]
                for r in resources
            ]
        engine.dispose()

    def when(value: Any) -> str:
        return value.strftime("%H:%M:%S.%f")[:-3] if value else ""

    print("\nplatforms:")
    print(
        _table(
            ["partner_id", "id", "name", "first_seen_at", "updated_at", "deleted_at"],
            [[r.partner_id, r.id, r.name, when(r.first_seen_at), when(r.updated_at),
              when(r.deleted_at)] for r in rows],
        )
    )  # fmt: skip
    print("\nplatform_audit:")
    print(
        _table(
            ["run_id", "platform_id", "action", "old name", "new name", "changed_fields"],
            [[a.run_id, a.platform_id, a.action, (a.old_values or {}).get("name"),
              (a.new_values or {}).get("name"), ",".join(a.changed_fields)] for a in audit],
        )
    )  # fmt: skip
    print(f"\nsites at {after_first:%H:%M:%S.%f} (site_history, after cycle 1):")
    print(_table(["site_id", "status", "company"], sites_then))
    print("\nsites now:")
    print(_table(["site_id", "status", "company"], sites_now))
    print("\nrows per list (removed rows included):")
    print(_table(["list", "rows"], counts))
    print(
        f"\nThe database is kept at {path}; try: SYNC_DATABASE_URL=sqlite:///{path} "
        f"SYNC_RESOURCES={settings.resources} {_command()} status"
    )
    return 1 if failed else 0
