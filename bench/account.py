"""The whole-account benchmarks: what the "Speed and cost" targets of the whole-account issue ask.

    lists       cold `once` of the default four lists against baseline.py --lists
    fanout      200 sites x the 4 per-site lists, 50 ms per request: first and no-change
                cycles against the ideal (requests x latency / SYNC_HTTP_CONCURRENCY)
    statements  SQL statements per cycle at 3 and at 200 sites, per database
    copy        100,000 platforms, first cycle on PostgreSQL: the store's executemany against
                COPY, and what COPY would save the project in its own tables

bench/run.py runs them (`--only lists`, `--only fanout`, ...). Each bench_* returns raw rows for
results.json, each render_* writes its report section, and targets() the rows of the targets
table. The fan-out and statement sections start their own emulator (bench/emulator_server.py
--sites N --latency S), so the main one keeps its data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import baseline
from common import (
    BACKENDS,
    BENCH,
    PYTHON,
    ChildRun,
    Databases,
    EmulatorProcess,
    checked,
    child_env,
    cold_comparison,
    create_baseline_tables,
    fmt_ratio,
    fmt_s,
    log,
    med,
    migrate_project,
    platform_list,
    ratio,
    render_cold,
    run_measured,
    sync_env,
    verdict,
)

SCENARIO = str(BENCH / "scenario.py")
# `once` with SYNC_RESOURCES unset syncs these (sync.resources.DEFAULT_RESOURCES).
DEFAULT_LISTS = ("platforms", "sites", "products", "plans")
PER_SITE_RESOURCES = "sites,agents,departments,roles,site_products"
FANOUT_SITES = 200
FANOUT_PER_SITE = 10
FANOUT_LATENCY_SECONDS = 0.05
DEFAULT_CONCURRENCY = 4  # SYNC_HTTP_CONCURRENCY's default
SCALING_CONCURRENCIES = (1, 8)  # besides the default, on one database
STATEMENT_SITES = (3, 200)
# The whole-account issue's limits.
LISTS_COLD_MAX_RATIO = 1.3
FANOUT_MAX_RATIO_TO_IDEAL = 1.2
FANOUT_PEAK_RSS_MAX_MB = 150.0
NO_CHANGE_WRITABLE = frozenset({"sync_runs"})
# Per extra batch of rows a larger write may add these statements: IN-list read of old values,
# upsert, soft delete, audit insert (as in run.py's economy table).
STATEMENTS_PER_BATCH = 4
BATCH_ROWS = 1000
CYCLE_TITLES = {
    "first": "first cycle",
    "second": "no change, 2nd cycle of the same process",
    "once": "no change, a new `once`",
}

Rows = list[dict[str, Any]]
Add = Callable[[str], None]


def last_json(run: ChildRun) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return data


# --------------------------------------------------------------------------- measuring


def bench_lists(dbs: Databases, emu: EmulatorProcess, cwd: Path, reps: int) -> Rows:
    """Cold `comm100-sync once` (SYNC_RESOURCES unset) vs `baseline.py --lists`, emulator
    default data: 3 platforms, 3 sites, 3 products, 2 plans."""
    from sync.emulator.data import DEFAULT_PLATFORMS

    emu.set_platforms([dict(p) for p in DEFAULT_PLATFORMS])  # other sections replace them
    return cold_comparison(
        dbs,
        emu,
        cwd,
        reps,
        backends=BACKENDS,
        resources=None,
        baseline_args=["--lists"],
        baseline_tables=baseline.LIST_TABLE_NAMES,
        what="lists",
    )


def account_runs(
    dbs: Databases, emu: EmulatorProcess, cwd: Path, backend: str, concurrency: int
) -> dict[str, Any]:
    """On a fresh database: process A runs two account cycles (first, then no change with the
    unchanged-answer shortcut, as `run` ticks); process B is a new `once` (no change, compared
    in full, as every process's first cycle is). Both sync PER_SITE_RESOURCES."""
    url = dbs.create(backend)
    try:
        migrate_project(url)
        cmd = [SCENARIO, "account", "--db", url, "--emulator", emu.url, "--cycles", "2",
               "--resources", PER_SITE_RESOURCES, "--concurrency", str(concurrency)]  # fmt: skip
        a = checked(run_measured([PYTHON, *cmd], child_env(), cwd, timeout=1800), "account")
        first, second = last_json(a)["cycles"]
        env = sync_env(
            emu,
            url,
            cwd,
            resources=PER_SITE_RESOURCES,
            SYNC_HTTP_CONCURRENCY=str(concurrency),
        )
        once_cmd = [PYTHON, SCENARIO, "once", "--emulator", emu.url]
        b = checked(run_measured(once_cmd, env, cwd, timeout=1800), "once")
        once = last_json(b)
    finally:
        dbs.drop(url)
    once.update(process_wall_seconds=b.wall_seconds, process_peak_rss_mb=b.maxrss_mb)
    return {
        "backend": backend,
        "concurrency": concurrency,
        "first": first,
        "second": second,
        "once": once,
        "process_a": {"wall_seconds": a.wall_seconds, "peak_rss_mb": a.maxrss_mb},
    }


def concurrency_backend(dbs: Databases) -> str:
    """Where the concurrency series runs: PostgreSQL, or SQLite without a server."""
    return "postgresql" if dbs.usable("postgresql") else "sqlite"


def bench_fanout(dbs: Databases, cwd: Path, quick: bool) -> Rows:
    """FANOUT_SITES sites, 50 ms a request, rate limit off: every database at the default
    concurrency, and the concurrency series (1 and 8; only 8 with --quick) on one database."""
    plan = [(backend, DEFAULT_CONCURRENCY) for backend in BACKENDS if dbs.usable(backend)]
    concurrencies = SCALING_CONCURRENCIES[1:] if quick else SCALING_CONCURRENCIES
    plan += [(concurrency_backend(dbs), c) for c in concurrencies]
    emu = EmulatorProcess(
        "--sites", str(FANOUT_SITES), "--per-site", str(FANOUT_PER_SITE),
        "--latency", str(FANOUT_LATENCY_SECONDS),
    )  # fmt: skip
    rows = []
    try:
        for backend, concurrency in plan:
            log(f"fanout: {FANOUT_SITES} sites, {backend}, concurrency {concurrency}")
            rows.append(account_runs(dbs, emu, cwd, backend, concurrency))
    finally:
        emu.stop()
    return rows


def bench_statements(dbs: Databases, cwd: Path) -> Rows:
    """The per-site lists at 3 and at 200 sites on every database, no latency."""
    rows = []
    for sites in STATEMENT_SITES:
        emu = EmulatorProcess("--sites", str(sites), "--per-site", str(FANOUT_PER_SITE))
        try:
            for backend in BACKENDS:
                if not dbs.usable(backend):
                    log(f"statements: {backend} unavailable, skipped")
                    continue
                log(f"statements: {sites} sites, {backend}")
                run = account_runs(dbs, emu, cwd, backend, DEFAULT_CONCURRENCY)
                rows.append({"sites": sites, **run})
        finally:
            emu.stop()
    return rows


def bench_copy(dbs: Databases, emu: EmulatorProcess, cwd: Path, n: int, reps: int) -> Rows:
    """N platforms, first cycle on PostgreSQL, each in a fresh process and database: the
    project (executemany), the COPY baseline, and the project's parsing + COPY into its own
    tables (scenario.py --impl copy-schema), alternating."""
    if not dbs.usable("postgresql"):
        log("copy: postgresql unavailable, skipped")
        return []
    emu.set_platforms(platform_list(n))
    impls = ["project", "copy", "copy-schema"]
    rows = []
    for rep in range(reps):
        order = impls[rep % len(impls) :] + impls[: rep % len(impls)]
        for impl in order:
            log(f"copy: N={n:,} {impl} (run {rep + 1} of {reps})")
            url = dbs.create("postgresql")
            try:
                if impl == "copy":
                    create_baseline_tables(url)
                else:
                    migrate_project(url)
                cmd = [PYTHON, SCENARIO, "cycle", "--impl", impl, "--db", url, "--emulator",
                       emu.url]  # fmt: skip
                run = checked(run_measured(cmd, child_env(), cwd), f"copy {impl}")
            finally:
                dbs.drop(url)
            data = last_json(run)
            data.update(n=n, impl=impl, rep=rep, process_peak_rss_mb=run.maxrss_mb)
            rows.append(data)
    return rows


# --------------------------------------------------------------------------- deriving


def ideal_seconds(cycle: dict[str, Any], concurrency: int) -> float:
    return float(cycle["requests"]["total"]) * FANOUT_LATENCY_SECONDS / concurrency


def written_tables(cycle: dict[str, Any]) -> set[str]:
    """Tables with an INSERT/UPDATE/DELETE statement in the cycle (the fence left out)."""
    return {label.split(" ", 1)[1] for label in cycle["writes"]}


def writes_text(cycle: dict[str, Any]) -> str:
    """`UPDATE sync_runs 10 (5 rows)`, … for each written table; the fence apart."""
    parts = [
        f"{label} {count} ({rows_text(cycle['rows_written'].get(label, 0))})"
        for label, count in sorted(cycle["writes"].items(), key=lambda kv: kv[0].split()[::-1])
    ]
    return ", ".join(parts) or "none"


def fence_text(cycle: dict[str, Any]) -> str:
    return f"{cycle['fence_statements']} ({rows_text(cycle['fence_rows'])})"


def rows_text(rows: int) -> str:
    return f"{rows:,} row" + ("" if rows == 1 else "s")


def rows_changed(cycle: dict[str, Any]) -> dict[str, int]:
    """Rows written per list (inserted + updated + deleted + restored); {} for `once`."""
    keys = ("inserted", "updated", "deleted", "restored")
    return {name: sum(c.get(k, 0) for k in keys) for name, c in cycle.get("counts", {}).items()}


def peak_rss(run: dict[str, Any]) -> float:
    return float(max(run["process_a"]["peak_rss_mb"], run["once"]["process_peak_rss_mb"]))


# --------------------------------------------------------------------------- report


def render_lists(rows: Rows, add: Add) -> None:
    reps = len(rows[0]["project"]["wall"])
    add(f"## Cold `once` of the default lists: {', '.join(DEFAULT_LISTS)} (median of {reps})")
    add("")
    add(
        "`comm100-sync once` with SYNC_RESOURCES unset vs `python bench/baseline.py --lists` "
        "(token, the same four GETs one after another, then each list into a table of its own "
        "in a transaction of its own: read, diff decoded JSON, executemany insert/update and "
        "audit rows; requests + SQLAlchemy Core). The emulator's default data: 3 platforms, "
        "3 sites, 3 products, 2 plans. Interpreter start and imports included; schema at head "
        "in both cases. The project fetches the four lists concurrently (SYNC_HTTP_CONCURRENCY "
        "= 4) and writes each in its own transaction with its lock, run row and fence."
    )
    add("")
    render_cold(rows, add)


def render_fanout(rows: Rows, add: Add) -> None:
    add(
        f"## Fan-out: {FANOUT_SITES} sites × 4 per-site lists, "
        f"{FANOUT_LATENCY_SECONDS * 1000:.0f} ms per request"
    )
    add("")
    add(
        f"SYNC_RESOURCES={PER_SITE_RESOURCES}; the emulator populated with "
        f"`populate({FANOUT_SITES}, per_site={FANOUT_PER_SITE})` (its Closed sites are not "
        f"fetched), {FANOUT_LATENCY_SECONDS * 1000:.0f} ms added to every API answer, rate "
        "limit off. Per database and concurrency, on a fresh database: process A runs the "
        "first cycle and then a second one (no change; same client, token, request pool and "
        "memory, as `comm100-sync run` ticks, so the unchanged answers take the shortcut); "
        "process B is a new `comm100-sync once` (sync.cli.main; no change, but a new process "
        "compares in full). Requests = the emulator's count for the cycle (token POST + GETs); "
        "ideal = requests × latency / SYNC_HTTP_CONCURRENCY. Wall = the cycle timed in its "
        "process (B's wall from fork to exit in brackets). Peak RSS: A's after its first "
        "cycle (VmHWM), B's whole process. Writes = INSERT/UPDATE/DELETE statements per "
        "table (rows by the cursor's rowcount); the fence (INSERT INTO sync_state … ON "
        "CONFLICT DO NOTHING) is counted apart."
    )
    add("")
    add(
        "| database | concurrency | cycle | wall | requests | ideal | ratio to ideal | CPU | "
        "peak RSS | statements | writes | fence |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in rows:
        c = run["concurrency"]
        for key in ("first", "second", "once"):
            cycle = run[key]
            req = cycle["requests"]
            ideal = ideal_seconds(cycle, c)
            wall = fmt_s(cycle["wall_seconds"])
            if key == "once":
                wall += f" ({fmt_s(cycle['process_wall_seconds'])})"
                rss = cycle["process_peak_rss_mb"]
            else:
                rss = cycle["peak_rss_mb"]
            add(
                f"| {run['backend']} | {c} | {CYCLE_TITLES[key]} | {wall} | "
                f"{req['token']} + {req['get']} | {fmt_s(ideal)} | "
                f"{fmt_ratio(ratio(cycle['wall_seconds'], ideal))} | "
                f"{fmt_s(cycle['cpu_seconds'])} | {rss:.0f} MB | {cycle['statements']} | "
                f"{writes_text(cycle)} | {fence_text(cycle)} |"
            )
    add("")


def render_statements(rows: Rows, add: Add) -> None:
    small, large = STATEMENT_SITES
    add(f"## Statements per cycle of the per-site lists at {small} and at {large} sites")
    add("")
    add(
        f"SYNC_RESOURCES={PER_SITE_RESOURCES}, {FANOUT_PER_SITE} items per site and list, no "
        "latency, concurrency 4; cycles as in the fan-out section. Statements counted with "
        "SQLAlchemy's before_cursor_execute (an executemany is one). Allowed at "
        f"{large} sites = the {small}-site count + {STATEMENTS_PER_BATCH} × the extra batches "
        f"of {BATCH_ROWS:,} rows each list's larger write needs: anything above would be "
        "statements per site or per row."
    )
    add("")
    add(
        "| database | sites | cycle | requests | statements | by verb | writes | fence | "
        "allowed | bounded |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|")
    for backend in BACKENDS:
        by_sites = {r["sites"]: r for r in rows if r["backend"] == backend}
        for sites in STATEMENT_SITES:
            run = by_sites.get(sites)
            if run is None:
                continue
            for key in ("first", "second", "once"):
                cycle = run[key]
                allowed, bounded = "", ""
                if sites == large and small in by_sites:
                    limit = allowed_statements(by_sites[small][key], cycle)
                    allowed, bounded = str(limit), verdict(cycle["statements"] <= limit)
                verbs = ", ".join(
                    f"{k} {v}" for k, v in sorted(cycle["statements_by_verb"].items())
                )
                req = cycle["requests"]
                add(
                    f"| {backend} | {sites} | {CYCLE_TITLES[key]} | {req['token']} + "
                    f"{req['get']} | {cycle['statements']} | {verbs} | {writes_text(cycle)} | "
                    f"{fence_text(cycle)} | {allowed} | {bounded} |"
                )
    add("")


def allowed_statements(small: dict[str, Any], large: dict[str, Any]) -> int:
    before, after = rows_changed(small), rows_changed(large)
    extra = sum(
        max(0, math.ceil(rows / BATCH_ROWS) - math.ceil(before.get(name, 0) / BATCH_ROWS))
        for name, rows in after.items()
    )
    return int(small["statements"]) + STATEMENTS_PER_BATCH * extra


def copy_summary(rows: Rows) -> dict[str, Any] | None:
    """Medians of the copy section's runs, or None without all three."""
    by_impl = {impl: [r for r in rows if r["impl"] == impl] for impl in ("project", "copy",
               "copy-schema")}  # fmt: skip
    if not all(by_impl.values()):
        return None
    project = by_impl["project"]
    insert_seconds = {
        table: med(r["write_seconds"].get(f"INSERT {table}", 0.0) for r in project)
        for table in ("platforms", "platform_audit")
    }
    return {
        "n": rows[0]["n"],
        "reps": len(project),
        "project": med(r["wall_seconds"] for r in project),
        "project_inserts": insert_seconds,
        "copy": med(r["wall_seconds"] for r in by_impl["copy"]),
        "copy_schema": med(r["wall_seconds"] for r in by_impl["copy-schema"]),
        "copy_schema_copies": med(r["counts"]["copy_seconds"] for r in by_impl["copy-schema"]),
        "rss": {
            impl: med(r["process_peak_rss_mb"] for r in runs) for impl, runs in by_impl.items()
        },
    }


def render_copy(rows: Rows, add: Add, executemany_baseline: float | None) -> None:
    s = copy_summary(rows)
    if s is None:
        return
    n = s["n"]
    add(f"## COPY or not: {n:,} platforms, first cycle on PostgreSQL (median of {s['reps']})")
    add("")
    add(
        "The store writes with executemany of INSERT … ON CONFLICT through SQLAlchemy's "
        "Connection, so that cursor events (statement counters, tracing instrumentation) see "
        "every write; it used to load a first cycle with COPY. Each run is a fresh process and "
        "database; seconds timed in the process (token, GET, parse, write), imports before the "
        "clock. 'Project + COPY' is an experiment in scenario.py (`--impl copy-schema`), not "
        "the project: the project's own parsing (validation, canonical JSON, hashes), then one "
        "transaction with a run row and COPY of every row and audit row into the project's own "
        "`platforms` and `platform_audit` (indexes and foreign key included); no lock, fence or "
        "diff. The COPY baseline COPYs into tables with primary keys only and no hashes."
    )
    add("")
    inserts = s["project_inserts"]
    written = inserts["platforms"] + inserts["platform_audit"]
    add("| what | cycle | of which writing rows | peak RSS |")
    add("|---|---|---|---|")
    add(
        f"| project (executemany upserts, no COPY) | {fmt_s(s['project'])} | "
        f"{fmt_s(written)} (INSERT platforms {fmt_s(inserts['platforms'])}, INSERT "
        f"platform_audit {fmt_s(inserts['platform_audit'])}) | {s['rss']['project']:.0f} MB |"
    )
    add(
        f"| project's parsing + COPY into its own tables (experiment) | "
        f"{fmt_s(s['copy_schema'])} | {fmt_s(s['copy_schema_copies'])} (two COPYs) | "
        f"{s['rss']['copy-schema']:.0f} MB |"
    )
    add(f"| COPY baseline | {fmt_s(s['copy'])} |  | {s['rss']['copy']:.0f} MB |")
    if executemany_baseline is not None:
        add(f"| executemany baseline (scaling section) | {fmt_s(executemany_baseline)} |  |  |")
    add("")
    saved = s["project"] - s["copy_schema"]
    add(
        f"Project / COPY baseline: {fmt_ratio(ratio(s['project'], s['copy']))}. COPY in the "
        f"project's own tables would make this cycle {fmt_s(saved)} shorter "
        f"({saved / s['project']:.0%} of it; rows written in {fmt_s(s['copy_schema_copies'])} "
        f"instead of {fmt_s(written)}). It only concerns cycles that insert many rows at once: "
        "a partner's first cycle, or a list that grows by thousands; changed and no-change "
        "cycles write few rows or none (see the scaling and economy tables)."
    )
    add("")


# --------------------------------------------------------------------------- targets


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in results.get("lists") or []:
        r = ratio(med(row["project"]["wall"]), med(row["baseline"]["wall"]))
        case = "first cycle" if row["case"] == "first" else "no change"
        out.append(
            {
                "target": f"cold `once`, default four lists, {row['backend']}, {case}: wall",
                "measured": f"{fmt_ratio(r)} ({fmt_s(med(row['project']['wall']))} vs "
                f"{fmt_s(med(row['baseline']['wall']))})",
                "limit": f"≤ {LISTS_COLD_MAX_RATIO}× baseline",
                "ok": r <= LISTS_COLD_MAX_RATIO,
            }
        )
    fanout = results.get("fanout") or []
    for run in fanout:
        first, c = run["first"], run["concurrency"]
        ideal = ideal_seconds(first, c)
        r = ratio(first["wall_seconds"], ideal)
        out.append(
            {
                "target": f"fan-out first cycle, {FANOUT_SITES} sites, concurrency {c}, "
                f"{run['backend']}: wall / ideal",
                "measured": f"{fmt_ratio(r)} ({fmt_s(first['wall_seconds'])} vs {fmt_s(ideal)})",
                "limit": f"≤ {FANOUT_MAX_RATIO_TO_IDEAL}× ideal",
                "ok": r <= FANOUT_MAX_RATIO_TO_IDEAL,
            }
        )
    if fanout:
        worst = max(fanout, key=peak_rss)
        out.append(
            {
                "target": "fan-out peak RSS (worst process: first + no-change cycle, or `once`)",
                "measured": f"{peak_rss(worst):.0f} MB ({worst['backend']}, concurrency "
                f"{worst['concurrency']})",
                "limit": f"< {FANOUT_PEAK_RSS_MAX_MB:.0f} MB",
                "ok": peak_rss(worst) < FANOUT_PEAK_RSS_MAX_MB,
            }
        )
        for key in ("second", "once"):
            extra = sorted(
                {t for run in fanout for t in written_tables(run[key]) - NO_CHANGE_WRITABLE}
            )
            out.append(
                {
                    "target": f"fan-out {CYCLE_TITLES[key]}: tables written (all "
                    f"{len(fanout)} runs; fence apart)",
                    "measured": ", ".join(["sync_runs", *extra]),
                    "limit": "sync_runs only",
                    "ok": not extra,
                }
            )
    statements = results.get("statements") or []
    small, large = STATEMENT_SITES
    for backend in BACKENDS:
        by_sites = {r["sites"]: r for r in statements if r["backend"] == backend}
        if small not in by_sites or large not in by_sites:
            continue
        parts, ok = [], True
        for key in ("first", "second", "once"):
            a, b = by_sites[small][key], by_sites[large][key]
            ok = ok and b["statements"] <= allowed_statements(a, b)
            parts.append(f"{a['statements']} → {b['statements']}")
        out.append(
            {
                "target": f"statements per cycle, {small} → {large} sites, {backend} (first; "
                "no change same process; new `once`)",
                "measured": "; ".join(parts),
                "limit": f"+ ≤ {STATEMENTS_PER_BATCH} per extra batch of {BATCH_ROWS:,} rows",
                "ok": ok,
            }
        )
    summary = copy_summary(results.get("copy") or [])
    if summary is not None:
        r = ratio(summary["project"], summary["copy"])
        out.append(
            {
                "target": f"{summary['n']:,} platforms, first cycle, postgresql, without COPY",
                "measured": f"{fmt_ratio(r)} ({fmt_s(summary['project'])} vs "
                f"{fmt_s(summary['copy'])})",
                "limit": "≤ 1.0× COPY baseline",
                "ok": r <= 1.0,
            }
        )
    return out
