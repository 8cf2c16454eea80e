"""deploy/systemd: units that systemd-analyze accepts, credentials where the settings read them,
restarts that stop on permanent failures, and the sandbox."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sync import errors
from sync.settings import Settings

from .conftest import SYSTEMD

LOOP = SYSTEMD / "comm100-sync.service"
ONCE = SYSTEMD / "comm100-sync-once.service"
TIMER = SYSTEMD / "comm100-sync.timer"
ENV_EXAMPLE = SYSTEMD / "env.example"
SERVICES = (LOOP, ONCE)
INSTALLED_BINARY = "/opt/comm100-sync/bin/comm100-sync"
# `systemd-analyze security` scores 0 (locked down) to 10; the units score 1.4 ("OK").
MAX_EXPOSURE = 2.0
SANDBOX = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallArchitectures": "native",
}
SYSTEMD_ANALYZE_TIMEOUT_SECONDS = 60

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """section → key → values, in order. configparser cannot: systemd keys repeat."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and section is not None, f"{path.name}:{number}: not a directive: {raw!r}"
        assert not line.endswith("\\"), f"{path.name}:{number}: continuation lines not expected"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def last(unit: Unit, section: str, key: str) -> str:
    return unit[section][key][-1]


@pytest.fixture
def analysable_units(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointing at this environment's comm100-sync.

    systemd-analyze verify checks that the binary exists; the units name the path README's
    install step creates (/opt/comm100-sync), which this machine does not have.
    """
    binary = shutil.which("comm100-sync") or str(Path(sys.executable).with_name("comm100-sync"))
    assert Path(binary).is_file()
    copies = []
    for path in (*SERVICES, TIMER):
        copy = tmp_path / path.name
        copy.write_text(path.read_text().replace(INSTALLED_BINARY, binary))
        copies.append(copy)
    return copies


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed: the directive checks below still run")
    return subprocess.run(
        [tool, *args],
        capture_output=True,
        text=True,
        timeout=SYSTEMD_ANALYZE_TIMEOUT_SECONDS,
        check=False,
    )


def test_systemd_analyze_verify_accepts_the_units(analysable_units: list[Path]) -> None:
    """Unknown keys and bad values are only warnings to verify: any output is a failure here."""
    verified = systemd_analyze("verify", *map(str, analysable_units))

    assert verified.returncode == 0, verified.stderr
    assert verified.stderr.strip() == ""
    assert verified.stdout.strip() == ""


def test_systemd_analyze_verify_reports_a_broken_unit(
    analysable_units: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.service"
    broken.write_text(analysable_units[0].read_text() + "\n[Service]\nProtectSystem=bananas\n")

    verified = systemd_analyze("verify", str(broken))

    assert "bananas" in verified.stderr


@pytest.mark.parametrize("name", [p.name for p in SERVICES])
def test_service_exposure_is_low(analysable_units: list[Path], name: str) -> None:
    (unit,) = [p for p in analysable_units if p.name == name]

    scored = systemd_analyze(
        "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", str(unit)
    )

    assert scored.returncode == 0, scored.stdout[-2000:] + scored.stderr


def test_loop_service_runs_the_loop_and_stops_restarting_on_permanent_failures() -> None:
    unit = parse_unit(LOOP)
    permanent = {errors.EX_DATAERR, errors.EX_NOPERM, errors.EX_CONFIG}

    assert last(unit, "Service", "ExecStart") == f"{INSTALLED_BINARY} run"
    assert last(unit, "Service", "Restart") == "on-failure"
    assert {int(code) for code in last(unit, "Service", "RestartPreventExitStatus").split()} == (
        permanent
    )
    assert last(unit, "Install", "WantedBy") == "multi-user.target"


def test_oneshot_service_and_timer_run_one_cycle_on_a_schedule() -> None:
    once, timer = parse_unit(ONCE), parse_unit(TIMER)

    assert last(once, "Service", "Type") == "oneshot"
    assert last(once, "Service", "ExecStart") == f"{INSTALLED_BINARY} once"
    assert "Install" not in once, "the timer starts it; enabling it alone would run it at boot"
    assert last(timer, "Timer", "Unit") == ONCE.name
    assert last(timer, "Timer", "OnCalendar")
    assert last(timer, "Install", "WantedBy") == "timers.target"


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_service_reads_settings_from_the_env_file_and_the_password_as_a_credential(
    path: Path,
) -> None:
    """systemd puts LoadCredential= files in $CREDENTIALS_DIRECTORY, which the settings read."""
    service = parse_unit(path)["Service"]
    credentials = dict(value.split(":", 1) for value in service["LoadCredential"])

    assert service["EnvironmentFile"] == ["/etc/comm100-sync/env"]
    assert credentials == {"SYNC_PASSWORD": "/etc/comm100-sync/password"}
    assert not any("PASSWORD" in value for value in service.get("Environment", []))
    assert last(parse_unit(path), "Service", "StateDirectory") == "comm100-sync"
    assert last(parse_unit(path), "Service", "WorkingDirectory") == "/var/lib/comm100-sync"


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_service_is_sandboxed(path: Path) -> None:
    service = parse_unit(path)["Service"]

    assert {key: service[key][-1] for key in SANDBOX if key in service} == SANDBOX
    assert service["SystemCallFilter"][0] == "@system-service"
    assert last(parse_unit(path), "Service", "MemoryMax") == "256M"


def test_env_example_sets_known_settings_and_no_password() -> None:
    fields = {f"SYNC_{name.upper()}" for name in Settings.model_fields}
    keys = [
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    assert keys
    assert set(keys) <= fields
    assert "SYNC_PASSWORD" not in keys
    assert "sqlite:////var/lib/comm100-sync/" in ENV_EXAMPLE.read_text()
