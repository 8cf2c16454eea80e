"""One measured scenario in a fresh process, so that its peak RSS is its own; prints one JSON line.

    scenario.py cycle  --impl project|baseline|copy --db URL --emulator URL
    scenario.py steady --db URL --emulator URL [--cycles 50]

`cycle`: one sync cycle (token, fetch, diff, write), timed in-process: imports and settings are
done before the clock starts (the cold `once` runs in run.py include them).
`steady`: many cycles on one client and engine (token reused), alternating the project's
run_once, the project's `run` loop tick (scheduler.Service.cycle) and the baseline.
Counts SQL statements with SQLAlchemy's before_cursor_execute (an executemany is one).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import time
from typing import Any

import requests
import sqlalchemy as sa
from sqlalchemy import event

import baseline

CREDENTIALS = {
    "client_id": "demo-client",
    "email": "demo@example.com",
    "password": "demo-password",
}


class StatementCounter:
    """Statements sent through an engine (executemany = 1) and pool checkouts (pre-pings)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statements = 0
        self.checkouts = 0
        self.by_verb: collections.Counter[str] = collections.Counter()
        event.listen(engine, "before_cursor_execute", self._on_execute)
        event.listen(engine.pool, "checkout", self._on_checkout)

    def _on_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements += 1
        words = statement.split(None, 1)
        self.by_verb[words[0].upper() if words else "?"] += 1

    def _on_checkout(self, *args: Any) -> None:
        self.checkouts += 1

    def snapshot(self) -> tuple[int, int]:
        return self.statements, self.checkouts


def peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM; ru_maxrss would include the parent's)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def project_settings(args: argparse.Namespace) -> Any:
    from sync.settings import Settings

    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        _secrets_dir=None,
        client_id=CREDENTIALS["client_id"],
        email=CREDENTIALS["email"],
        password=CREDENTIALS["password"],  # type: ignore[arg-type]
        auth_url=f"{args.emulator}/oauth/token",
        api_url=f"{args.emulator}/v4",
        database_url=args.db,
        max_delete_fraction=1.0,
        log_level="INFO",
        # These scenarios are about the platform list (the baseline's one GET); Service.cycle
        # would otherwise sync the default four lists.
        resources="platforms",
    )


def configure_project_logging() -> None:
    # As the CLI does: one summary line per cycle on stderr (run.py sends it to a file).
    from sync import logs
    from sync.redaction import Secrets

    logs.configure(fmt="text", level="INFO", secrets=Secrets([CREDENTIALS["password"]]))


def cycle(args: argparse.Namespace) -> dict[str, Any]:
    rss_before = peak_rss_mb()
    if args.impl == "project":
        from sync.job import run_once
        from sync.wiring import build_client, build_engine, cycle_options

        settings = project_settings(args)
        configure_project_logging()
        engine = build_engine(settings)
        client = build_client(settings, engine)
        options = cycle_options(settings)
        counter = StatementCounter(engine)
        rss_before = peak_rss_mb()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = run_once(engine, client, options)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if result.status != "success":
            raise SystemExit(f"project cycle {result.status}: {result.error}")
        counts: dict[str, int] = dict(result.counts)
        copies = 0
    else:
        os.environ.update(
            SYNC_CLIENT_ID=CREDENTIALS["client_id"],
            SYNC_EMAIL=CREDENTIALS["email"],
            SYNC_PASSWORD=CREDENTIALS["password"],
        )
        engine = sa.create_engine(args.db)
        counter = StatementCounter(engine)
        session = requests.Session()
        rss_before = peak_rss_mb()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        token = baseline.get_token(session, f"{args.emulator}/oauth/token")
        items = baseline.fetch(session, f"{args.emulator}/v4", token)
        counts = baseline.sync(engine, items, copy=args.impl == "copy")
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        copies = counts.pop("copies")
    engine.dispose()
    return {
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        # COPY goes around SQLAlchemy's events: each COPY is one more statement.
        "statements": counter.statements + copies,
        "statements_by_verb": dict(counter.by_verb, **({"COPY": copies} if copies else {})),
        "checkouts": counter.checkouts,
        "counts": counts,
        "rss_after_imports_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }


def steady(args: argparse.Namespace) -> dict[str, Any]:
    from sync.job import run_once
    from sync.scheduler import Service
    from sync.wiring import build_client, build_engine, cycle_options

    settings = project_settings(args)
    configure_project_logging()
    engine = build_engine(settings)
    client = build_client(settings, engine)
    options = cycle_options(settings)
    service = Service(settings)

    os.environ.update(
        SYNC_CLIENT_ID=CREDENTIALS["client_id"],
        SYNC_EMAIL=CREDENTIALS["email"],
        SYNC_PASSWORD=CREDENTIALS["password"],
    )
    b_engine = sa.create_engine(args.db)
    b_session = requests.Session()
    b_session.headers["User-Agent"] = "bench-baseline"
    b_token = baseline.get_token(b_session, f"{args.emulator}/oauth/token")
    api = f"{args.emulator}/v4"

    def project() -> None:
        result = run_once(engine, client, options)
        if result.status != "success":
            raise SystemExit(f"project cycle {result.status}: {result.error}")

    def loop_tick() -> None:
        service.cycle()

    def plain() -> None:
        baseline.sync(b_engine, baseline.fetch(b_session, api, b_token))

    impls = {
        "project": (project, engine),
        "service": (loop_tick, service.engine),
        "baseline": (plain, b_engine),
    }
    counters = {name: StatementCounter(eng) for name, (_fn, eng) in impls.items()}
    # Warm-up: the first cycles fetch the token, connect, and fill the statement cache.
    for _ in range(3):
        for fn, _eng in impls.values():
            fn()
    control = requests.Session()
    control.delete(f"{args.emulator}/_emulator/requests", timeout=30).raise_for_status()

    samples: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": [], "statements": [], "checkouts": []} for name in impls
    }
    names = list(impls)
    for i in range(args.cycles):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            fn, _eng = impls[name]
            counter = counters[name]
            s0, c0 = counter.snapshot()
            wall0, cpu0 = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            s1, c1 = counter.snapshot()
            samples[name]["wall"].append(wall)
            samples[name]["cpu"].append(cpu)
            samples[name]["statements"].append(s1 - s0)
            samples[name]["checkouts"].append(c1 - c0)

    records = control.get(f"{args.emulator}/_emulator/requests", timeout=30).json()

    def user_agent(record: dict[str, Any]) -> str:
        headers = {k.lower(): v for k, v in record["headers"].items()}
        return str(headers.get("user-agent", ""))

    baseline_requests = sum(1 for r in records if user_agent(r) == "bench-baseline")
    project_requests = len(records) - baseline_requests
    for eng in (engine, service.engine, b_engine):
        eng.dispose()
    return {
        "cycles": args.cycles,
        "samples": samples,
        # run_once and Service.cycle send the same User-Agent: split their total evenly
        # (both reuse one token, so each cycle is the one GET).
        "requests_per_cycle": {
            "project": project_requests / (2 * args.cycles),
            "service": project_requests / (2 * args.cycles),
            "baseline": baseline_requests / args.cycles,
        },
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("cycle", "steady"))
    parser.add_argument("--impl", choices=("project", "baseline", "copy"), default="project")
    parser.add_argument("--db", required=True)
    parser.add_argument("--emulator", required=True, help="base URL, e.g. http://127.0.0.1:8100")
    parser.add_argument("--cycles", type=int, default=50)
    args = parser.parse_args()
    out = cycle(args) if args.mode == "cycle" else steady(args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
