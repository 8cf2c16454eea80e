"""deploy/Dockerfile: its install steps, replayed without Docker, and what the image promises.

No container engine runs on the development and CI machines, so the image itself is never built
here. Instead the builder's COPY lines make a build context, its `pip wheel` builds the wheel, and
the runtime stage's `pip --python … install` puts it into a fresh pip-less virtual environment,
dependencies from the index as binary wheels only; then the installed command must work.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import dockerfile
import pytest

from sync import __version__

from .conftest import DEPLOY, REPO

DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# The commands the test replays; the Dockerfile must still say exactly this.
BUILD_WHEEL = "python -m pip wheel --no-deps --wheel-dir /wheels ."
MAKE_VENV = "python -m venv --without-pip /opt/comm100-sync"
INSTALL = (
    "python -m pip --python /opt/comm100-sync/bin/python install "
    "--no-cache-dir --disable-pip-version-check --only-binary=:all: "
    '"$(echo /wheels/comm100_sync-*.whl)[postgresql,mysql,otel]"'
)
PIP_TIMEOUT_SECONDS = 600
CLI_TIMEOUT_SECONDS = 60


def stages() -> list[list[dockerfile.Command]]:
    """Instructions of each stage, as Docker's own parser reads them (via `dockerfile`)."""
    found: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            found.append([])
        if found:
            found[-1].append(command)
    return found


def instructions(stage: list[dockerfile.Command], keyword: str) -> list[dockerfile.Command]:
    return [command for command in stage if command.cmd == keyword]


def joined(command: dockerfile.Command) -> str:
    """A RUN's shell text with runs of blanks collapsed (continuations are already joined)."""
    return " ".join(" ".join(command.value).split())


def test_dockerfile_is_multi_stage_and_installs_only_the_built_wheel() -> None:
    builder, runtime = stages()

    assert builder[0].value[1:] == ("AS", "builder")
    assert "-slim" in builder[0].value[0] and "-slim" in runtime[0].value[0]
    assert BUILD_WHEEL in [joined(run) for run in instructions(builder, "RUN")]
    (install,) = instructions(runtime, "RUN")
    assert install.flags == ("--mount=type=bind,from=builder,source=/wheels,target=/wheels",)
    assert MAKE_VENV in joined(install) and INSTALL in joined(install)
    # Nothing of the source tree reaches the final stage, and no compiler is installed there.
    assert instructions(runtime, "COPY") == []
    assert not re.search(r"apt-get|gcc|build-essential", joined(install))


def test_dockerfile_runs_as_a_numeric_non_root_user_with_writable_tmp() -> None:
    _builder, runtime = stages()
    (user,) = instructions(runtime, "USER")
    env = dict(zip(*[iter(instructions(runtime, "ENV")[0].value)] * 2, strict=True))

    uid = user.value[0].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"
    assert instructions(runtime, "ENTRYPOINT")[0].value == ("comm100-sync",)
    assert instructions(runtime, "ENTRYPOINT")[0].json
    assert instructions(runtime, "CMD")[0].value == ("run",)


def test_dockerfile_labels_and_bakes_in_no_secret() -> None:
    _builder, runtime = stages()
    (label,) = instructions(runtime, "LABEL")
    labels = set(label.value[::2])

    assert {
        "org.opencontainers.image.title",
        "org.opencontainers.image.description",
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.created",
        "org.opencontainers.image.source",
        "org.opencontainers.image.licenses",
    } <= labels
    for stage in stages():
        for keyword in ("ENV", "ARG"):
            for command in instructions(stage, keyword):
                for word in command.value:
                    assert not re.search(r"PASSWORD|SECRET|TOKEN|SYNC_", word, re.I), word


def test_dockerignore_keeps_out_environment_files_and_databases() -> None:
    patterns = DOCKERIGNORE.read_text().split()

    assert patterns[patterns.index("*") :][:1] == ["*"], "start from nothing, then allow"
    for needed in ("!pyproject.toml", "!README.md", "!sync/", "!migrations/"):
        assert needed in patterns
    assert "**/.env" in patterns and "**/*.db" in patterns


def build_context(tmp_path: Path) -> Path:
    """What the builder stage's COPY lines put in /src, taken from this checkout."""
    builder = stages()[0]
    context = tmp_path / "src"
    context.mkdir()
    for copy in instructions(builder, "COPY"):
        *sources, _destination = copy.value
        for source in sources:
            origin = REPO / source
            target = context / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, target)
    return context


def run(
    command: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.slow
@pytest.mark.needs_index  # the runtime stage installs the dependencies from the index
def test_dockerfile_install_steps_give_a_working_command(tmp_path: Path) -> None:
    """Build the wheel, install it into a fresh venv, run --help and migrate a SQLite file."""
    context = build_context(tmp_path)
    wheels, venv, work = tmp_path / "wheels", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    pip = [sys.executable, "-m", "pip"]

    built = run(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), "."],
        cwd=context,
        timeout=PIP_TIMEOUT_SECONDS,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = wheels.glob("comm100_sync-*.whl")
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work, timeout=120)
    assert made.returncode == 0, made.stderr
    installed = run(
        [
            *pip,
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            f"{wheel}[postgresql,mysql,otel]",
        ],
        cwd=work,
        timeout=PIP_TIMEOUT_SECONDS,
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert not (venv / "bin" / "pip").exists()

    # As in the image: HOME and TMPDIR on a scratch directory, no checkout in sight.
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "SYNC_ENV_FILE": "",
        "SYNC_SECRETS_DIR": os.environ["SYNC_SECRETS_DIR"],
    }
    command = str(venv / "bin" / "comm100-sync")
    helped = run([command, "--help"], cwd=work, env=env, timeout=CLI_TIMEOUT_SECONDS)
    assert helped.returncode == 0, helped.stderr
    for name in ("once", "run", "migrate", "status", "emulator", "demo"):
        assert name in helped.stdout
    version = run([command, "--version"], cwd=work, env=env, timeout=CLI_TIMEOUT_SECONDS)
    assert version.stdout.split() == ["comm100-sync", __version__]

    # The migrations travel inside the wheel, views included.
    database = work / "image.db"
    migrated = run(
        [command, "migrate"],
        cwd=work,
        env={**env, "SYNC_DATABASE_URL": f"sqlite:///{database}"},
        timeout=CLI_TIMEOUT_SECONDS,
    )
    assert migrated.returncode == 0, migrated.stderr
    with closing(sqlite3.connect(database)) as conn:
        query = "SELECT name FROM sqlite_master WHERE type = 'view'"
        views = {name for (name,) in conn.execute(query)}
    assert {"platforms_current", "platform_history", "sites_current", "all_changes"} <= views

    # Both drivers and OpenTelemetry are in the image (extras): one image serves PostgreSQL and
    # MariaDB, and traces where an OTLP endpoint is injected.
    drivers = run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import psycopg, pymysql, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http",
        ],
        cwd=work,
        env=env,
        timeout=CLI_TIMEOUT_SECONDS,
    )
    assert drivers.returncode == 0, drivers.stderr
