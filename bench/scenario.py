"""One measured scenario in a fresh process, so that its peak RSS is its own; prints one JSON line.

    scenario.py cycle   --impl project|baseline|copy|copy-schema --db URL --emulator URL [--again]
    scenario.py steady  --db URL --emulator URL [--cycles 50]
    scenario.py account --db URL --emulator URL --resources LISTS [--concurrency 4] [--cycles 2]
    scenario.py once    --emulator URL          (settings from the SYNC_* environment)
    scenario.py replica --emulator URL          (`comm100-sync run`, settings from SYNC_*)
    scenario.py acquire --db URL --count N [--ready DIR]

`cycle`: one sync cycle of the platform list (token, fetch, diff, write), timed in-process:
imports and settings are done before the clock starts (the cold `once` runs in run.py include
them); with `--again` the project then runs a second cycle in the same process, timed apart.
`copy-schema` is an experiment, not the project: the project's own parsing, then COPY of every
row and audit row into the project's own tables (PostgreSQL only).
`steady`: many cycles on one client and engine (token reused), alternating the project's
run_once, the project's `run` loop tick (scheduler.Service.tick, with the list made due again
before each, untimed) and the baseline.
`account`: `--cycles` cycles of run_account over LISTS in one process, as `run` does them (one
client, token, Upkeep and request pool): the first compares in full, the next ones may take the
unchanged-answer shortcut. `once`: `comm100-sync once` itself (sync.cli.main) in this process.
Both report, per cycle, the emulator's request count and the statements by verb and table.
`account --rate CALLS/SECONDS` runs under that shared rate budget (default 0: none).
`replica`: `comm100-sync run` (sync.cli.main) in this process until SIGTERM, then what its rate
budget did. `acquire`: N slots of a budget too large to pace, one after another, after waiting
at the barrier in DIR (so that several processes contend from the same moment).

BudgetProbe wraps SharedBudget.reserve in `account`, `replica` and `acquire`: attempts, slots
taken, the time inside each, and the statements, commits and pool checkouts (each a pre-ping)
that reserve() sends, counted in its own thread only.

Counts SQL statements with SQLAlchemy's before_cursor_execute (an executemany is one), the
written tables from each INSERT/UPDATE/DELETE's text, rows from the cursor's rowcount, and the
time between before_ and after_cursor_execute.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import threading
import time
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from sqlalchemy import event

CREDENTIALS = {
    "client_id": "demo-client",
    "email": "demo@example.com",
    "password": "demo-password",
}


# The table an INSERT, UPDATE or DELETE writes (names may be quoted).
WRITE_STATEMENT = re.compile(
    r"\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+[`\"]?(\w+)", re.IGNORECASE
)
# The write fence (sync.store.snapshot.take_fence): INSERT … ON CONFLICT DO NOTHING (or
# MariaDB's no-op ON DUPLICATE KEY UPDATE) into sync_state; it writes a row only the first time.
FENCE_TABLE = "sync_state"


class StatementCounter:
    """Statements sent through an engine (executemany = 1) and pool checkouts (pre-pings).

    With engine=None it listens on every engine of the process (for `once`, whose engine is
    built inside the CLI). `writes` counts INSERT/UPDATE/DELETE statements by "VERB table",
    `rows` their cursor rowcounts, `seconds` the time spent in them; `fence` counts the
    sync_state INSERTs of the write fence (kept out of `writes`).
    """

    def __init__(self, engine: sa.Engine | None = None) -> None:
        self.statements = 0
        self.checkouts = 0
        self.by_verb: collections.Counter[str] = collections.Counter()
        self.writes: collections.Counter[str] = collections.Counter()
        self.rows: collections.Counter[str] = collections.Counter()
        self.seconds: collections.Counter[str] = collections.Counter()
        self.fence = 0
        self.fence_rows = 0
        self._started: dict[int, tuple[float, str | None]] = {}
        target: Any = engine if engine is not None else sa.engine.Engine
        event.listen(target, "before_cursor_execute", self._on_execute)
        event.listen(target, "after_cursor_execute", self._after_execute)
        if engine is not None:
            event.listen(engine.pool, "checkout", self._on_checkout)

    def _on_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements += 1
        words = statement.split(None, 1)
        self.by_verb[words[0].upper() if words else "?"] += 1
        write = WRITE_STATEMENT.match(statement)
        label = None
        if write is not None:
            verb, table = write.group(1).split()[0].upper(), write.group(2).lower()
            label = f"{verb} {table}"
        self._started[id(cursor)] = (time.perf_counter(), label)

    def _after_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started, label = self._started.pop(id(cursor), (time.perf_counter(), None))
        if label is None:
            return
        rowcount = getattr(cursor, "rowcount", -1)
        rows = rowcount if isinstance(rowcount, int) and rowcount > 0 else 0
        if label == f"INSERT {FENCE_TABLE}":
            self.fence += 1
            self.fence_rows += rows
            return
        self.writes[label] += 1
        self.rows[label] += rows
        self.seconds[label] += time.perf_counter() - started

    def _on_checkout(self, *args: Any) -> None:
        self.checkouts += 1

    def snapshot(self) -> tuple[int, int]:
        return self.statements, self.checkouts

    def tally(self) -> dict[str, Any]:
        """What was counted so far, as JSON."""
        return {
            "statements": self.statements,
            "statements_by_verb": dict(self.by_verb),
            "writes": dict(self.writes),
            "rows_written": dict(self.rows),
            "write_seconds": dict(self.seconds),
            "fence_statements": self.fence,
            "fence_rows": self.fence_rows,
        }

    def reset(self) -> None:
        self.statements = self.fence = self.fence_rows = 0
        for counter in (self.by_verb, self.writes, self.rows, self.seconds):
            counter.clear()


class BudgetProbe:
    """What SharedBudget.reserve costs in this process: every call to it (an attempt), the
    attempts that took a slot, the seconds inside each, and the statements (cursor events),
    commits and pool checkouts (each one a pre-ping) it sends. Counts only inside reserve(), in
    the thread that called it, so the cycle's own statements stay out."""

    def __init__(self) -> None:
        from sync.store.budget import SharedBudget

        self._local = threading.local()
        self._lock = threading.Lock()
        self.reset()
        original = SharedBudget.reserve
        probe = self

        def reserve(budget: Any) -> float:
            probe._local.active = True
            started = time.perf_counter()
            try:
                wait = float(original(budget))
            finally:
                elapsed = time.perf_counter() - started
                probe._local.active = False
            with probe._lock:
                probe.durations.append(elapsed)
                probe.granted += wait == 0.0
                if wait > 0:
                    probe.waited_seconds += wait
            return wait

        SharedBudget.reserve = reserve  # type: ignore[method-assign]
        event.listen(sa.engine.Engine, "before_cursor_execute", self._count("statements"))
        event.listen(sa.engine.Engine, "commit", self._count("commits"))
        event.listen(sa.pool.Pool, "checkout", self._count("checkouts"))

    def _count(self, name: str) -> Any:
        def on_event(*_args: Any) -> None:
            if getattr(self._local, "active", False):
                with self._lock:
                    self.counts[name] += 1

        return on_event

    def reset(self) -> None:
        self.durations: list[float] = []
        self.granted = 0
        self.waited_seconds = 0.0
        self.counts: collections.Counter[str] = collections.Counter()

    def tally(self) -> dict[str, Any]:
        with self._lock:
            return {
                "attempts": len(self.durations),
                "granted": self.granted,
                "seconds": sum(self.durations),
                "durations": list(self.durations),
                "told_to_wait_seconds": self.waited_seconds,
                "statements": self.counts["statements"],
                "commits": self.counts["commits"],
                "checkouts": self.counts["checkouts"],
            }


def peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM; ru_maxrss would include the parent's)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def project_settings(
    args: argparse.Namespace,
    resources: str = "platforms",
    http_concurrency: int = 4,
    rate_limit: str = "0",
) -> Any:
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
        # `cycle` and `steady` are about the platform list (the baseline's one GET);
        # Service.tick would otherwise sync the default four lists.
        resources=resources,
        http_concurrency=http_concurrency,
        # Unpaced unless asked: the budget's cost is measured apart (bench/budget.py).
        rate_limit=rate_limit,
    )


def configure_project_logging() -> None:
    # As the CLI does: one summary line per cycle on stderr (run.py sends it to a file).
    from sync import logs
    from sync.redaction import Secrets

    logs.configure(fmt="text", level="INFO", secrets=Secrets([CREDENTIALS["password"]]))


def cycle(args: argparse.Namespace) -> dict[str, Any]:
    rss_before = peak_rss_mb()
    if args.impl == "project":
        from sync.job import Upkeep, run_once
        from sync.wiring import build_client, build_engine, cycle_options

        settings = project_settings(args)
        configure_project_logging()
        engine = build_engine(settings)
        client = build_client(settings, engine)
        options = cycle_options(settings)
        counter = StatementCounter(engine)
        upkeep = Upkeep()
        rss_before = peak_rss_mb()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = run_once(engine, client, options, upkeep=upkeep)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if result.status != "success":
            raise SystemExit(f"project cycle {result.status}: {result.error}")
        counts: dict[str, int] = dict(result.counts)
        copies = 0
    elif args.impl == "copy-schema":
        engine = sa.create_engine(args.db)
        counter = StatementCounter(engine)
        session = requests.Session()
        rss_before = peak_rss_mb()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        counts, copy_seconds = copy_into_project_schema(engine, session, args.emulator)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        copies = 2
        counts["copy_seconds"] = copy_seconds
    else:
        import baseline

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
    out = {
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        # COPY goes around SQLAlchemy's events: each COPY is one more statement.
        "statements": counter.statements + copies,
        "statements_by_verb": dict(counter.by_verb, **({"COPY": copies} if copies else {})),
        "checkouts": counter.checkouts,
        "counts": counts,
        "rss_after_imports_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "writes": dict(counter.writes),
        "write_seconds": dict(counter.seconds),
    }
    if args.again and args.impl == "project":
        # The same cycle again in this process, as the next tick of `run` (token, Upkeep and
        # client kept): a new process compares in full, a later cycle need not.
        emulator = EmulatorRequests(args.emulator)
        requests_before = emulator.count()["total"]
        counter.reset()
        again0 = time.perf_counter()
        repeated = run_once(engine, client, options, upkeep=upkeep)
        again_wall = time.perf_counter() - again0
        if repeated.status != "success":
            raise SystemExit(f"project cycle {repeated.status}: {repeated.error}")
        out["again"] = {
            "wall_seconds": again_wall,
            "statements": counter.statements,
            "requests": emulator.count()["total"] - requests_before,
            "counts": dict(repeated.counts),
        }
    engine.dispose()
    return out


def copy_into_project_schema(
    engine: sa.Engine, session: requests.Session, emulator: str
) -> tuple[dict[str, Any], float]:
    """What a first cycle of the platform list would cost if the store wrote it with COPY: the
    token, the GET, the project's own parsing (sync.parsing.parse_list: validation, canonical
    JSON, hashes), then one transaction that opens a run row, COPYs every row into `platforms`
    and every audit row into `platform_audit` (the project's tables, with their indexes and
    foreign key) and closes the run. No lock, fence, read or diff: an empty table has nothing
    to compare. Returns the counts and the seconds spent in the two COPYs."""
    from datetime import UTC, datetime

    import orjson
    from sync.parsing import parse_list
    from sync.resources import PLATFORMS
    from sync.schema import sync_runs

    import baseline

    os.environ.update(
        SYNC_CLIENT_ID=CREDENTIALS["client_id"],
        SYNC_EMAIL=CREDENTIALS["email"],
        SYNC_PASSWORD=CREDENTIALS["password"],
    )
    token = baseline.get_token(session, f"{emulator}/oauth/token")
    reply = session.get(
        f"{emulator}/v4/global/platforms",
        timeout=60,
        headers={"Authorization": f"Bearer {token}"},
    )
    reply.raise_for_status()
    records = parse_list(reply.content, PLATFORMS)
    partner, now = "10000", datetime.now(UTC)
    with engine.begin() as conn:
        started = conn.execute(
            sa.insert(sync_runs).values(
                resource="platforms", partner_id=partner, started_at=now, status="running"
            )
        )
        assert started.inserted_primary_key is not None
        run_id = int(started.inserted_primary_key[0])
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        copy0 = time.perf_counter()
        columns = ", ".join(
            ["partner_id", "id", *PLATFORMS.typed_columns, "raw", "raw_hash", "first_seen_at",
             "updated_at"]
        )  # fmt: skip
        with cursor.copy(f"COPY platforms ({columns}) FROM STDIN") as out:
            for r in records:
                out.write_row((partner, r.key, *r.typed, r.text, r.digest, now, now))
        columns = "run_id, partner_id, platform_id, action, new_values, changed_fields, changed_at"
        with cursor.copy(f"COPY platform_audit ({columns}) FROM STDIN") as out:
            for r in records:
                # changed_fields as the store writes an insert's (sync.store.snapshot).
                fields = orjson.dumps(r.fields).decode()
                out.write_row((run_id, partner, r.key, "insert", r.text, fields, now))
        copy_seconds = time.perf_counter() - copy0
        conn.execute(
            sa.update(sync_runs)
            .where(sync_runs.c.id == run_id)
            .values(status="success", finished_at=now, fetched=len(records),
                    inserted=len(records))
        )  # fmt: skip
    return {"inserted": len(records)}, copy_seconds


def steady(args: argparse.Namespace) -> dict[str, Any]:
    from sync.job import run_once
    from sync.scheduler import Service
    from sync.wiring import build_client, build_engine, cycle_options

    import baseline

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

    # A tick of `run` syncs what is due: make the list due again before each one (untimed, on
    # the baseline's engine), so that every tick looks it up, claims it and syncs it once.
    ticked: list[Any] = []
    run_list = service.run

    def recorded_run(account: Any, resource: Any) -> Any:
        ticked.append(run_list(account, resource))
        return ticked[-1]

    service.run = recorded_run  # type: ignore[method-assign]

    def make_due() -> None:
        with b_engine.begin() as conn:
            conn.exec_driver_sql("UPDATE sync_state SET next_due_at = NULL")

    def loop_tick() -> None:
        before = len(ticked)
        service.tick()
        if len(ticked) != before + 1 or ticked[-1].status != "success":
            raise SystemExit(f"a `run` tick did not sync the list once: {ticked[before:]}")

    def plain() -> None:
        baseline.sync(b_engine, baseline.fetch(b_session, api, b_token))

    impls = {
        "project": (project, engine),
        "service": (loop_tick, service.engine),
        "baseline": (plain, b_engine),
    }
    before = {"service": make_due}
    counters = {name: StatementCounter(eng) for name, (_fn, eng) in impls.items()}
    # Warm-up: the first cycles fetch the token, connect, and fill the statement cache.
    for _ in range(3):
        for name, (fn, _eng) in impls.items():
            before.get(name, lambda: None)()
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
            before.get(name, lambda: None)()
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
        # run_once and Service.tick send the same User-Agent: split their total evenly
        # (both reuse one token, so each cycle is the one GET).
        "requests_per_cycle": {
            "project": project_requests / (2 * args.cycles),
            "service": project_requests / (2 * args.cycles),
            "baseline": baseline_requests / args.cycles,
        },
        "peak_rss_mb": peak_rss_mb(),
    }


class EmulatorRequests:
    """The emulator's request log, through its control API: cleared before a cycle, counted
    after it (the token POSTs and the list GETs)."""

    def __init__(self, emulator: str) -> None:
        self.url = f"{emulator}/_emulator/requests"
        self.session = requests.Session()

    def clear(self) -> None:
        self.session.delete(self.url, timeout=30).raise_for_status()

    def count(self) -> dict[str, int]:
        records = self.session.get(self.url, timeout=60).json()
        token = sum(1 for r in records if r["method"] == "POST" and r["path"].endswith("/token"))
        gets = sum(1 for r in records if r["method"] == "GET")
        return {"token": token, "get": gets, "total": len(records)}


def account(args: argparse.Namespace) -> dict[str, Any]:
    """`--cycles` account cycles in this process, as `run` would tick them."""
    from concurrent.futures import ThreadPoolExecutor

    from sync.job import Upkeep, run_account
    from sync.wiring import build_client, build_engine, cycle_options

    settings = project_settings(args, args.resources, args.concurrency, args.rate)
    probe = BudgetProbe()
    configure_project_logging()
    engine = build_engine(settings)
    client = build_client(settings, engine)
    options = cycle_options(settings)
    upkeep = Upkeep()
    pool = ThreadPoolExecutor(settings.http_concurrency, thread_name_prefix="fetch")
    counter = StatementCounter(engine)
    emulator = EmulatorRequests(args.emulator)
    cycles = []
    for _ in range(args.cycles):
        emulator.clear()
        counter.reset()
        probe.reset()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        results = run_account(
            engine, client, options, settings.resource_list, upkeep=upkeep, pool=pool
        )
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        failed = [f"{r.resource}: {r.status} {r.error}" for r in results if r.status != "success"]
        if failed:
            raise SystemExit("account cycle failed: " + "; ".join(failed))
        cycles.append(
            {
                "wall_seconds": wall,
                "cpu_seconds": cpu,
                "requests": emulator.count(),
                "counts": {r.resource: r.counts for r in results},
                "peak_rss_mb": peak_rss_mb(),
                "budget": {k: v for k, v in probe.tally().items() if k != "durations"},
                **counter.tally(),
            }
        )
    pool.shutdown()
    engine.dispose()
    return {"cycles": cycles, "concurrency": settings.http_concurrency}


def once(args: argparse.Namespace) -> dict[str, Any]:
    """`comm100-sync once` in this process (settings from SYNC_*), its statements counted."""
    from sync.cli import main as cli_main

    counter = StatementCounter()  # the CLI builds its own engine: listen on every engine
    emulator = EmulatorRequests(args.emulator)
    emulator.clear()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    code = cli_main(["once"])
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if code != 0:
        raise SystemExit(f"once exited {code}")
    return {
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "requests": emulator.count(),
        "peak_rss_mb": peak_rss_mb(),
        **counter.tally(),
    }


def replica(args: argparse.Namespace) -> dict[str, Any]:
    """`comm100-sync run` in this process until SIGTERM; then its budget's tally."""
    from sync.cli import main as cli_main

    probe = BudgetProbe()
    code = cli_main(["run"])
    tally = probe.tally()
    durations = sorted(tally.pop("durations"))
    return {"exit_code": code, "budget": tally, "attempt_seconds": quantiles(durations)}


def acquire(args: argparse.Namespace) -> dict[str, Any]:
    """`--count` slots of a budget of `--calls` per `--seconds`, which must never pace, one
    after another; the clock starts at the barrier (DIR/go) when `--ready DIR` is given."""
    from sync.store import create_engine
    from sync.store.budget import SharedBudget

    engine = create_engine(args.db)
    budget = SharedBudget(engine, args.calls, args.seconds)
    probe = BudgetProbe()
    budget.reserve()  # connects, and creates the budget's row if it is not there yet
    probe.reset()
    if args.ready:
        folder = Path(args.ready)
        (folder / f"{os.getpid()}.ready").touch()
        while not (folder / "go").exists():
            time.sleep(0.001)
    started = time.time()
    for _ in range(args.count):
        wait = budget.reserve()
        if wait > 0:
            raise SystemExit(f"the budget paced ({wait:.3f}s): raise --calls")
    finished = time.time()
    engine.dispose()
    tally = probe.tally()
    return {"started": started, "finished": finished, **tally}


def quantiles(durations: list[float]) -> dict[str, float]:
    """Median, 95th percentile and maximum of sorted `durations` (0 when empty)."""
    if not durations:
        return {"median": 0.0, "p95": 0.0, "max": 0.0}
    return {
        "median": durations[len(durations) // 2],
        "p95": durations[min(len(durations) - 1, int(0.95 * len(durations)))],
        "max": durations[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "mode", choices=("cycle", "steady", "account", "once", "replica", "acquire")
    )
    parser.add_argument(
        "--impl", choices=("project", "baseline", "copy", "copy-schema"), default="project"
    )
    parser.add_argument("--db")
    parser.add_argument("--emulator", help="base URL, e.g. http://127.0.0.1:8100")
    parser.add_argument("--cycles", type=int)
    parser.add_argument("--resources", default="platforms", help="SYNC_RESOURCES (account)")
    parser.add_argument("--concurrency", type=int, default=4, help="SYNC_HTTP_CONCURRENCY")
    parser.add_argument("--again", action="store_true", help="cycle: then a second one, timed")
    parser.add_argument("--rate", default="0", help="account: SYNC_RATE_LIMIT (default 0)")
    parser.add_argument("--count", type=int, default=500, help="acquire: slots to take")
    parser.add_argument("--calls", type=int, default=10**9, help="acquire: the budget's CALLS")
    parser.add_argument("--seconds", type=float, default=300.0, help="acquire: its SECONDS")
    parser.add_argument("--ready", help="acquire: barrier folder (start when DIR/go exists)")
    args = parser.parse_args()
    if args.mode not in ("once", "replica") and not args.db:
        parser.error("--db is required")
    if args.mode not in ("acquire",) and not args.emulator:
        parser.error("--emulator is required")
    modes = {"cycle": cycle, "steady": steady, "account": account, "once": once,
             "replica": replica, "acquire": acquire}  # fmt: skip
    args.cycles = args.cycles or (2 if args.mode == "account" else 50)
    out = modes[args.mode](args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
