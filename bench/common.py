"""Shared plumbing for the benchmarks: throwaway databases, the emulator process, measured children,
the cold-start comparison, and the report's number formatting.

Nothing here is timed itself; it sets the stage for what bench/run.py and bench/account.py
measure.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

import baseline

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
# The children's bytecode cache (see child_env), outside the source tree.
PYCACHE = RESULTS / "pycache"
PYTHON = sys.executable
COMM100_SYNC = str(Path(sys.executable).parent / "comm100-sync")

# Same defaults as tests/conftest.py: the local servers, admin URLs.
ADMIN_URLS = {
    "postgresql": os.environ.get(
        "SYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
    "mariadb": os.environ.get("SYNC_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql"),
}
BACKENDS = ("sqlite", "postgresql", "mariadb")
CREDENTIALS = {
    "SYNC_CLIENT_ID": "demo-client",
    "SYNC_EMAIL": "demo@example.com",
    "SYNC_PASSWORD": "demo-password",
}
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


# --------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def med(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def sync_env(
    emu: EmulatorProcess, url: str, cwd: Path, *, resources: str | None, **extra: str
) -> dict[str, str]:
    """Environment for `comm100-sync once` and baseline.py: the emulator, `url`, the lists
    (SYNC_RESOURCES; None leaves it unset, so `once` syncs its default four), no rate budget
    unless `extra` sets SYNC_RATE_LIMIT, nothing else.

    Unpaced, as the tests run: the default budget (270 calls per 300 s) would hold a 200-site
    fan-out for a quarter of an hour; the budget section measures what it costs."""
    settings = {
        **CREDENTIALS,
        "SYNC_AUTH_URL": emu.auth_url,
        "SYNC_API_URL": emu.api_url,
        "SYNC_DATABASE_URL": url,
        "SYNC_ENV_FILE": "",
        "SYNC_SECRETS_DIR": str(cwd / "no-secrets"),
        "SYNC_MAX_DELETE_FRACTION": "1.0",
        "SYNC_RATE_LIMIT": "0",
        **({"SYNC_RESOURCES": resources} if resources else {}),
    }
    return child_env(**(settings | extra))


def create_baseline_tables(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        baseline.metadata.create_all(engine)
    finally:
        engine.dispose()


def checked(run: ChildRun, what: str) -> ChildRun:
    if run.returncode != 0:
        raise RuntimeError(f"{what} exited {run.returncode}:\n{run.stderr[-3000:]}")
    return run


# --------------------------------------------------------------------------- data


def platform_list(n: int) -> list[dict[str, Any]]:
    """N platforms shaped like the API's: an integer id and a name."""
    return [{"id": 100_000 + i, "name": f"Platform {i:06d}"} for i in range(n)]


def changed_list(n: int) -> list[dict[str, Any]]:
    """platform_list(n) with 1 % renamed and 0.1 % removed (disjoint), at least one of each."""
    step_rename = max(1, min(100, n))
    step_remove = max(1, min(1000, n))
    out = []
    for i, item in enumerate(platform_list(n)):
        if i % step_remove == step_remove // 2 + 1 and n > 1:
            continue
        if i % step_rename == 0:
            item = {**item, "name": item["name"] + " (renamed)"}
        out.append(item)
    return out


# --------------------------------------------------------------------------- databases


class Databases:
    """Creates throwaway databases (SQLite files in a temp folder) and drops them again."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="c100bench-"))
        self.created: list[tuple[str, str]] = []
        self.available: dict[str, str | None] = {"sqlite": None}
        for backend, url in ADMIN_URLS.items():
            try:
                probe = sa.create_engine(url, connect_args={"connect_timeout": 5})
                with probe.connect():
                    pass
                probe.dispose()
                self.available[backend] = None
            except Exception as error:  # a missing server is reported, not fatal
                self.available[backend] = f"{type(error).__name__}: {error}".splitlines()[0]

    def usable(self, backend: str) -> bool:
        return backend in self.available and self.available[backend] is None

    def create(self, backend: str) -> str:
        name = f"c100bench_{uuid.uuid4().hex[:10]}"
        if backend == "sqlite":
            url = f"sqlite:///{self.folder / (name + '.db')}"
            self.created.append((backend, url))
            return url
        admin = sa.create_engine(ADMIN_URLS[backend], isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                if backend == "postgresql":
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                else:
                    conn.exec_driver_sql(
                        f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                    )
        finally:
            admin.dispose()
        admin_url = sa.engine.make_url(ADMIN_URLS[backend])
        rendered = admin_url.set(database=name).render_as_string(hide_password=False)
        self.created.append((backend, rendered))
        return rendered

    def drop(self, url: str) -> None:
        backend = backend_of(url)
        if backend == "sqlite":
            path = Path(sa.engine.make_url(url).database or "")
            for leftover in path.parent.glob(path.name + "*"):
                leftover.unlink(missing_ok=True)
            return
        name = sa.engine.make_url(url).database
        admin = sa.create_engine(ADMIN_URLS[backend], isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                if backend == "postgresql":
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                else:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            admin.dispose()

    def drop_all(self) -> None:
        for _backend, url in self.created:
            with contextlib.suppress(Exception):
                self.drop(url)
        self.created.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def backend_of(url: str) -> str:
    name = sa.engine.make_url(url).get_backend_name()
    return "mariadb" if name == "mysql" else name


def migrate_project(url: str) -> None:
    """Bring a fresh database to the project's head revision (outside any timing)."""
    from sync.migrate import upgrade
    from sync.store import create_engine

    engine = create_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def empty_tables(url: str, tables: tuple[str, ...]) -> None:
    """Delete every row of `tables` (children first), leaving the schema in place."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for table in tables:
                conn.exec_driver_sql(f"DELETE FROM {table}")
    finally:
        engine.dispose()


def project_tables() -> tuple[str, ...]:
    """Every table a cycle writes, children first: each list's audit, the lists, the fence
    row per list, the runs (sync_auth_state is left alone: it is the login's, not the data's)."""
    from sync.resources import REGISTRY

    audits = tuple(f"{resource.singular}_audit" for resource in REGISTRY.values())
    return (*audits, *REGISTRY, "sync_state", "sync_runs")


PROJECT_TABLES = project_tables()
BASELINE_TABLES = ("baseline_audit", "baseline_platforms")


# --------------------------------------------------------------------------- emulator


class EmulatorProcess:
    """bench/emulator_server.py in its own process (so its CPU and memory are not measured)."""

    def __init__(self, *args: str) -> None:
        """`args` go to emulator_server.py (e.g. "--sites", "200", "--latency", "0.05")."""
        self.proc = subprocess.Popen(
            [PYTHON, str(BENCH / "emulator_server.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=child_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.proc.kill()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = line
        self.auth_url = f"{line}/oauth/token"
        self.api_url = f"{line}/v4"
        self.control = requests.Session()

    def set_platforms(self, platforms: list[dict[str, Any]]) -> None:
        body = json.dumps(platforms).encode()
        reply = self.control.put(f"{self.url}/_emulator/platforms", data=body, timeout=120)
        reply.raise_for_status()

    def set_list(self, name: str, items: list[dict[str, Any]]) -> None:
        """Replace one list (`name` as the control API spells it: "sites", "agents@20001")."""
        body = json.dumps(items).encode()
        reply = self.control.put(f"{self.url}/_emulator/lists/{name}", data=body, timeout=120)
        reply.raise_for_status()

    def clear_requests(self) -> None:
        self.control.delete(f"{self.url}/_emulator/requests", timeout=30).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        reply = self.control.get(f"{self.url}/_emulator/requests", timeout=30)
        reply.raise_for_status()
        records: list[dict[str, Any]] = reply.json()
        return records

    def stats(self) -> dict[str, int]:
        """The emulator's counters (Emulator.stats: answers per list, 429s, token grants)."""
        reply = self.control.get(f"{self.url}/_emulator/stats", timeout=30)
        reply.raise_for_status()
        counters: dict[str, int] = reply.json()
        return counters

    def stop(self) -> None:
        self.control.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- children


def child_env(**extra: str) -> dict[str, str]:
    """The current environment without SYNC_* settings or proxies, plus `extra`.

    Bytecode caching is on, in a folder of the benchmark's own (PYCACHE): an installed wheel
    comes with .pyc files, but with PYTHONDONTWRITEBYTECODE=1 (set in some development
    environments) the editable checkout's modules were compiled from source on every `once`,
    about 40 ms that no installation pays.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SYNC_")
        and k.upper() not in _PROXY_VARS
        and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env.update(extra)
    return env


@dataclass
class ChildRun:
    returncode: int
    wall_seconds: float
    cpu_seconds: float
    maxrss_mb: float
    stdout: str
    stderr: str


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> ChildRun:
    """Run `cmd` to completion through bench/launch.py: its wall time, CPU and peak RSS.

    Wall time runs from fork to exit of the command (interpreter start and imports included);
    CPU and peak RSS are the command's own rusage, read by the small launcher (see launch.py
    for why the runner cannot read them itself).
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".rusage") as usage,
    ):
        proc = subprocess.run(
            [PYTHON, "-S", str(BENCH / "launch.py"), usage.name, *cmd],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=err,
            timeout=timeout,
            check=False,
        )
        fields = usage.read().split()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        if proc.returncode != 0 or len(fields) != 4:
            raise RuntimeError(f"launcher failed ({proc.returncode}): {stderr[-2000:]}")
        wall, cpu, maxrss_kb, code = fields
        return ChildRun(
            returncode=int(code),
            wall_seconds=float(wall),
            cpu_seconds=float(cpu),
            maxrss_mb=int(maxrss_kb) / 1024,  # kilobytes on Linux
            stdout=stdout,
            stderr=stderr,
        )


def launcher_floor_mb(cwd: Path) -> float:
    """Peak RSS the launcher itself lends a command (what `true` reports)."""
    return run_measured(["true"], child_env(), cwd).maxrss_mb


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """An empty working directory for children, so no .env of the checkout is read."""
    folder = Path(tempfile.mkdtemp(prefix="c100bench-cwd-"))
    (folder / "no-secrets").mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- cold start

# A run that fails (a MariaDB deadlock, say) is reported and measured again, up to this often.
COLD_ATTEMPTS = 3


def run_attempts(
    cmd: list[str],
    env: dict[str, str],
    cwd: Path,
    failures: list[str],
    what: str,
    before: Callable[[], object] | None = None,
) -> ChildRun:
    """run_measured until the command succeeds (COLD_ATTEMPTS at most, `before` each time);
    each failure is appended to `failures` for the report."""
    for _ in range(COLD_ATTEMPTS):
        if before is not None:
            before()
        run = run_measured(cmd, env, cwd)
        if run.returncode == 0:
            return run
        failures.append(f"{what} exited {run.returncode}: {error_line(run)}")
        log(f"{what}: {failures[-1]}")
    return checked(run, what)


def error_line(run: ChildRun) -> str:
    """The first logged ERROR of a failed run (or the last line of its stderr)."""
    lines = run.stderr.strip().splitlines() or [""]
    return next((line for line in lines if " ERROR " in line), lines[-1])[-400:]


def cold_comparison(
    dbs: Databases,
    emu: EmulatorProcess,
    cwd: Path,
    reps: int,
    *,
    backends: Iterable[str],
    resources: str | None,
    baseline_args: list[str],
    baseline_tables: tuple[str, ...],
    what: str,
) -> list[dict[str, Any]]:
    """`comm100-sync once` vs `python bench/baseline.py [baseline_args]`, each a fresh process,
    alternating, `reps` times per backend and case: first cycle (pre-migrated, empty tables)
    and no change. `resources` is SYNC_RESOURCES (None: unset, the default lists)."""
    commands = {
        "project": [COMM100_SYNC, "once"],
        "baseline": [PYTHON, str(BENCH / "baseline.py"), *baseline_args],
    }
    tables = {"project": PROJECT_TABLES, "baseline": baseline_tables}
    rows = []
    for backend in backends:
        if not dbs.usable(backend):
            log(f"{what}: {backend} unavailable, skipped")
            continue
        url = dbs.create(backend)
        migrate_project(url)
        create_baseline_tables(url)
        env = sync_env(emu, url, cwd, resources=resources)
        failures: list[str] = []
        emptying = {impl: functools.partial(empty_tables, url, tables[impl]) for impl in commands}
        for impl, cmd in commands.items():  # warm the page cache for both, unmeasured
            run_attempts(cmd, env, cwd, failures, f"{what} {impl}")
        for case in ("first", "nochange"):
            log(f"{what}: {backend} {case} x{reps}")
            samples: dict[str, list[ChildRun]] = {"project": [], "baseline": []}
            if case == "nochange":
                for impl, cmd in commands.items():  # populate
                    run_attempts(cmd, env, cwd, failures, f"{what} {impl}", emptying[impl])
            for rep in range(reps):
                order = ["project", "baseline"] if rep % 2 == 0 else ["baseline", "project"]
                for impl in order:
                    before = emptying[impl] if case == "first" else None
                    run = run_attempts(commands[impl], env, cwd, failures, f"{what} {impl}", before)
                    samples[impl].append(run)
            rows.append(
                {
                    "backend": backend,
                    "case": case,
                    "failures": list(failures),
                    **{
                        impl: {
                            "wall": [r.wall_seconds for r in runs],
                            "cpu": [r.cpu_seconds for r in runs],
                            "rss": [r.maxrss_mb for r in runs],
                        }
                        for impl, runs in samples.items()
                    },
                }
            )
            failures.clear()
        dbs.drop(url)
    return rows


def render_cold(rows: list[dict[str, Any]], add: Callable[[str], None]) -> None:
    """The table of a cold_comparison: medians (min to max) of wall, CPU and peak RSS."""
    add(
        "| database | case | project wall | baseline wall | ratio | project CPU | "
        "baseline CPU | ratio | project RSS | baseline RSS | ratio |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|")

    def span(values: list[float], unit: Callable[[float], str]) -> str:
        return f"{unit(med(values))} ({unit(min(values))}–{unit(max(values))})"

    def mb(v: float) -> str:
        return f"{v:.0f} MB"

    for row in rows:
        p, b = row["project"], row["baseline"]
        case = "first cycle" if row["case"] == "first" else "no change"
        add(
            f"| {row['backend']} | {case} | {span(p['wall'], fmt_s)} | "
            f"{span(b['wall'], fmt_s)} | {fmt_ratio(ratio(med(p['wall']), med(b['wall'])))} | "
            f"{fmt_s(med(p['cpu']))} | {fmt_s(med(b['cpu']))} | "
            f"{fmt_ratio(ratio(med(p['cpu']), med(b['cpu'])))} | {mb(med(p['rss']))} | "
            f"{mb(med(b['rss']))} | {fmt_ratio(ratio(med(p['rss']), med(b['rss'])))} |"
        )
    add("")
    failures = [(row, failure) for row in rows for failure in row.get("failures", [])]
    if failures:
        runs = sum(len(row["project"]["wall"]) + len(row["baseline"]["wall"]) for row in rows)
        add(
            f"**{len(failures)} failed run(s)** besides the {runs} measured ones (each measured "
            "again, so the figures above are of successful runs only):"
        )
        add("")
        for row, failure in failures:
            add(f"- {row['backend']}, {row['case']}: `{failure}`")
        add("")


# --------------------------------------------------------------------------- report formatting


def ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


def fmt_s(seconds: float) -> str:
    if seconds < 0.1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.2f} s"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}×"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"
