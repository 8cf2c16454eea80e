"""The `comm100-sync` command: builds settings, engine and HTTP client; maps outcomes to exit codes.

Heavy modules are imported inside the commands that need them, to keep start-up short.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from sync import __version__
from sync.errors import EX_INTERNAL, EX_OK, ConfigError, SyncError

if TYPE_CHECKING:
    from sync.redaction import Secrets

log = logging.getLogger("sync.cli")


def _setup(kind: Any) -> tuple[Any, Secrets]:
    """Load settings of `kind`, gather their secrets, and configure logging from them."""
    from sync import logs, pause_points, settings
    from sync.redaction import Secrets

    loaded = settings.load(kind)
    # Crash and race tests pause a process at an exact point (see sync.pause_points).
    try:
        pause_points.arm(os.environ.get("SYNC_TEST_PAUSE_AT"))
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None
    secrets = Secrets(loaded.secret_values())
    logs.configure(fmt=loaded.log_format, level=loaded.log_level, secrets=secrets)
    several = getattr(loaded, "accounts", None) is not None
    ignored = [
        name
        for name in ("client_id", "email", "password")
        if several and getattr(loaded, name, None) is not None
    ]
    if ignored:
        log.warning(
            "SYNC_ACCOUNTS is set, so %s are ignored",
            ", ".join(f"SYNC_{name.upper()}" for name in ignored),
        )
    return loaded, secrets


def _start_tracing(settings: Any, secrets: Secrets) -> None:
    """OpenTelemetry traces when SYNC_OTEL or an OTLP endpoint variable asks for them."""
    from sync import tracing

    reason = tracing.wanted(settings.otel, os.environ)
    if reason is not None:
        tracing.start(reason, secrets, settings.identifiers())
        log.info("tracing on (%s)", reason)


def cmd_once(args: argparse.Namespace) -> int:
    from sync import tracing
    from sync.settings import Settings

    settings, secrets = _setup(Settings)
    _start_tracing(settings, secrets)
    try:
        return _once(args, settings, secrets)
    finally:
        # Also after SIGTERM's stop: the cycle has returned by now, its spans are queued.
        tracing.stop()


def _once(args: argparse.Namespace, settings: Any, secrets: Secrets) -> int:
    from sync.errors import EX_TEMPFAIL
    from sync.job import exit_code_of, run_account
    from sync.migrate import ensure_schema
    from sync.shutdown import Shutdown, supervise
    from sync.wiring import build_clients, build_engine, cycle_options

    shutdown = Shutdown(settings.stop_timeout_seconds)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        log.info("%s received: the cycle has %.0fs to finish", name, shutdown.budget_seconds)
        shutdown.request(name)

    # The cycle runs in a thread and watches `shutdown`; the signal only sets it, so a stop can
    # never land between a commit and its bookkeeping.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    engine = build_engine(settings)
    try:
        clients = build_clients(
            settings, engine, sleep=shutdown.sleep, force_auth=args.force_auth, secrets=secrets
        )
        transport = next(iter(clients.values())).transport

        def cycle() -> int:
            ensure_schema(engine, auto_migrate=settings.auto_migrate)
            results = []
            # Accounts are independent: one's failure never stops another's lists.
            for account in settings.account_list:
                results += run_account(
                    engine, clients[account.name], cycle_options(settings), account.resources,
                    account=account.name, stop=shutdown,
                )  # fmt: skip
            return exit_code_of(results)

        code: int = supervise(cycle, shutdown, transport.abort, exit_code=EX_TEMPFAIL)
        return code
    finally:
        engine.dispose()


def cmd_migrate(args: argparse.Namespace) -> int:
    from sync.migrate import upgrade
    from sync.schema import SCHEMA_REVISION
    from sync.settings import DatabaseSettings
    from sync.wiring import build_engine

    settings, _ = _setup(DatabaseSettings)
    engine = build_engine(settings)
    try:
        before = upgrade(engine)
    finally:
        engine.dispose()
    if before == SCHEMA_REVISION:
        print(f"schema already at {SCHEMA_REVISION} in {settings.database_url_for_display}")
    else:
        print(
            f"schema migrated from {before or 'empty'} to {SCHEMA_REVISION} "
            f"in {settings.database_url_for_display}"
        )
    return EX_OK


def cmd_status(args: argparse.Namespace) -> int:
    from sync.settings import DatabaseSettings
    from sync.status import collect, render_text
    from sync.wiring import build_engine

    settings, secrets = _setup(DatabaseSettings)
    engine = build_engine(settings)
    try:
        report = collect(
            engine,
            limit=args.limit,
            max_age_seconds=settings.max_age_of,
            resources=[resource.name for resource in settings.resource_list],
            partner=args.partner,
            intervals=settings.interval_of,
            rate=settings.rate,
        )
    finally:
        engine.dispose()
    if args.json:
        import json

        # One object per (account, list): what scripts and dashboards iterate over.
        print(secrets.mask(json.dumps(report["lists"], indent=2, default=str)))
    else:
        print(secrets.mask(render_text(report)))
    return EX_OK if report["healthy"] else 1


def cmd_emulator(args: argparse.Namespace) -> int:
    from sync import emulator, logs

    logs.configure(fmt="text", level="DEBUG" if args.debug else "INFO")
    emulator.main(args.host, args.port, platforms_file=args.platforms, data_file=args.data)
    return EX_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from sync import demo, logs

    logs.configure(fmt="text", level="DEBUG" if args.debug else "WARNING")
    return int(demo.main(database=args.database, force=args.force))


def cmd_run(args: argparse.Namespace) -> int:
    from sync import tracing
    from sync.scheduler import run_service
    from sync.settings import Settings

    settings, secrets = _setup(Settings)
    _start_tracing(settings, secrets)
    try:
        return int(run_service(settings, secrets))
    finally:
        tracing.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comm100-sync",
        description="Keep a SQL copy of the Comm100 Partner API's platform list, with an audit "
        "trail. Settings come from SYNC_* variables, a .env file or a secrets directory.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks for failures (never secrets)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    once = sub.add_parser("once", help="run one sync cycle and exit (for cron / CronJob)")
    once.add_argument(
        "--force-auth",
        action="store_true",
        help="send a password grant even while refused credentials are paused",
    )
    once.set_defaults(func=cmd_once)
    run = sub.add_parser("run", help="sync every SYNC_INTERVAL_SECONDS until stopped")
    run.set_defaults(func=cmd_run)
    migrate = sub.add_parser("migrate", help="create or upgrade the tables (idempotent)")
    migrate.set_defaults(func=cmd_migrate)
    status = sub.add_parser("status", help="recent runs and row counts; exit 1 if stale")
    status.add_argument("--json", action="store_true", help="one JSON object per (account, list)")
    status.add_argument("--partner", metavar="ID", help="only this partner's lists")
    status.add_argument("--limit", type=int, default=10, help="runs to show (default 10)")
    status.set_defaults(func=cmd_status)
    emu = sub.add_parser("emulator", help="serve a local emulator of the Partner API")
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=8100)
    emu.add_argument("--platforms", metavar="FILE", help="JSON file with the platform list")
    emu.add_argument(
        "--data",
        metavar="FILE",
        help='JSON file with every list: {"platforms": [...], "sites": [...], '
        '"agents": {"<siteId>": [...]}, ...}',
    )
    emu.set_defaults(func=cmd_emulator)
    demo = sub.add_parser("demo", help="show a few cycles against the emulator and SQLite")
    demo.add_argument(
        "--database",
        default="comm100_sync_demo.db",
        help="SQLite file (default %(default)s); an existing one is replaced only if an "
        "earlier demo created it",
    )
    demo.add_argument(
        "--force", action="store_true", help="replace the --database file whatever it holds"
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SyncError as error:
        # Expected failures: one line, no traceback (unless --debug).
        _report(f"error: {error}", args.debug)
        return error.exit_code
    except KeyboardInterrupt:
        _report("interrupted", args.debug)
        return 130
    except Exception as error:
        _report(f"internal error: {type(error).__name__}: {error}", True if args.debug else None)
        return EX_INTERNAL


def _report(message: str, debug: bool | None) -> None:
    from sync.logs import redact

    print(f"comm100-sync: {redact(message)}", file=sys.stderr)
    if debug:
        import traceback

        traceback.print_exc()
    elif debug is None:
        print("comm100-sync: run with --debug for the traceback", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
