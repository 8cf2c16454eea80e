"""Profiles of the project's costly paths, written to bench/results/profiles/ (needs pyinstrument).

    python bench/profile.py                      # 100,000 platforms on PostgreSQL + cold start
    python bench/profile.py --n 100000 --backend sqlite
    python bench/profile.py --only cold
    python bench/profile.py --only fanout --concurrency 8 --backend postgresql

For each of first / changed / no-change cycles: a fresh process runs one `run_once` under
pyinstrument (imports and settings before the profiler starts) and writes NAME.txt and NAME.html.
Cold start: `pyinstrument -m sync once` and `python -X importtime -m sync once` (SYNC_RESOURCES
unset: the default four lists) on a database already at head with nothing to change
(importtime.txt, sorted by cumulative time).
Fan-out: 200 sites x the 4 per-site lists at 50 ms a request (as bench/account.py measures),
the first and a second (no-change) account cycle of one process, each under pyinstrument. The
profiler samples the main thread, where each list is fetched (waiting on the request pool),
parsed and written one after another: the waits show under `fetch`, the writes under
`apply_snapshot`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from account import FANOUT_LATENCY_SECONDS, FANOUT_PER_SITE, FANOUT_SITES, PER_SITE_RESOURCES
from common import (
    CREDENTIALS,
    PYTHON,
    RESULTS,
    Databases,
    EmulatorProcess,
    changed_list,
    child_env,
    migrate_project,
    platform_list,
    workdir,
)

PROFILES = RESULTS / "profiles"


class InlineExecutor(Executor):
    """Runs each submitted call at once, on the caller's thread (the one pyinstrument samples)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)
        return future


def profile_one_cycle(db: str, emulator: str, out: str) -> None:
    """Child process: one project cycle under pyinstrument."""
    from pyinstrument import Profiler
    from sync import logs
    from sync.job import run_account
    from sync.resources import PLATFORMS
    from sync.settings import Settings
    from sync.wiring import build_client, build_engine, cycle_options

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        _secrets_dir=None,
        client_id=CREDENTIALS["SYNC_CLIENT_ID"],
        email=CREDENTIALS["SYNC_EMAIL"],
        password=CREDENTIALS["SYNC_PASSWORD"],  # type: ignore[arg-type]
        auth_url=f"{emulator}/oauth/token",
        api_url=f"{emulator}/v4",
        database_url=db,
        max_delete_fraction=1.0,
        resources="platforms",
        rate_limit="0",  # unpaced, as bench/scenario.py runs it
    )
    logs.configure(fmt="text", level="INFO")
    engine = build_engine(settings)
    client = build_client(settings, engine)
    profiler = Profiler(interval=0.0005)
    profiler.start()
    # Inline: run_account runs partner lists on its request pool, and pyinstrument samples
    # only this thread.
    (result,) = run_account(
        engine, client, cycle_options(settings), [PLATFORMS], pool=InlineExecutor()
    )
    profiler.stop()
    engine.dispose()
    if result.status != "success":
        raise SystemExit(f"cycle {result.status}: {result.error}")
    Path(out + ".txt").write_text(profiler.output_text(unicode=True, color=False))
    # Self time per function, libraries included: where the CPU actually goes.
    flat = profiler.output_text(unicode=True, color=False, flat=True, show_all=True)
    Path(out + ".flat.txt").write_text(flat)
    Path(out + ".html").write_text(profiler.output_html())
    assert profiler.last_session is not None
    profiler.last_session.save(out + ".pyisession")  # `pyinstrument --load` re-renders it


def profile_account(db: str, emulator: str, out: str, concurrency: int) -> None:
    """Child process: two account cycles of the per-site lists, each under pyinstrument."""
    from concurrent.futures import ThreadPoolExecutor

    from pyinstrument import Profiler
    from sync import logs
    from sync.job import Upkeep, run_account
    from sync.settings import Settings
    from sync.wiring import build_client, build_engine, cycle_options

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        _secrets_dir=None,
        client_id=CREDENTIALS["SYNC_CLIENT_ID"],
        email=CREDENTIALS["SYNC_EMAIL"],
        password=CREDENTIALS["SYNC_PASSWORD"],  # type: ignore[arg-type]
        auth_url=f"{emulator}/oauth/token",
        api_url=f"{emulator}/v4",
        database_url=db,
        resources=PER_SITE_RESOURCES,
        http_concurrency=concurrency,
        rate_limit="0",  # unpaced: the default budget would hold 200 sites for many minutes
    )
    logs.configure(fmt="text", level="INFO")
    engine = build_engine(settings)
    client = build_client(settings, engine)
    upkeep = Upkeep()
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="fetch")
    for name in ("first", "nochange"):
        profiler = Profiler(interval=0.0005)
        profiler.start()
        results = run_account(
            engine, client, cycle_options(settings), settings.resource_list, upkeep=upkeep,
            pool=pool,
        )  # fmt: skip
        profiler.stop()
        failed = [r for r in results if r.status != "success"]
        if failed:
            raise SystemExit(f"cycle failed: {failed}")
        Path(f"{out}-{name}.txt").write_text(profiler.output_text(unicode=True, color=False))
        Path(f"{out}-{name}.html").write_text(profiler.output_html())
    pool.shutdown()
    engine.dispose()


def profile_fanout(dbs: Databases, backend: str, concurrency: int, cwd: Path) -> None:
    emu = EmulatorProcess(
        "--sites", str(FANOUT_SITES), "--per-site", str(FANOUT_PER_SITE),
        "--latency", str(FANOUT_LATENCY_SECONDS),
    )  # fmt: skip
    try:
        url = dbs.create(backend)
        migrate_project(url)
        out = PROFILES / f"{backend}-fanout-c{concurrency}"
        cmd = [PYTHON, __file__, "_account", "--db", url, "--emulator", emu.url, "--out",
               str(out), "--concurrency", str(concurrency)]  # fmt: skip
        subprocess.run(cmd, env=child_env(), cwd=cwd, check=True)
        print(f"wrote {out}-first.txt and {out}-nochange.txt")
        dbs.drop(url)
    finally:
        emu.stop()


def profile_cycles(dbs: Databases, emu: EmulatorProcess, n: int, backend: str, cwd: Path) -> None:
    url = dbs.create(backend)
    migrate_project(url)
    lists = {"first": platform_list(n), "changed": changed_list(n)}
    lists["nochange"] = lists["changed"]
    for phase, objects in lists.items():
        emu.set_platforms(objects)
        out = PROFILES / f"{backend}-{n}-{phase}"
        cmd = [PYTHON, __file__, "_cycle", "--db", url, "--emulator", emu.url, "--out", str(out)]
        subprocess.run(cmd, env=child_env(), cwd=cwd, check=True)
        print(f"wrote {out}.txt")
    dbs.drop(url)


def profile_cold(dbs: Databases, emu: EmulatorProcess, cwd: Path) -> None:
    emu.set_platforms(platform_list(3))
    url = dbs.create("sqlite")
    migrate_project(url)
    env = child_env(
        **CREDENTIALS,
        SYNC_AUTH_URL=emu.auth_url,
        SYNC_API_URL=emu.api_url,
        SYNC_DATABASE_URL=url,
        SYNC_ENV_FILE="",
        SYNC_SECRETS_DIR=str(cwd / "no-secrets"),
    )
    subprocess.run([PYTHON, "-m", "sync", "once"], env=env, cwd=cwd, check=True)  # populate
    out = PROFILES / "cold-once.txt"
    subprocess.run(
        [
            PYTHON,
            "-m",
            "pyinstrument",
            "-i",
            "0.0002",
            "-r",
            "text",
            "-o",
            str(out),
            "-m",
            "sync",
            "once",
        ],
        env=env,
        cwd=cwd,
        check=True,
    )
    print(f"wrote {out}")
    proc = subprocess.run(
        [PYTHON, "-X", "importtime", "-m", "sync", "once"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[0].strip().isdigit():
            rows.append((int(parts[1]), int(parts[0]), parts[2].rstrip()))
    rows.sort(reverse=True)
    text = ["cumulative_us  self_us  module (sorted by cumulative)"]
    text += [f"{cum:>13}  {own:>7}  {name}" for cum, own, name in rows]
    (PROFILES / "importtime.txt").write_text("\n".join(text) + "\n")
    print(f"wrote {PROFILES / 'importtime.txt'}")
    dbs.drop(url)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("_cycle", "_account"):
        child = argparse.ArgumentParser()
        child.add_argument("mode")
        child.add_argument("--db", required=True)
        child.add_argument("--emulator", required=True)
        child.add_argument("--out", required=True)
        child.add_argument("--concurrency", type=int, default=4)
        args = child.parse_args()
        if args.mode == "_cycle":
            profile_one_cycle(args.db, args.emulator, args.out)
        else:
            profile_account(args.db, args.emulator, args.out, args.concurrency)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql", "mariadb"))
    parser.add_argument("--only", choices=("cycles", "cold", "fanout"))
    parser.add_argument("--concurrency", type=int, default=4, help="fan-out: request workers")
    args = parser.parse_args()
    PROFILES.mkdir(parents=True, exist_ok=True)
    dbs = Databases()
    emu = EmulatorProcess()
    try:
        with workdir() as cwd:
            if args.only in (None, "cycles"):
                for backend in args.backend or ["postgresql"]:
                    profile_cycles(dbs, emu, args.n, backend, cwd)
            if args.only in (None, "cold"):
                profile_cold(dbs, emu, cwd)
            if args.only == "fanout":
                for backend in args.backend or ["postgresql"]:
                    profile_fanout(dbs, backend, args.concurrency, cwd)
    finally:
        emu.stop()
        dbs.drop_all()


if __name__ == "__main__":
    main()
