"""`make bench`: what a sync cycle costs and how it grows, side by side with a plain baseline.

Runs on this machine against the emulator on loopback (bench/emulator_server.py, own process),
with throwaway databases on the local SQLite, PostgreSQL and MariaDB, and writes
bench/results/report.md, bench/results/scaling.png and bench/results/results.json; prints the
report. Every figure of the project is shown as a ratio to bench/baseline.py measured in the
same run, alternating with it, so that the machine's noise cancels.

    python bench/run.py                 # everything (about 15 minutes on 2 cores)
    python bench/run.py --quick         # N up to 10,000, fewer repetitions (for editing this)
    python bench/run.py --only cold     # one section (repeat --only for more): see SECTIONS

Sections: cold (3 platforms), lists (cold `once` of the default four lists), steady, scaling (to
100,000 platforms, with the economy table), copy (100,000 platforms on PostgreSQL: executemany
or COPY), fanout (200 sites x 4 per-site lists at 50 ms a request), statements (3 and 200
sites), budget (the shared rate budget: 1, 3 and 5 replicas, the cost of a slot), imports. The
whole-account sections live in bench/account.py, the budget's in bench/budget.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import account
import budget
from common import (
    BACKENDS,
    BASELINE_TABLES,
    BENCH,
    PYTHON,
    REPO,
    RESULTS,
    Databases,
    EmulatorProcess,
    changed_list,
    checked,
    child_env,
    cold_comparison,
    create_baseline_tables,
    fmt_ratio,
    fmt_s,
    launcher_floor_mb,
    log,
    med,
    migrate_project,
    platform_list,
    ratio,
    render_cold,
    run_measured,
    sync_env,
    verdict,
    workdir,
)

SECTIONS = (
    "cold", "lists", "steady", "scaling", "copy", "fanout", "statements", "budget", "imports",
)  # fmt: skip
PHASES = ("first", "changed", "nochange")
PHASE_TITLES = {
    "first": "first cycle",
    "changed": "1 % renamed, 0.1 % removed",
    "nochange": "no change",
}
LATER_TITLE = "no change, later cycle of `run`"
COLD_BACKENDS = ("sqlite", "postgresql")
# Issue 6's limits, as ratios project/baseline unless stated.
COLD_MAX_RATIO = 1.2
FIRST_PG_MAX_RATIO_TO_COPY = 1.0
STEADY_STATE_MAX_RATIO = 0.8
PEAK_RSS_MAX_MB = 130.0
# "A few milliseconds of the job's own CPU" beyond the baseline's GET and transaction.
STEADY_EXTRA_CPU_MAX_MS = 5.0
# Issue 6's reference figures for the same job on this machine (plain baseline; dlt).
REFERENCE = {
    "baseline cold once, 3 platforms": "0.35 s",
    "baseline 100k first cycle, PostgreSQL, executemany": "6.8 s",
    "baseline 100k first cycle, PostgreSQL, COPY": "2.0 s",
    "baseline 100k 1 % changed, PostgreSQL": "1.25 s",
    "baseline 100k no change, PostgreSQL": "0.96 s",
    "baseline peak RSS at 100k": "155–224 MB",
    "dlt cold": "0.9–1.0 s",
    "dlt per 100k cycle": "2.8–3.0 s",
    "dlt peak RSS": "about 130 MB",
}


# --------------------------------------------------------------------------- cold once


def bench_cold(dbs: Databases, emu: EmulatorProcess, cwd: Path, reps: int) -> list[dict[str, Any]]:
    """`comm100-sync once` vs `python bench/baseline.py`, fresh processes, 3 platforms."""
    emu.set_platforms(platform_list(3))
    return cold_comparison(
        dbs,
        emu,
        cwd,
        reps,
        backends=COLD_BACKENDS,
        # This comparison is about the platform list alone (the baseline's one GET).
        resources="platforms",
        baseline_args=[],
        baseline_tables=BASELINE_TABLES,
        what="cold",
    )


# --------------------------------------------------------------------------- steady state


def bench_steady(
    dbs: Databases, emu: EmulatorProcess, cwd: Path, cycles: int
) -> list[dict[str, Any]]:
    """Loop cycles on one client (token reused), 3 platforms, in one process per backend."""
    emu.set_platforms(platform_list(3))
    rows = []
    for backend in BACKENDS:
        if not dbs.usable(backend):
            log(f"steady: {backend} unavailable, skipped")
            continue
        log(f"steady: {backend}, {cycles} cycles each")
        url = dbs.create(backend)
        migrate_project(url)
        create_baseline_tables(url)
        cmd = [PYTHON, str(BENCH / "scenario.py"), "steady", "--db", url, "--emulator", emu.url]
        run = checked(run_measured([*cmd, "--cycles", str(cycles)], child_env(), cwd), "steady")
        data = json.loads(run.stdout.strip().splitlines()[-1])
        data["backend"] = backend
        data["process_peak_rss_mb"] = run.maxrss_mb
        rows.append(data)
        dbs.drop(url)
    return rows


# --------------------------------------------------------------------------- scaling


def bench_scaling(
    dbs: Databases,
    emu: EmulatorProcess,
    cwd: Path,
    sizes: list[int],
    reps_for: Callable[[int], int],
) -> list[dict[str, Any]]:
    """First, changed and no-change cycles per (N, backend); each cycle a fresh process."""
    rows = []
    turn = 0
    for n in sizes:
        lists = {"first": platform_list(n), "changed": changed_list(n)}
        lists["nochange"] = lists["changed"]
        for backend in BACKENDS:
            if not dbs.usable(backend):
                log(f"scaling: {backend} unavailable, skipped")
                continue
            for rep in range(reps_for(n)):
                log(f"scaling: N={n:,} {backend} (run {rep + 1} of {reps_for(n)})")
                impls = ["project", "baseline"] + (["copy"] if backend == "postgresql" else [])
                urls = {impl: dbs.create(backend) for impl in impls}
                migrate_project(urls["project"])
                for impl in impls[1:]:
                    create_baseline_tables(urls[impl])
                for phase in PHASES:
                    emu.set_platforms(lists[phase])
                    # COPY only changes how a first cycle loads; later cycles are the baseline's.
                    order = [i for i in impls if i != "copy" or phase == "first"]
                    turn += 1
                    if turn % 2:
                        order.reverse()
                    for impl in order:
                        emu.clear_requests()
                        cmd = [
                            PYTHON,
                            str(BENCH / "scenario.py"),
                            "cycle",
                            "--impl",
                            impl,
                            "--db",
                            urls[impl],
                            "--emulator",
                            emu.url,
                        ]
                        if impl == "project" and phase == "nochange":
                            cmd.append("--again")  # and as a later cycle of `run`
                        run = checked(run_measured(cmd, child_env(), cwd), f"{impl} {phase}")
                        data = json.loads(run.stdout.strip().splitlines()[-1])
                        data.update(
                            n=n,
                            backend=backend,
                            phase=phase,
                            impl=impl,
                            rep=rep,
                            process_peak_rss_mb=run.maxrss_mb,
                            process_wall_seconds=run.wall_seconds,
                            http_requests=len(emu.requests())
                            - data.get("again", {}).get("requests", 0),
                        )
                        rows.append(data)
                for url in urls.values():
                    dbs.drop(url)
    return rows


# --------------------------------------------------------------------------- imports


def bench_imports(dbs: Databases, emu: EmulatorProcess, cwd: Path) -> dict[str, Any]:
    """`python -X importtime -m sync once` on an up-to-date SQLite database, no change."""
    emu.set_platforms(platform_list(3))
    url = dbs.create("sqlite")
    migrate_project(url)
    env = sync_env(emu, url, cwd, resources=None)  # `once` as installed: the default lists
    checked(run_measured([PYTHON, "-m", "sync", "once"], env, cwd), "populate")
    proc = subprocess.run(
        [PYTHON, "-X", "importtime", "-m", "sync", "once"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    dbs.drop(url)
    modules: list[tuple[str, int, int]] = []  # name, self us, cumulative us
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3:
            continue
        name = parts[2].rstrip()
        modules.append((name.strip(), int(parts[0]), int(parts[1])))
    total_us = sum(m[1] for m in modules)
    top_level: dict[str, int] = {}
    for name, own, _cum in modules:
        root = name.split(".")[0]
        top_level[root] = top_level.get(root, 0) + own
    names = {m[0] for m in modules}
    return {
        "returncode": proc.returncode,
        "total_import_seconds": total_us / 1e6,
        "modules": len(modules),
        "by_package_seconds": dict(
            sorted(((k, v / 1e6) for k, v in top_level.items()), key=lambda kv: -kv[1])[:15]
        ),
        "heavy_loaded": {
            pkg: pkg in {n.split(".")[0] for n in names}
            for pkg in (
                "alembic",
                "pydantic",
                "pydantic_settings",
                "apscheduler",
                "prometheus_client",
                "requests",
                "sqlalchemy",
                "psycopg",
                "pymysql",
                "mako",
            )
        },
    }


# --------------------------------------------------------------------------- report


def scaling_cell(rows: list[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def batch_size() -> int:
    try:
        from sync.store.snapshot import BATCH_SIZE

        return int(BATCH_SIZE)
    except ImportError:  # pragma: no cover - the store moved
        return 1000


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out: list[str] = []
    add = out.append
    add("# comm100-sync benchmark report")
    add("")
    add(
        f"Measured {meta['date']} on {meta['machine']}, with `{meta['command']}` "
        f"(total {meta['total_seconds']:.0f} s; 1-minute load average {meta['load']}). "
        f"Code: {meta['git']}."
    )
    add(
        f"Python {meta['python']}, SQLAlchemy {meta['sqlalchemy']}, psycopg {meta['psycopg']}, "
        f"PyMySQL {meta['pymysql']}; SQLite {meta['sqlite']}, {meta['postgresql']}, "
        f"MariaDB {meta['mariadb']}. Emulator on 127.0.0.1 in its own process (not measured)."
    )
    add("")
    add(
        "Ratios are project / baseline measured in the same run, alternating; below 1 the "
        "project is faster. The baseline is `bench/baseline.py` (requests + SQLAlchemy Core: "
        "token, GET, read current rows, diff decoded JSON in Python, executemany insert/update "
        "and audit rows in one transaction; tables `baseline_platforms`/`baseline_audit` with "
        "primary keys only, `jsonb` on PostgreSQL, no run log, lock, retries or validation). "
        "`COPY` is its variant that loads a first cycle with PostgreSQL COPY."
    )
    add("")
    for title, targets in (
        ("Targets of the whole-account issue (speed and cost)", account.targets(results)),
        ("Targets of issue 6 (the platform list)", evaluate_targets(results)),
        ("Targets of issue 12 (the shared rate budget)", budget.targets(results)),
    ):
        if not targets:
            continue
        add(f"## {title}")
        add("")
        add("| target | measured | limit | verdict |")
        add("|---|---|---|---|")
        for t in targets:
            add(f"| {t['target']} | {t['measured']} | {t['limit']} | {verdict(t['ok'])} |")
        add("")

    cold = results.get("cold") or []
    if cold:
        reps = len(cold[0]["project"]["wall"])
        add(f"## Cold one-shot: a fresh process, 3 platforms (median of {reps}, min–max)")
        add("")
        add(
            "`SYNC_RESOURCES=platforms comm100-sync once` vs `python bench/baseline.py`, "
            "interpreter start and imports included; schema already at head in both cases "
            '("first cycle" = pre-migrated, empty tables). CPU = the child\'s user+system '
            "rusage; peak RSS = its ru_maxrss."
        )
        add("")
        render_cold(cold, add)
    if results.get("lists"):
        account.render_lists(results["lists"], add)

    steady = results.get("steady") or []
    if steady:
        cycles = steady[0]["cycles"]
        add(f"## Steady state: one loop cycle, 3 platforms, token reused (median of {cycles})")
        add("")
        add(
            "One process per database; `run_once` = sync.job.run_once on one client and engine; "
            "`run` tick = sync.scheduler.Service.tick (the due-work lookup, the claim, the cycle, "
            "metrics and health), the work of one tick of `comm100-sync run` that finds the list "
            "due, without the interval wait (the list is made due again before each, untimed). "
            "CPU = process time of the cycle (the emulator runs elsewhere). Extra CPU = project − "
            "baseline. Unpaced (SYNC_RATE_LIMIT=0): the budget section measures what a slot "
            "costs."
        )
        add("")
        add(
            "| database | what | wall | CPU | CPU ratio | extra CPU | HTTP requests | "
            "SQL statements | pool checkouts (pre-ping) |"
        )
        add("|---|---|---|---|---|---|---|---|---|")
        for row in steady:
            s = row["samples"]
            base_cpu = med(s["baseline"]["cpu"])
            for name, label in (
                ("project", "`run_once`"),
                ("service", "`run` tick"),
                ("baseline", "baseline"),
            ):
                cpu = med(s[name]["cpu"])
                extra = "" if name == "baseline" else f"{(cpu - base_cpu) * 1000:+.1f} ms"
                add(
                    f"| {row['backend']} | {label} | {fmt_s(med(s[name]['wall']))} | "
                    f"{fmt_s(cpu)} | {fmt_ratio(ratio(cpu, base_cpu))} | {extra} | "
                    f"{row['requests_per_cycle'][name]:g} | {med(s[name]['statements']):g} | "
                    f"{med(s[name]['checkouts']):g} |"
                )
        add("")

    scaling = results.get("scaling") or []
    if scaling:
        add("## Scaling: one cycle per fresh process, fresh database per (N, database)")
        add("")
        add(
            "Seconds = token + GET + parse + diff + write, timed inside the process (imports "
            "before the clock; the cold runs above include them). Peak RSS = the whole process "
            "(interpreter and imports included). 'changed' = 1 % renamed and 0.1 % removed "
            "after the first cycle; 'no change' repeats that list. Each process's first cycle "
            "compares in full (every live document read and compared), as every `once` does; "
            "'no change, later cycle of `run`' is a second cycle in the no-change process (token "
            "and memory kept), which may take the unchanged-answer shortcut (compared with the "
            "baseline's no-change cycle). Where a cell ran more than once it shows the median."
        )
        add("")
        add(
            "| N | database | cycle | project | baseline | ratio | COPY baseline | ratio to COPY | "
            "project RSS | baseline RSS | RSS ratio |"
        )
        add("|---|---|---|---|---|---|---|---|---|---|---|")
        for n in sorted({r["n"] for r in scaling}):
            for backend in BACKENDS:
                for phase in PHASES:
                    p = scaling_cell(scaling, n=n, backend=backend, phase=phase, impl="project")
                    b = scaling_cell(scaling, n=n, backend=backend, phase=phase, impl="baseline")
                    c = scaling_cell(scaling, n=n, backend=backend, phase=phase, impl="copy")
                    if not p or not b:
                        continue
                    pw, bw = med(r["wall_seconds"] for r in p), med(r["wall_seconds"] for r in b)
                    pr = med(r["process_peak_rss_mb"] for r in p)
                    br = med(r["process_peak_rss_mb"] for r in b)
                    copy_cells = ("", "")
                    if c:
                        cw = med(r["wall_seconds"] for r in c)
                        copy_cells = (fmt_s(cw), fmt_ratio(ratio(pw, cw)))
                    add(
                        f"| {n:,} | {backend} | {PHASE_TITLES[phase]} | {fmt_s(pw)} | "
                        f"{fmt_s(bw)} | {fmt_ratio(ratio(pw, bw))} | {copy_cells[0]} | "
                        f"{copy_cells[1]} | {pr:.0f} MB | {br:.0f} MB | "
                        f"{fmt_ratio(ratio(pr, br))} |"
                    )
                    later = [r["again"]["wall_seconds"] for r in p if "again" in r]
                    if later:
                        aw = med(later)
                        add(
                            f"| {n:,} | {backend} | {LATER_TITLE} | {fmt_s(aw)} | {fmt_s(bw)} "
                            f"| {fmt_ratio(ratio(aw, bw))} |  |  |  |  |  |"
                        )
        add("")
        add("![cycle time against N](scaling.png)")
        add("")
        render_economy(scaling, add)

    copy_rows = results.get("copy") or []
    if copy_rows:
        executemany = scaling_cell(
            scaling, n=copy_rows[0]["n"], backend="postgresql", phase="first", impl="baseline"
        )
        baseline_seconds = med(r["wall_seconds"] for r in executemany) if executemany else None
        account.render_copy(copy_rows, add, baseline_seconds)
    if results.get("fanout"):
        account.render_fanout(results["fanout"], add)
    if results.get("statements"):
        account.render_statements(results["statements"], add)
    if results.get("budget"):
        budget.render_budget(results["budget"], add)

    imports = results.get("imports")
    if imports:
        add("## Start-up imports of `comm100-sync once` (`python -X importtime -m sync once`)")
        add("")
        loaded = [k for k, v in imports["heavy_loaded"].items() if v]
        not_loaded = [k for k, v in imports["heavy_loaded"].items() if not v]
        add(
            f"{imports['modules']} modules, {imports['total_import_seconds']:.3f} s of import "
            f"time in total (importtime's own overhead included). Loaded: {', '.join(loaded)}. "
            f"Not loaded: {', '.join(not_loaded) or 'none'}."
        )
        add("")
        add("| package | own import time |")
        add("|---|---|")
        for name, seconds in imports["by_package_seconds"].items():
            add(f"| {name} | {fmt_s(seconds)} |")
        add("")

    add("## Reference figures from issue 6 (same job, this machine, earlier)")
    add("")
    add("; ".join(f"{k}: {v}" for k, v in REFERENCE.items()) + ".")
    add("")
    add(
        f"Method notes: each measured child is started through `bench/launch.py`, which forks it "
        f"and reads its own rusage (a child spawned straight from the runner would report the "
        f"runner's RSS, since Linux keeps ru_maxrss across exec); the launcher lends at most "
        f"{meta['launcher_floor_mb']:.1f} MB to that figure. Children run with bytecode "
        f"caching on (PYTHONPYCACHEPREFIX=bench/results/pycache, PYTHONDONTWRITEBYTECODE "
        f"dropped), as an installed wheel has its .pyc files; a warm-up run fills the cache "
        f"before the cold runs. Raw samples: results.json."
    )
    return "\n".join(out) + "\n"


def render_economy(scaling: list[dict[str, Any]], add: Callable[[str], None]) -> None:
    sizes = sorted({r["n"] for r in scaling})
    small, large = sizes[0], sizes[-1]
    if small == large:
        return
    size = batch_size()
    add(f"## Economy: HTTP requests and SQL statements per cycle (N = {small:,} and {large:,})")
    add("")
    add(
        "Statements counted with SQLAlchemy's before_cursor_execute (an executemany is one; "
        "each COPY counts one). Allowed = the N = "
        f"{small:,} count + 4 × the extra batches of {size:,} rows that the larger write needs "
        "(IN-list read of old values, upsert, soft delete, audit insert): anything above that "
        "would be statements per row."
    )
    add("")
    add(
        "| database | cycle | N | HTTP (project / baseline) | SQL (project / baseline) | "
        "project statements by verb | allowed | bounded |"
    )
    add("|---|---|---|---|---|---|---|---|")
    for backend in BACKENDS:
        for phase in PHASES:
            first_rows: dict[int, dict[str, Any]] = {}
            for n in (small, large):
                p = scaling_cell(scaling, n=n, backend=backend, phase=phase, impl="project")
                b = scaling_cell(scaling, n=n, backend=backend, phase=phase, impl="baseline")
                if not p or not b:
                    continue
                first_rows[n] = p[0]
                c = p[0]["counts"]
                written = sum(c.get(k, 0) for k in ("inserted", "updated", "deleted", "restored"))
                p[0]["_written"] = written
                allowed = ""
                bounded = ""
                if n == large and small in first_rows:
                    base = first_rows[small]
                    extra_batches = max(
                        0, math.ceil(written / size) - math.ceil(base["_written"] / size)
                    )
                    limit = base["statements"] + 4 * extra_batches
                    allowed = str(limit)
                    bounded = verdict(p[0]["statements"] <= limit)
                verbs = ", ".join(f"{k} {v}" for k, v in sorted(p[0]["statements_by_verb"].items()))
                add(
                    f"| {backend} | {PHASE_TITLES[phase]} | {n:,} | {p[0]['http_requests']} / "
                    f"{b[0]['http_requests']} | {p[0]['statements']} / {b[0]['statements']} | "
                    f"{verbs} | {allowed} | {bounded} |"
                )
    add("")


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    for row in results.get("cold") or []:
        r = ratio(med(row["project"]["wall"]), med(row["baseline"]["wall"]))
        case = "first cycle" if row["case"] == "first" else "no change"
        targets.append(
            {
                "target": f"cold `once`, 3 platforms, {row['backend']}, {case}: wall",
                "measured": f"{fmt_ratio(r)} ({fmt_s(med(row['project']['wall']))})",
                "limit": f"≤ {COLD_MAX_RATIO}× baseline",
                "ok": r <= COLD_MAX_RATIO,
            }
        )
    scaling = results.get("scaling") or []
    largest = max((r["n"] for r in scaling), default=0)
    if largest:
        p = scaling_cell(scaling, n=largest, backend="postgresql", phase="first", impl="project")
        c = scaling_cell(scaling, n=largest, backend="postgresql", phase="first", impl="copy")
        # The copy section measures the same more closely; its row is in the other table.
        if p and c and account.copy_summary(results.get("copy") or []) is None:
            pw, cw = med(r["wall_seconds"] for r in p), med(r["wall_seconds"] for r in c)
            targets.append(
                {
                    "target": f"{largest:,} platforms, first cycle, postgresql",
                    "measured": f"{fmt_ratio(ratio(pw, cw))} ({fmt_s(pw)} vs {fmt_s(cw)})",
                    "limit": f"≤ {FIRST_PG_MAX_RATIO_TO_COPY}× COPY baseline",
                    "ok": ratio(pw, cw) <= FIRST_PG_MAX_RATIO_TO_COPY,
                }
            )
        for phase in ("changed", "nochange"):
            for backend in BACKENDS:
                p = scaling_cell(scaling, n=largest, backend=backend, phase=phase, impl="project")
                b = scaling_cell(scaling, n=largest, backend=backend, phase=phase, impl="baseline")
                if not p or not b:
                    continue
                pw, bw = med(r["wall_seconds"] for r in p), med(r["wall_seconds"] for r in b)
                targets.append(
                    {
                        "target": f"{largest:,} platforms, {PHASE_TITLES[phase]}, {backend}",
                        "measured": f"{fmt_ratio(ratio(pw, bw))} ({fmt_s(pw)} vs {fmt_s(bw)})",
                        "limit": f"≤ {STEADY_STATE_MAX_RATIO}× baseline",
                        "ok": ratio(pw, bw) <= STEADY_STATE_MAX_RATIO,
                    }
                )
                later = [r["again"]["wall_seconds"] for r in p if "again" in r]
                if later:
                    aw = med(later)
                    targets.append(
                        {
                            "target": f"{largest:,} platforms, {LATER_TITLE}, {backend}",
                            "measured": f"{fmt_ratio(ratio(aw, bw))} ({fmt_s(aw)} vs {fmt_s(bw)})",
                            "limit": f"≤ {STEADY_STATE_MAX_RATIO}× baseline",
                            "ok": ratio(aw, bw) <= STEADY_STATE_MAX_RATIO,
                        }
                    )
        rss = scaling_cell(scaling, n=largest, impl="project")
        if rss:
            worst = max(rss, key=lambda r: r["process_peak_rss_mb"])
            targets.append(
                {
                    "target": f"peak RSS over {largest:,} platforms (worst database and cycle)",
                    "measured": f"{worst['process_peak_rss_mb']:.0f} MB "
                    f"({worst['backend']}, {PHASE_TITLES[worst['phase']]})",
                    "limit": f"≤ {PEAK_RSS_MAX_MB:.0f} MB",
                    "ok": worst["process_peak_rss_mb"] <= PEAK_RSS_MAX_MB,
                }
            )
    for row in results.get("steady") or []:
        s = row["samples"]
        extra_ms = (med(s["service"]["cpu"]) - med(s["baseline"]["cpu"])) * 1000
        targets.append(
            {
                "target": f"steady-state `run` tick, 3 platforms, {row['backend']}: CPU beyond "
                "the baseline's GET + transaction",
                "measured": f"{extra_ms:+.1f} ms ({fmt_s(med(s['service']['cpu']))} in all)",
                "limit": f"≤ {STEADY_EXTRA_CPU_MAX_MS:g} ms",
                "ok": extra_ms <= STEADY_EXTRA_CPU_MAX_MS,
            }
        )
    return targets


def chart(scaling: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[bench]'): no chart")
        return False
    sizes = sorted({r["n"] for r in scaling if r["n"] >= 1000})
    if not sizes:
        return False
    colours = {"sqlite": "tab:blue", "postgresql": "tab:green", "mariadb": "tab:orange"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), sharey=True)
    for ax, phase in zip(axes, PHASES, strict=True):
        for backend in BACKENDS:
            for impl, style in (("project", "-o"), ("baseline", "--s"), ("copy", ":^")):
                points = []
                for n in sizes:
                    cell = scaling_cell(scaling, n=n, backend=backend, phase=phase, impl=impl)
                    if cell:
                        points.append((n, med(r["wall_seconds"] for r in cell)))
                if points:
                    label = f"{impl if impl != 'copy' else 'baseline COPY'} · {backend}"
                    ax.plot(*zip(*points, strict=True), style, color=colours[backend], label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(PHASE_TITLES[phase])
        ax.set_xlabel("platforms (N)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("cycle time (s)")
    axes[0].legend(fontsize=7)
    fig.suptitle("comm100-sync: cycle time against N (project solid, baseline dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- main


def server_versions(dbs: Databases) -> dict[str, str]:
    from common import ADMIN_URLS

    versions = {"postgresql": "PostgreSQL (unavailable)", "mariadb": "(unavailable)"}
    for backend, query in (("postgresql", "SHOW server_version"), ("mariadb", "SELECT VERSION()")):
        if dbs.usable(backend):
            engine = sa.create_engine(ADMIN_URLS[backend])
            with engine.connect() as conn:
                value = str(conn.exec_driver_sql(query).scalar())
            engine.dispose()
            versions[backend] = (
                f"PostgreSQL {value.split()[0]}" if backend == "postgresql" else value
            )
    return versions


def git_state() -> str:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return proc.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "sync", "migrations")
    return f"commit {commit}" + (
        " plus uncommitted changes under sync/ or migrations/" if dirty else ""
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N ≤ 10,000, fewer repetitions")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only these")
    parser.add_argument("--reps", type=int, help="cold repetitions (default 7; quick 3)")
    parser.add_argument("--cycles", type=int, help="steady-state cycles (default 50; quick 20)")
    parser.add_argument("--sizes", help="comma-separated N (default 3,1000,10000,100000)")
    args = parser.parse_args()
    sections = args.only or list(SECTIONS)
    reps = args.reps or (3 if args.quick else 7)
    cycles = args.cycles or (20 if args.quick else 50)
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([3, 1000, 10000] if args.quick else [3, 1000, 10_000, 100_000])
    )

    def reps_for(n: int) -> int:
        # Each cell is the median of three fresh databases (one in --quick mode).
        return 1 if args.quick else 3

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    dbs = Databases()
    for backend, problem in dbs.available.items():
        if problem:
            log(f"{backend} unavailable: {problem}")
    emu = EmulatorProcess()
    results: dict[str, Any] = {}
    try:
        with workdir() as cwd:
            floor = launcher_floor_mb(cwd)
            if "cold" in sections:
                results["cold"] = bench_cold(dbs, emu, cwd, reps)
            if "lists" in sections:
                results["lists"] = account.bench_lists(dbs, emu, cwd, reps)
            if "steady" in sections:
                results["steady"] = bench_steady(dbs, emu, cwd, cycles)
            if "scaling" in sections:
                results["scaling"] = bench_scaling(dbs, emu, cwd, sizes, reps_for)
            if "copy" in sections:
                results["copy"] = account.bench_copy(dbs, emu, cwd, max(sizes), reps_for(0))
            if "fanout" in sections:
                results["fanout"] = account.bench_fanout(dbs, cwd, args.quick)
            if "statements" in sections:
                results["statements"] = account.bench_statements(dbs, cwd)
            if "budget" in sections:
                results["budget"] = budget.bench_budget(dbs, cwd, args.quick)
            if "imports" in sections:
                results["imports"] = bench_imports(dbs, emu, cwd)
        versions = server_versions(dbs)
    finally:
        emu.stop()
        dbs.drop_all()

    import sqlite3
    from importlib.metadata import version

    command = "make bench" if not sys.argv[1:] else "python bench/run.py " + " ".join(sys.argv[1:])
    results["meta"] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {_cores()} cores, Linux {platform.release()}",
        "command": command,
        "git": git_state(),
        "python": platform.python_version(),
        "sqlalchemy": sa.__version__,
        "psycopg": version("psycopg"),
        "pymysql": version("PyMySQL"),
        "sqlite": sqlite3.sqlite_version,
        **versions,
        "launcher_floor_mb": floor,
        # Other work on the machine adds noise; alternation cancels most of it from the ratios.
        "load": f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after",
        "total_seconds": time.perf_counter() - started,
    }
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if results.get("scaling"):
        chart(results["scaling"], RESULTS / "scaling.png")
    report = render(results)
    (RESULTS / "report.md").write_text(report)
    print(report)
    log(f"wrote {RESULTS / 'report.md'} in {time.perf_counter() - started:.0f} s")
    return 0


def _cores() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
