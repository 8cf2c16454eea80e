"""The shared rate budget (issue 12): what replicas get out of one budget behind one address,
and what the budget costs in the database.

    replicas  1, 3 and 5 `comm100-sync run` processes (PostgreSQL; 3 on MariaDB and SQLite)
              against an emulator that allows API_CALLS per WINDOW_SECONDS per address (the
              API allows 300 per 300 s), sharing SYNC_RATE_LIMIT=BUDGET_CALLS/WINDOW (90 % of
              it, as the default 270/300 is), with far more work waiting than that allows:
              calls per window, utilisation, the busiest sliding window, 429s, token
              requests, reserve() attempts, how long a per-site list's cycle takes
    acquire   the database's cost of one slot (SharedBudget.reserve): time and statements, one
              process alone and ACQUIRE_CONTENDERS contending, on every database
    share     what the budget costs a cycle when it never paces: the per-site lists,
              SYNC_RATE_LIMIT=0 against UNPACED_RATE, alternating (SHARE_VARIANTS)

bench/run.py runs it as the `budget` section; bench_budget returns the raw rows for
results.json, render_budget writes the report's section and targets() its rows of the targets
table. Each replica run gets its own emulator process, so no call of an earlier run is still in
the emulator's window.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from common import (
    BACKENDS,
    BENCH,
    PYTHON,
    Databases,
    EmulatorProcess,
    checked,
    child_env,
    fmt_s,
    log,
    med,
    migrate_project,
    run_measured,
    sync_env,
)
from emulator_server import partner_login
from windows import busiest_window, window_counts

SCENARIO = str(BENCH / "scenario.py")
# The emulator's limit per address, and the replicas' shared budget: 90 % of it, as the default
# SYNC_RATE_LIMIT of 270/300 is of the API's 300 calls per 300 s, in a 10-second window.
API_CALLS, BUDGET_CALLS, WINDOW_SECONDS = 60, 54, 10.0
# Windows per run; the first (processes starting, logging in) is left out of the statistics.
WINDOWS, QUICK_WINDOWS = 5, 3
REPLICA_PLAN = (("postgresql", 1), ("postgresql", 3), ("postgresql", 5), ("mariadb", 3),
                ("sqlite", 3))  # fmt: skip
QUICK_REPLICA_PLAN = (("postgresql", 1), ("postgresql", 3))
# The work waiting: two accounts, each with REPLICA_SITES sites (about 95 % of them live) and
# the per-site lists, due every REPLICA_INTERVAL_SECONDS: about 290 calls a round, six times
# what a window allows, and ten lists for up to five replicas to claim.
REPLICA_ACCOUNTS = 2
REPLICA_SITES, REPLICA_PER_SITE = 40, 2
REPLICA_RESOURCES = "sites,agents,departments,roles,site_products"
REPLICA_INTERVAL_SECONDS = 2
# Utilisation every window after the first must reach (of BUDGET_CALLS), as the e2e test asks.
MIN_UTILISATION = 0.8
# acquire: slots taken in all (split between the processes), on a table that already holds a
# full default window (270 rows), with a budget too large to pace.
ACQUIRE_TOTAL, ACQUIRE_PREFILL, ACQUIRE_CONTENDERS, ACQUIRE_REPS = 600, 270, 3, 3
ACQUIRE_WINDOW_SECONDS = 300.0
# share: a budget that never paces; its 1-second window holds about as many rows as the
# default one does (a few hundred) at the request rate of a cycle without latency. Without
# latency (the budget's worst case, and far above the noise: 2 runs) on every database; with the
# fan-out's 50 ms per request, which hides most of it, on PostgreSQL (3 runs).
SHARE_VARIANTS = (
    {"sites": 100, "latency": 0.0, "backends": BACKENDS, "reps": 2},
    {"sites": 50, "latency": 0.05, "backends": ("postgresql",), "reps": 3},
)
SHARE_PER_SITE = 10
UNPACED_RATE = "1000000/1"
PER_SITE_RESOURCES = "sites,agents,departments,roles,site_products"
BUDGET_NAME = "partner-api"

Rows = list[dict[str, Any]]
Add = Callable[[str], None]


# --------------------------------------------------------------------------- replicas


def budget_window(calls: int, seconds: float) -> float:
    """How long SharedBudget counts a call for a budget of `calls` per `seconds`."""
    from sync.store.budget import SharedBudget

    return float(SharedBudget(None, calls, seconds).window)  # type: ignore[arg-type]


def live_sites() -> int:
    """The sites of each account whose per-site lists are fetched (Open and Suspended)."""
    from sync.emulator.data import populated_document

    sites = populated_document(REPLICA_SITES, REPLICA_PER_SITE)["sites"]
    assert isinstance(sites, list)
    return sum(1 for site in sites if site.get("status") != "Closed")


def accounts_env() -> dict[str, str]:
    """SYNC_ACCOUNTS of REPLICA_ACCOUNTS partners: the emulator's first and those it added."""
    logins = [{"partner_id": "10000", "client_id": "demo-client", "email": "demo@example.com",
               "password": "demo-password"}]  # fmt: skip
    logins += [partner_login(i) for i in range(2, REPLICA_ACCOUNTS + 1)]
    env = {"SYNC_ACCOUNTS": ",".join(f"p{i}" for i in range(1, len(logins) + 1))}
    for i, login in enumerate(logins, 1):
        for key, value in login.items():
            env[f"SYNC_P{i}__{key.upper()}"] = value
    return env


class Children:
    """Processes started together, each with its output in a temporary file; any still
    running when the block ends is killed."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.started: list[tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes]]] = []

    def __enter__(self) -> Children:
        self._stack.__enter__()
        self._stack.callback(self._kill)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(None, None, None)

    def start(self, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
        # Closed by the ExitStack when the block ends.
        out = self._stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
        err = self._stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
        self.started.append((subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err),
                             out, err))  # fmt: skip

    def signal(self, signum: int) -> None:
        for proc, _out, _err in self.started:
            proc.send_signal(signum)

    def any_exited(self) -> bool:
        return any(proc.poll() is not None for proc, _out, _err in self.started)

    def results(self, what: str, timeout: float) -> list[dict[str, Any]]:
        """Each child's last stdout line as JSON, once it has exited 0."""
        out = []
        for proc, stdout, stderr in self.started:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stdout.seek(0)
            stderr.seek(0)
            lines = stdout.read().decode(errors="replace").strip().splitlines()
            if proc.returncode != 0 or not lines:
                tail = stderr.read().decode(errors="replace")[-3000:]
                raise RuntimeError(f"{what} exited {proc.returncode}:\n{tail}")
            out.append(json.loads(lines[-1]))
        return out

    def _kill(self) -> None:
        for proc, _out, _err in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run_replicas(
    dbs: Databases, cwd: Path, backend: str, count: int, windows: int
) -> dict[str, Any]:
    """`count` replicas of `comm100-sync run` for `windows` windows from the first call."""
    emu = EmulatorProcess(
        "--sites", str(REPLICA_SITES), "--per-site", str(REPLICA_PER_SITE),
        "--partners", str(REPLICA_ACCOUNTS), "--rate-limit", f"{API_CALLS}/{WINDOW_SECONDS:g}",
    )  # fmt: skip
    url = dbs.create(backend)
    try:
        migrate_project(url)
        env = sync_env(
            emu,
            url,
            cwd,
            resources=REPLICA_RESOURCES,
            SYNC_RATE_LIMIT=f"{BUDGET_CALLS}/{WINDOW_SECONDS:g}",
            SYNC_INTERVAL_SECONDS=str(REPLICA_INTERVAL_SECONDS),
            SYNC_STOP_TIMEOUT_SECONDS="2",
            SYNC_AUTO_MIGRATE="false",
            **accounts_env(),
        )
        with Children() as children:
            for _ in range(count):
                children.start([PYTHON, SCENARIO, "replica", "--emulator", emu.url], env, cwd)
            deadline = time.monotonic() + 60
            while not (records := emu.requests()):
                if time.monotonic() > deadline or children.any_exited():
                    raise RuntimeError("no replica reached the emulator")
                time.sleep(0.1)
            first = min(r["timestamp"] for r in records)
            # The measured span is fixed in advance: nothing to wait for but the clock.
            time.sleep(max(0.0, first + windows * WINDOW_SECONDS + 0.2 - time.time()))
            children.signal(signal.SIGTERM)
            replicas = children.results("a replica", timeout=30)
        records = emu.requests()
        stats = emu.stats()
        runs, cycle_seconds = run_statuses(url)
    finally:
        emu.stop()
        dbs.drop(url)
    if any(r["exit_code"] != 0 for r in replicas):
        raise RuntimeError(f"replicas exited {[r['exit_code'] for r in replicas]}")
    times = sorted(r["timestamp"] for r in records)
    attempts = sum(r["budget"]["attempts"] for r in replicas)
    return {
        "backend": backend,
        "replicas": count,
        "windows": window_counts(times, first, WINDOW_SECONDS, windows),
        "busiest_window": busiest_window(times, WINDOW_SECONDS),
        "calls": len(times),
        "rate_limited": stats["rate_limited"],
        "token_requests": sum(
            1 for r in records if r["method"] == "POST" and r["path"].endswith("/token")
        ),
        "granted_by_replica": [r["budget"]["granted"] for r in replicas],
        "attempts": attempts,
        "attempt_seconds": sum(r["budget"]["seconds"] for r in replicas),
        "attempt_statements": sum(r["budget"]["statements"] for r in replicas),
        "attempt_p95_seconds": max(r["attempt_seconds"]["p95"] for r in replicas),
        "runs": runs,
        "per_site_cycle_seconds": cycle_seconds,
    }


def run_statuses(url: str) -> tuple[dict[str, int], list[float]]:
    """How many runs of each status the replicas recorded (skipped: another had the list),
    and how long each successful cycle of a per-site list that fetched something took."""
    from sync.resources import REGISTRY
    from sync.schema import sync_runs
    from sync.store import create_engine

    per_site = [name for name, resource in REGISTRY.items() if resource.site_scoped]
    runs = sync_runs.c
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            statuses = dict(Counter(conn.execute(sa.select(runs.status)).scalars()))
            spans = conn.execute(
                sa.select(runs.started_at, runs.finished_at).where(
                    runs.resource.in_(per_site), runs.status == "success", runs.fetched > 0
                )
            ).all()
    finally:
        engine.dispose()
    return statuses, sorted((end - start).total_seconds() for start, end in spans)


# --------------------------------------------------------------------------- acquire


def prefill(url: str, rows: int, window_seconds: float) -> None:
    """`rows` calls spread over the last window, as a budget in full use holds them."""
    from sync.schema import sync_rate_calls
    from sync.store import create_engine
    from sync.store.clock import db_now

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            now = db_now(conn)
            step = window_seconds * 0.9 / rows
            conn.execute(
                sa.insert(sync_rate_calls),
                [{"budget": BUDGET_NAME, "at": now - timedelta(seconds=i * step)}
                 for i in range(rows)],
            )  # fmt: skip
    finally:
        engine.dispose()


def run_acquire(dbs: Databases, cwd: Path, backend: str, processes: int) -> dict[str, Any]:
    """ACQUIRE_TOTAL slots between `processes` processes that start together."""
    url = dbs.create(backend)
    ready = Path(tempfile.mkdtemp(prefix="c100bench-ready-"))
    try:
        migrate_project(url)
        prefill(url, ACQUIRE_PREFILL, ACQUIRE_WINDOW_SECONDS)
        cmd = [PYTHON, SCENARIO, "acquire", "--db", url, "--count",
               str(ACQUIRE_TOTAL // processes), "--seconds", str(ACQUIRE_WINDOW_SECONDS),
               "--ready", str(ready)]  # fmt: skip
        with Children() as children:
            for _ in range(processes):
                children.start(cmd, child_env(), cwd)
            deadline = time.monotonic() + 60
            while len(list(ready.glob("*.ready"))) < processes:
                if time.monotonic() > deadline or children.any_exited():
                    raise RuntimeError("the acquiring processes did not all get ready")
                time.sleep(0.01)
            (ready / "go").touch()
            results = children.results("acquire", timeout=300)
    finally:
        shutil.rmtree(ready, ignore_errors=True)
        dbs.drop(url)
    durations = sorted(d for r in results for d in r["durations"])
    taken = sum(r["granted"] for r in results)
    span = max(r["finished"] for r in results) - min(r["started"] for r in results)
    return {
        "backend": backend,
        "processes": processes,
        "acquires": taken,
        "median": durations[len(durations) // 2],
        "p95": durations[int(0.95 * (len(durations) - 1))],
        "max": durations[-1],
        "mean": statistics.fmean(durations),
        "per_second": taken / span,
        "statements": sum(r["statements"] for r in results) / taken,
        "commits": sum(r["commits"] for r in results) / taken,
        "checkouts": sum(r["checkouts"] for r in results) / taken,
    }


# --------------------------------------------------------------------------- share


def run_share(dbs: Databases, cwd: Path, variant: dict[str, Any], reps: int) -> Rows:
    """Two account cycles (first, then no change as `run` ticks) of the per-site lists in a
    fresh process and database, SYNC_RATE_LIMIT=0 and UNPACED_RATE alternating, on the
    emulator and databases of `variant` (one of SHARE_VARIANTS)."""
    emu = EmulatorProcess(
        "--sites", str(variant["sites"]), "--per-site", str(SHARE_PER_SITE),
        "--latency", str(variant["latency"]),
    )  # fmt: skip
    rows = []
    try:
        for backend in variant["backends"]:
            if not dbs.usable(backend):
                log(f"budget share: {backend} unavailable, skipped")
                continue
            for rep in range(reps):
                rates = ["0", UNPACED_RATE] if rep % 2 == 0 else [UNPACED_RATE, "0"]
                for rate in rates:
                    latency = f"{variant['latency'] * 1000:g} ms"
                    log(f"budget share: {variant['sites']} sites, {latency}, {backend}, "
                        f"SYNC_RATE_LIMIT={rate} (run {rep + 1} of {reps})")  # fmt: skip
                    url = dbs.create(backend)
                    try:
                        migrate_project(url)
                        cmd = [PYTHON, SCENARIO, "account", "--db", url, "--emulator", emu.url,
                               "--cycles", "2", "--resources", PER_SITE_RESOURCES, "--rate",
                               rate]  # fmt: skip
                        run = checked(run_measured(cmd, child_env(), cwd, timeout=900), "share")
                    finally:
                        dbs.drop(url)
                    first, second = json.loads(run.stdout.strip().splitlines()[-1])["cycles"]
                    for name, cycle in (("first", first), ("second", second)):
                        rows.append(
                            {
                                "sites": variant["sites"],
                                "latency": variant["latency"],
                                "backend": backend,
                                "rate": rate,
                                "rep": rep,
                                "cycle": name,
                                "wall_seconds": cycle["wall_seconds"],
                                "requests": cycle["requests"]["total"],
                                "budget": cycle["budget"],
                            }
                        )
    finally:
        emu.stop()
    return rows


# --------------------------------------------------------------------------- the section


def bench_budget(dbs: Databases, cwd: Path, quick: bool) -> dict[str, Any]:
    windows = QUICK_WINDOWS if quick else WINDOWS
    replicas = []
    for backend, count in QUICK_REPLICA_PLAN if quick else REPLICA_PLAN:
        if not dbs.usable(backend):
            log(f"budget: {backend} unavailable, skipped")
            continue
        log(f"budget: {count} replica(s) on {backend}, {windows} windows of "
            f"{WINDOW_SECONDS:g} s")  # fmt: skip
        replicas.append(run_replicas(dbs, cwd, backend, count, windows))
    acquire = []
    reps = 1 if quick else ACQUIRE_REPS
    for backend in BACKENDS:
        if not dbs.usable(backend):
            continue
        for rep in range(reps):
            for processes in (1, ACQUIRE_CONTENDERS)[:: 1 if rep % 2 == 0 else -1]:
                log(f"budget: {ACQUIRE_TOTAL} slots on {backend}, {processes} process(es) "
                    f"(run {rep + 1} of {reps})")  # fmt: skip
                acquire.append({"rep": rep, **run_acquire(dbs, cwd, backend, processes)})
    share = []
    for variant in SHARE_VARIANTS:
        share += run_share(dbs, cwd, variant, 1 if quick else variant["reps"])
    return {"replicas": replicas, "acquire": acquire, "share": share}


def acquire_summary(rows: Rows) -> Rows:
    """Per database and number of processes, the median over the runs of each figure (the
    worst for the maximum)."""
    out = []
    for backend in BACKENDS:
        for processes in (1, ACQUIRE_CONTENDERS):
            runs = [r for r in rows if r["backend"] == backend and r["processes"] == processes]
            if not runs:
                continue
            keys = ("median", "p95", "per_second", "statements", "commits", "checkouts")
            out.append(
                {
                    "backend": backend,
                    "processes": processes,
                    "runs": len(runs),
                    **{key: med(r[key] for r in runs) for key in keys},
                    "max": max(r["max"] for r in runs),
                }
            )
    return out


def utilisation(counts: Sequence[int]) -> list[float]:
    """Calls per window after the first, as fractions of the budget."""
    return [c / BUDGET_CALLS for c in counts[1:]]


def share_summary(rows: Rows) -> list[dict[str, Any]]:
    """Per variant, database and cycle: median walls without and with the budget, and what
    reserve() took per call."""
    out = []
    for variant in SHARE_VARIANTS:
        for backend in BACKENDS:
            for name in ("first", "second"):
                cell = [r for r in rows if r["sites"] == variant["sites"]
                        and r["latency"] == variant["latency"] and r["backend"] == backend
                        and r["cycle"] == name]  # fmt: skip
                off = [r for r in cell if r["rate"] == "0"]
                on = [r for r in cell if r["rate"] != "0"]
                if not off or not on:
                    continue
                attempts = sum(r["budget"]["attempts"] for r in on)
                out.append(
                    {
                        "sites": variant["sites"],
                        "latency": variant["latency"],
                        "backend": backend,
                        "cycle": name,
                        "reps": len(on),
                        "requests": med(r["requests"] for r in on),
                        "off": med(r["wall_seconds"] for r in off),
                        "on": med(r["wall_seconds"] for r in on),
                        "reserve_per_call": sum(r["budget"]["seconds"] for r in on) / attempts,
                        "statements_per_call": sum(r["budget"]["statements"] for r in on)
                        / attempts,
                    }
                )
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def render_budget(data: dict[str, Any], add: Add) -> None:
    replicas, acquire, share = data.get("replicas"), data.get("acquire"), data.get("share")
    add(f"## Shared rate budget: replicas behind one address ({API_CALLS} calls per "
        f"{WINDOW_SECONDS:g} s)")  # fmt: skip
    add("")
    add(
        f"The emulator allows {API_CALLS} calls per {WINDOW_SECONDS:g} s per client address "
        f"(the API allows 300 per 300 s) and answers 429 beyond; every replica runs "
        f"`comm100-sync run` with SYNC_RATE_LIMIT={BUDGET_CALLS}/{WINDOW_SECONDS:g} (90 % of "
        f"it, as the default 270/300 is of the API's limit), {REPLICA_ACCOUNTS} accounts "
        f"(SYNC_ACCOUNTS) of {REPLICA_SITES} sites each, SYNC_RESOURCES={REPLICA_RESOURCES} "
        f"and every list due every {REPLICA_INTERVAL_SECONDS} s: "
        f"{REPLICA_ACCOUNTS * (1 + 4 * live_sites())} calls a round, far more than a window "
        f"allows. Windows are counted at the emulator (every API "
        f"request, token requests included) from the first call; the first window (start, "
        f"logins) is left out of the per-window figures. Utilisation = calls per window / "
        f"{BUDGET_CALLS}. Busiest = the most calls in any {WINDOW_SECONDS:g}-second window, "
        f"wherever it starts, over the whole run (allowed: {BUDGET_CALLS}). Attempts = calls "
        f"of SharedBudget.reserve (a slot taken, or told how long to wait), with their time and "
        f"statements, counted inside each replica."
    )
    add("")
    if replicas:
        add(
            "| database | replicas | calls per window after the first (min / mean / max) | "
            "utilisation (min / mean) | busiest window | 429s | token requests | slots per "
            "replica | attempts per call | time per attempt (mean; worst p95) | a per-site "
            "list's cycle (median; n) | runs |"
        )
        add("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in replicas:
            after = r["windows"][1:]
            u = utilisation(r["windows"])
            runs = ", ".join(f"{k} {v}" for k, v in sorted(r["runs"].items()))
            cycles = r.get("per_site_cycle_seconds") or []
            cycle = f"{fmt_s(med(cycles))}; {len(cycles)}" if cycles else "none"
            add(
                f"| {r['backend']} | {r['replicas']} | {min(after)} / "
                f"{statistics.fmean(after):.1f} / {max(after)} (all: "
                f"{', '.join(map(str, r['windows']))}) | {min(u):.0%} / "
                f"{statistics.fmean(u):.0%} | {r['busiest_window']} | {r['rate_limited']} | "
                f"{r['token_requests']} | {', '.join(map(str, r['granted_by_replica']))} | "
                f"{r['attempts'] / r['calls']:.2f} | {ms(r['attempt_seconds'] / r['attempts'])}; "
                f"{ms(r['attempt_p95_seconds'])} | {cycle} | {runs} |"
            )
        add("")
        window = budget_window(BUDGET_CALLS, WINDOW_SECONDS)
        add(
            f"The budget counts each call for {window:g} s (its window and a send guard of 5 %, "
            f"at most 2 s), so on average at most {BUDGET_CALLS * WINDOW_SECONDS / window:.1f} "
            f"calls fall in {WINDOW_SECONDS:g} s ({WINDOW_SECONDS / window:.0%} of "
            f"{BUDGET_CALLS}); it paces them a tenth of the budget at a time, so a fixed window "
            f"holds more or fewer depending on where it starts. Runs: what the replicas "
            f"recorded in sync_runs (interrupted: cut short by the SIGTERM that ends the run); "
            f"a per-site list's cycle: the successful cycles of a per-site list that fetched "
            f"its {live_sites()} live sites, from sync_runs (replicas that sync lists side by "
            f"side share the budget, so each cycle takes longer)."
        )
        add("")
    if acquire:
        runs = acquire_summary(acquire)[0]["runs"]
        add(f"## Shared rate budget: the database's cost of one slot ({ACQUIRE_TOTAL} slots)")
        add("")
        add(
            f"Median of {runs} run(s) (max: the worst), alternating. "
            f"SharedBudget.reserve() with a budget too large to pace, on a table already "
            f"holding {ACQUIRE_PREFILL} calls in the window (a full default window), one slot "
            f"after another: {ACQUIRE_TOTAL} by one process, or "
            f"{ACQUIRE_TOTAL // ACQUIRE_CONTENDERS} by each of {ACQUIRE_CONTENDERS} processes "
            f"that start together and contend for the budget's row lock (SQLite: its write "
            f"lock). Statements = what SQLAlchemy "
            f"sends (before_cursor_execute: SELECT … FOR UPDATE of the budget row with the "
            f"database's now, the count in the window, the INSERT of the call, a DELETE of old "
            f"calls every 50th slot; on SQLite also BEGIN IMMEDIATE), then one COMMIT; each "
            f"slot checks a connection out of the pool, with a pre-ping."
        )
        add("")
        add(
            "| database | processes | time per slot: median | p95 | max | slots per second "
            "(all processes) | statements per slot | commits | pool checkouts |"
        )
        add("|---|---|---|---|---|---|---|---|---|")
        for a in acquire_summary(acquire):
            add(
                f"| {a['backend']} | {a['processes']} | {ms(a['median'])} | {ms(a['p95'])} | "
                f"{ms(a['max'])} | {a['per_second']:.0f} | {a['statements']:.2f} | "
                f"{a['commits']:.2f} | {a['checkouts']:.2f} |"
            )
        add("")
    summary = share_summary(share or [])
    if summary:
        add("## Shared rate budget: what it costs a cycle that it never paces")
        add("")
        add(
            f"Two account cycles in one process (as `run` ticks them: the first, then no "
            f"change), SYNC_RESOURCES={PER_SITE_RESOURCES}, {SHARE_PER_SITE} items per site "
            f"and list, concurrency 4, on a fresh database each time; SYNC_RATE_LIMIT=0 (no "
            f"budget) and {UNPACED_RATE} (a budget that never paces; its 1-second window holds "
            f"about as many calls as a full default window) alternating, the median of the "
            f"runs (in brackets). Without latency the cycle is all database and CPU, the "
            f"budget's worst case; with 50 ms per request, as the API might answer, the "
            f"requests' wait hides most of it. In reserve() = the seconds a request thread "
            f"spent in it per call (4 threads take slots at once, so they queue for the "
            f"budget's row lock)."
        )
        add("")
        add(
            "| sites, latency | database | cycle | requests | wall, no budget | wall, budget | "
            "difference (share of the cycle) | in reserve() per call | statements per call |"
        )
        add("|---|---|---|---|---|---|---|---|---|")
        for s in summary:
            diff = s["on"] - s["off"]
            add(
                f"| {s['sites']}, {s['latency'] * 1000:g} ms ({s['reps']}) | {s['backend']} | "
                f"{'first' if s['cycle'] == 'first' else 'no change'} | {s['requests']:.0f} | "
                f"{fmt_s(s['off'])} | {fmt_s(s['on'])} | {diff * 1000:+.0f} ms "
                f"({diff / s['on']:+.0%}) | {ms(s['reserve_per_call'])} | "
                f"{s['statements_per_call']:.2f} |"
            )
        add("")


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in (results.get("budget") or {}).get("replicas") or []:
        where = f"{r['replicas']} replica(s), {r['backend']}"
        u = utilisation(r["windows"])
        out += [
            {
                "target": f"budget, {where}: 429s received",
                "measured": str(r["rate_limited"]),
                "limit": "0",
                "ok": r["rate_limited"] == 0,
            },
            {
                "target": f"budget, {where}: most calls in any {WINDOW_SECONDS:g}-s window",
                "measured": str(r["busiest_window"]),
                "limit": f"≤ {BUDGET_CALLS}",
                "ok": r["busiest_window"] <= BUDGET_CALLS,
            },
            {
                "target": f"budget, {where}: utilisation of every window after the first",
                "measured": f"{min(u):.0%} (mean {statistics.fmean(u):.0%})",
                "limit": f"≥ {MIN_UTILISATION:.0%}",
                "ok": min(u) >= MIN_UTILISATION,
            },
        ]
    return out
