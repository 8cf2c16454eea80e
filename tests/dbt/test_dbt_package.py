"""deploy/dbt installed as a package of a user's dbt project, run by dbt-postgres against a
PostgreSQL database filled by real cycles against the emulator: `dbt deps`, `dbt build` (every
source test and both staging models) and `dbt source freshness` (fresh, warn and error lists).

dbt lives in an environment of its own (deploy/dbt/requirements.txt, in .venv-dbt or
SYNC_TEST_DBT_VENV, which `make test` builds beside .venv and this module builds itself when it is
missing or stale): installed beside the test extras, its pin pathspec<0.13 would hold mypy back at
1.x, which fails `make typecheck`. dbt runs with its usage statistics and version check off, and
without dbt hub packages: it reaches nothing but 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from sync.emulator import Emulator
from sync.job import run_account
from sync.migrate import upgrade
from sync.resources import REGISTRY, in_sync_order
from sync.schema import ACTIONS
from sync.wiring import build_client, build_engine, cycle_options
from tests.conftest import POSTGRES_ADMIN_URL, REPO, DatabaseServer, _unavailable, settings_for

from .sources import PROJECT

pytestmark = [pytest.mark.db, pytest.mark.slow]

REQUIREMENTS = PROJECT / "requirements.txt"
DBT_VENV = Path(os.environ.get("SYNC_TEST_DBT_VENV", REPO / ".venv-dbt"))
INSTALL_TIMEOUT_SECONDS = 600
DBT_TIMEOUT_SECONDS = 180
# The lists' first cycle ran this long ago; the partner lists ran again since.
AGE = timedelta(hours=2)
PARTNER_LISTS = ("platforms", "sites", "products", "plans")
# What the user's project says: every list but site_products is synced, agents hourly, roles
# every half hour, the rest every 300 s. Two hours without a success is then fine for agents
# (warn after 3 h), a warning for roles (1.5 h) and an error for departments (30 min).
USER_VARS = {
    "comm100_sync_resources": [name for name in REGISTRY if name != "site_products"],
    "comm100_sync_resource_intervals": {"agents": 3600, "roles": 1800},
}
EXPECTED_FRESHNESS = {
    **{name: "pass" for name in PARTNER_LISTS},
    "agents": "pass",
    "roles": "warn",
    "departments": "error",
}
OPEN_SITE, SUSPENDED_SITE = 10001, 10002
SCHEMA = "analytics"


# --------------------------------------------------------------------------- dbt itself


def _outside_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing of this checkout's venv or settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYNC_", "PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV", "DBT_"))
    }
    env.update(extra)
    return env


def dbt_environment() -> Path:
    """bin/dbt of the environment built from deploy/dbt/requirements.txt (built if missing)."""
    wanted = REQUIREMENTS.read_text(encoding="utf-8")
    stamp = DBT_VENV / "requirements.txt"
    dbt = DBT_VENV / "bin" / "dbt"
    DBT_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{DBT_VENV}.lock", "w") as lock:  # two sessions never build it at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if dbt.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
            return dbt
        shutil.rmtree(DBT_VENV, ignore_errors=True)
        for command in (
            [sys.executable, "-m", "venv", str(DBT_VENV)],
            [str(DBT_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r",
             str(REQUIREMENTS)],
        ):  # fmt: skip
            done = subprocess.run(
                command,
                env=_outside_env(),
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_SECONDS,
                check=False,
            )
            assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
        stamp.write_text(wanted, encoding="utf-8")
    return dbt


@dataclass
class DbtProject:
    """A user's dbt project in a temporary folder, with deploy/dbt as a local package."""

    folder: Path
    dbt: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.dbt), *args, "--profiles-dir", str(self.folder), "--no-use-colors"],
            cwd=self.folder,
            env=_outside_env(
                # No usage statistics, no version check: dbt reaches nothing but the database.
                DBT_SEND_ANONYMOUS_USAGE_STATS="false",
                DO_NOT_TRACK="1",
                DBT_VERSION_CHECK="false",
            ),
            capture_output=True,
            text=True,
            timeout=DBT_TIMEOUT_SECONDS,
            check=False,
        )

    def artifact(self, name: str) -> Any:
        return json.loads((self.folder / "target" / name).read_text(encoding="utf-8"))


def write_project(folder: Path, dbt: Path, databases: dict[str, str]) -> DbtProject:
    """The three things a user writes (packages.yml, vars, a profile) around a copy of deploy/dbt:
    dbt writes target/ and logs/ into the folders it runs in."""
    package = folder / "comm100_sync_package"
    shutil.copytree(PROJECT, package, ignore=shutil.ignore_patterns("target", "logs",
                                                                   "dbt_packages"))  # fmt: skip
    user = folder / "bi"
    user.mkdir()
    project = {
        "name": "bi",
        "version": "1.0.0",
        "config-version": 2,
        "profile": "bi",
        "vars": USER_VARS,
    }
    (user / "dbt_project.yml").write_text(yaml.safe_dump(project), encoding="utf-8")
    packages = {"packages": [{"local": str(package)}]}
    (user / "packages.yml").write_text(yaml.safe_dump(packages), encoding="utf-8")
    server = sa.engine.make_url(POSTGRES_ADMIN_URL)
    outputs = {
        target: {
            "type": "postgres",
            "host": server.host or "127.0.0.1",
            "port": server.port or 5432,
            "user": server.username or "postgres",
            "password": server.password or "",
            "dbname": database,
            "schema": SCHEMA,
            "threads": 4,
        }
        for target, database in databases.items()
    }
    profiles = {"bi": {"target": "filled", "outputs": outputs}}
    (user / "profiles.yml").write_text(yaml.safe_dump(profiles), encoding="utf-8")
    return DbtProject(user, dbt)


# --------------------------------------------------------------------------- the database


@dataclass
class Filled:
    """A PostgreSQL database filled by real cycles, and what the cycles were given."""

    url: str
    database: str
    server: DatabaseServer
    platforms: list[dict[str, Any]]
    sites: list[dict[str, Any]]

    def query(self, sql: str, **params: Any) -> list[Any]:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.text(sql), params))
        finally:
            engine.dispose()


def fill(url: str, emulator: Emulator) -> None:
    """Every list synced two hours ago; then the partner lists again, now, three times: a
    platform renamed and one removed, a site suspended and another moved to the renamed one; the
    platform back and the site open again; and a cycle that changes nothing."""
    settings = settings_for(emulator, url, resources=",".join(REGISTRY), http_retries=2)
    engine = build_engine(settings)
    client = build_client(settings, engine)

    def cycle(names: tuple[str, ...], now: Callable[[], datetime]) -> None:
        results = run_account(
            engine, client, cycle_options(settings), list(in_sync_order(names)), now=now
        )
        assert [r.status for r in results] == ["success"] * len(names), [r.error for r in results]

    def site(site_id: int, **changes: Any) -> list[dict[str, Any]]:
        return [s | changes if s["id"] == site_id else s for s in emulator.get_list("sites")]

    try:
        cycle(tuple(REGISTRY), lambda: datetime.now(UTC) - AGE)
        platforms = emulator.platforms
        us, eu, au = platforms
        emulator.set_platforms([us, eu | {"name": "Europe"}])
        emulator.set_sites(site(OPEN_SITE, status="Suspended"))
        emulator.set_sites(site(SUSPENDED_SITE, platformId=eu["id"]))
        cycle(PARTNER_LISTS, lambda: datetime.now(UTC))
        emulator.set_platforms([us, eu | {"name": "Europe"}, au])
        emulator.set_sites(site(OPEN_SITE, status="Open"))
        cycle(PARTNER_LISTS, lambda: datetime.now(UTC))
        cycle(PARTNER_LISTS, lambda: datetime.now(UTC))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def filled(database_servers: dict[str, Any]) -> Iterator[Filled]:
    server = database_servers["postgresql"]
    if isinstance(server, Exception):
        _unavailable("postgresql", server)
    assert isinstance(server, DatabaseServer)
    url = server.create()
    engine = sa.create_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    with Emulator(rate_limit=None) as emulator:
        fill(url, emulator)
        yield Filled(
            url,
            str(sa.engine.make_url(url).database),
            server,
            emulator.platforms,
            emulator.get_list("sites"),
        )


@pytest.fixture(scope="module")
def scratch(filled: Filled) -> str:
    """A copy of the filled database whose platform_audit lets a bad action in."""
    name = f"c100sync_{uuid.uuid4().hex[:12]}"
    assert filled.server.admin_url is not None
    admin = sa.create_engine(filled.server.admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{filled.database}"')
    finally:
        admin.dispose()
    filled.server.created.append(name)
    url = sa.engine.make_url(filled.url).set(database=name)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "ALTER TABLE platform_audit DROP CONSTRAINT ck_platform_audit_action"
            )
            conn.exec_driver_sql(
                "UPDATE platform_audit SET action = 'renamed' WHERE id = (SELECT min(id) FROM "
                "platform_audit WHERE action = 'update')"
            )
    finally:
        engine.dispose()
    return name


@pytest.fixture(scope="module")
def project(filled: Filled, scratch: str, tmp_path_factory: pytest.TempPathFactory) -> DbtProject:
    dbt = dbt_environment()
    return write_project(
        tmp_path_factory.mktemp("dbt"), dbt, {"filled": filled.database, "scratch": scratch}
    )


@pytest.fixture(scope="module")
def built(project: DbtProject) -> dict[str, Any]:
    """`dbt deps` then `dbt build`; their output, and run_results.json of the build."""
    deps = project.run("deps")
    assert deps.returncode == 0, deps.stdout + deps.stderr
    build = project.run("build")
    return {"deps": deps, "build": build, "results": project.artifact("run_results.json"),
            "manifest": project.artifact("manifest.json")}  # fmt: skip


@pytest.fixture(scope="module")
def freshness(project: DbtProject, built: dict[str, Any]) -> dict[str, Any]:
    """`dbt source freshness`; its output and sources.json."""
    done = project.run("source", "freshness")
    return {"done": done, "sources": project.artifact("sources.json")}


# --------------------------------------------------------------------------- tests


def test_build_runs_every_source_test_and_both_staging_models(built: dict[str, Any]) -> None:
    build, manifest = built["build"], built["manifest"]
    assert build.returncode == 0, build.stdout + build.stderr

    results = {r["unique_id"]: r for r in built["results"]["results"]}
    assert {r["status"] for r in results.values()} <= {"success", "pass"}, [
        (uid, r["status"], r["message"]) for uid, r in results.items()
        if r["status"] not in ("success", "pass")
    ]  # fmt: skip
    assert results["model.comm100_sync.stg_comm100_sync__sites"]["status"] == "success"
    assert results["model.comm100_sync.stg_comm100_sync__site_status_history"]["status"] == (
        "success"
    )
    # Every source has tests, and each of them ran.
    tested = {
        source
        for uid, node in manifest["nodes"].items()
        if node["resource_type"] == "test" and uid in results
        for source in node["depends_on"]["nodes"]
        if source.startswith("source.")
    }
    assert tested == set(manifest["sources"])
    assert "deprecat" not in build.stdout.lower()


def test_staging_sites_carry_their_platform_names(built: dict[str, Any], filled: Filled) -> None:
    rows = filled.query(
        f"SELECT site_id, status, platform_id, platform_name, platform_is_live "
        f"FROM {SCHEMA}.stg_comm100_sync__sites ORDER BY site_id"
    )

    names = {p["id"]: p["name"] for p in filled.platforms}
    assert [tuple(row) for row in rows] == [
        (s["id"], s["status"], s["platformId"], names[s["platformId"]], True)
        for s in sorted(filled.sites, key=lambda s: s["id"])
    ]
    assert names[rows[1].platform_id] == "Europe"  # the renamed platform, by its new name


def test_site_status_history_merges_versions_of_one_status(
    built: dict[str, Any], filled: Filled
) -> None:
    rows = filled.query(
        f"SELECT site_id, period_number, status, started_by, ended_by, is_current, valid_from, "
        f"valid_to FROM {SCHEMA}.stg_comm100_sync__site_status_history "
        f"WHERE site_id IN (:open, :suspended) ORDER BY site_id, period_number",
        open=OPEN_SITE,
        suspended=SUSPENDED_SITE,
    )

    assert [tuple(row[:6]) for row in rows] == [
        (OPEN_SITE, 1, "Open", "insert", "update", False),
        (OPEN_SITE, 2, "Suspended", "update", "update", False),
        (OPEN_SITE, 3, "Open", "update", None, True),
        # Moved to another platform: a new version in site_history, the same status period.
        (SUSPENDED_SITE, 1, "Suspended", "insert", None, True),
    ]
    assert rows[0].valid_to == rows[1].valid_from and rows[1].valid_to == rows[2].valid_from
    versions = filled.query(
        "SELECT count(*) FROM site_history WHERE site_id = :s", s=SUSPENDED_SITE
    )
    assert versions[0][0] == 2


def test_freshness_says_fresh_stale_and_very_stale_by_each_lists_interval(
    freshness: dict[str, Any], filled: Filled
) -> None:
    done, sources = freshness["done"], freshness["sources"]

    status = {r["unique_id"].rsplit(".", 1)[1]: r["status"] for r in sources["results"]}
    expected = {"sync_runs": "pass"}
    for name, outcome in EXPECTED_FRESHNESS.items():
        resource = REGISTRY[name]
        expected |= {
            table: outcome for table in (name, f"{resource.singular}_audit", f"{name}_current")
        }
    expected |= {"platform_history": "pass", "site_history": "pass"}
    # site_products is not in comm100_sync_resources: no freshness check at all.
    assert status == expected
    assert done.returncode == 1  # an error fails the command
    for line in ("PASS freshness of comm100_sync.platforms ",
                 "WARN freshness of comm100_sync.roles ",
                 "ERROR STALE freshness of comm100_sync.departments "):  # fmt: skip
        assert line in done.stdout, done.stdout


def test_freshness_is_the_last_success_not_the_last_change(
    freshness: dict[str, Any], filled: Filled
) -> None:
    """The last cycle changed nothing: platforms' updated_at stayed, its success counts."""
    result = next(
        r for r in freshness["sources"]["results"]
        if r["unique_id"].endswith(".comm100_sync.platforms")
    )  # fmt: skip
    (last_success,) = filled.query(
        "SELECT max(finished_at) FROM sync_runs WHERE resource = 'platforms' AND status = 'success'"
    )[0]
    (last_change,) = filled.query("SELECT max(updated_at) FROM platforms")[0]

    assert datetime.fromisoformat(result["max_loaded_at"]) == last_success
    assert last_change < last_success
    assert result["criteria"]["warn_after"] == {"count": 15, "period": "minute"}
    assert result["criteria"]["error_after"] == {"count": 30, "period": "minute"}
    agents = next(r for r in freshness["sources"]["results"] if r["unique_id"].endswith(".agents"))
    assert agents["criteria"]["warn_after"] == {"count": 180, "period": "minute"}
    runs = filled.query(
        "SELECT count(*) FROM sync_runs WHERE resource = 'platforms' AND inserted + updated "
        "+ deleted + restored = 0"
    )
    assert runs[0][0] >= 1


def test_a_bad_action_fails_accepted_values(project: DbtProject, built: dict[str, Any]) -> None:
    """dbt's tests can fail: an audit row whose action is not one of the four fails the run."""
    done = project.run(
        "test", "--target", "scratch", "--select", "source:comm100_sync.platform_audit"
    )

    assert done.returncode == 1, done.stdout
    results = project.artifact("run_results.json")["results"]
    failed = {r["unique_id"].split(".")[2]: r["failures"] for r in results if r["status"] == "fail"}
    test = "source_accepted_values_comm100_sync_platform_audit_action__" + "__".join(ACTIONS)
    assert failed == {test: 1}
    assert len(results) > len(failed)  # the others still pass on the same copy
