"""A real Prometheus (Debian's `prometheus`, the package that brings promtool) scrapes a live
`comm100-sync run` loop against the emulator and evaluates the shipped rules: the target is up,
every rule loads and evaluates healthy, every dashboard query runs, and a failing API and a
paused account show in the series the rules use. Everything listens on 127.0.0.1."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from sync import __version__
from sync.emulator import DEFAULT_PARTNER_ID, Emulator, Fault
from tests.e2e.helpers import Process, free_port, running, wait_until

from .conftest import require_tool
from .test_monitoring import ALERTS, DASHBOARD, alert_rules, dashboard_expressions

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EnvBuilder = Callable[..., dict[str, str]]
JOB = "comm100-sync"  # what the shipped `up{job=~"comm100-sync.*"}` selectors expect
STARTUP_SECONDS = 30
STOP_SECONDS = 10
# Grafana's variables with our job and every instance selected.
DASHBOARD_VARIABLES = {"$job": JOB, "$instance": ".*", "$__rate_interval": "1m"}


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful /api/v1 answer; fails the test on an error or warnings."""
        answer = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", body
        assert not body.get("warnings"), body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The one sample `expr` selects now, or None when it selects nothing."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited {self.process.returncode}: {self.tail()}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Loop:
    process: Process
    metrics_port: int


def livez(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/livez", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture
def prometheus_binary() -> str:
    return require_tool("prometheus", "Debian package prometheus")


@pytest.fixture
def loop(sync_env: EnvBuilder, tmp_path: Path) -> Iterator[Loop]:
    """`comm100-sync run` on SQLite with metrics on 127.0.0.1, a cycle every half second."""
    port = free_port()
    env = sync_env(
        f"sqlite:///{tmp_path / 'sync.db'}",
        SYNC_INTERVAL_SECONDS="0.5",
        # Stale after 3 s without a success: the stale-data rule can go pending within the test.
        SYNC_HEALTH_MAX_AGE_SECONDS="3",
        SYNC_METRICS_PORT=str(port),
        SYNC_METRICS_HOST="127.0.0.1",
        # Known partner: the cycle counters exist at 0 from the start, as in production.
        SYNC_PARTNER_ID=DEFAULT_PARTNER_ID,
        SYNC_HTTP_RETRIES="0",
    )
    with running(env) as process:
        # /livez answers once the scheduler runs, after the SIGTERM handler is in place.
        wait_until(lambda: livez(port), STARTUP_SECONDS, "the loop's /livez")
        yield Loop(process, port)
        code, _ = process.stop()
        assert code == 0, process.stderr


@pytest.fixture
def prometheus(prometheus_binary: str, loop: Loop, tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus scraping the loop every second and evaluating deploy/monitoring/alerts.yaml.

    Local only: no Alertmanager, no remote read or write, storage in tmp_path."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": JOB,
                        "static_configs": [{"targets": [f"127.0.0.1:{loop.metrics_port}"]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                prometheus_binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until(server.ready, STARTUP_SECONDS, "prometheus to be ready")
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def show(label: str, data: object) -> None:
    """Print what Prometheus answered: pytest shows it on failure, or with -rP."""
    print(f"{label}: {json.dumps(data, sort_keys=True)}")


def the_target(prometheus: Prometheus) -> dict[str, Any]:
    """The one scrape target; {} until service discovery has handed it to the scraper."""
    targets = prometheus.api("targets", state="active")["activeTargets"]
    assert len(targets) <= 1, targets
    return dict(targets[0]) if targets else {}


def shipped_rules(prometheus: Prometheus) -> dict[str, dict[str, Any]]:
    loaded = prometheus.api("rules")["groups"]
    return {rule["name"]: rule for group in loaded for rule in group["rules"]}


def evaluated_at(rule: dict[str, Any]) -> float:
    """Unix time of the rule's last evaluation (RFC 3339 with nanoseconds; year 1: never)."""
    match = re.fullmatch(r"([^.]+?)(\.\d+)?(Z|[+-]\d\d:\d\d)", rule["lastEvaluation"])
    assert match, rule["lastEvaluation"]
    whole, fraction, zone = match.groups()
    text = whole + (fraction or "")[:7] + ("+00:00" if zone == "Z" else zone)
    return datetime.fromisoformat(text).timestamp()


# --------------------------------------------------------------------------- the phases
# One Prometheus for all of them: it hands a new target to its scraper only after about 5 s.

PLATFORMS = f'job="{JOB}",resource="platforms"'
FAILED = f'comm100_sync_cycles_total{{status="failed",{PLATFORMS}}}'
LAST_SUCCESS = f"comm100_sync_last_success_timestamp_seconds{{{PLATFORMS}}}"
# Comm100SyncCyclesFailing's first half.
FAILING = (
    "sum by (job, partner_id, resource) (increase(comm100_sync_cycles_total"
    f'{{status=~"failed|partial",{PLATFORMS}}}[30m])) > 0'
)
STALE_ALERT = 'ALERTS{alertname="Comm100SyncLastSuccessTooOld",resource="platforms"}'
PAUSED = f'comm100_sync_auth_paused{{job="{JOB}",account="default"}}'
NEXT_ATTEMPT = f'comm100_sync_auth_next_attempt_timestamp_seconds{{job="{JOB}",account="default"}}'


def target_is_up(prometheus: Prometheus, loop: Loop) -> None:
    wait_until(lambda: the_target(prometheus).get("health") == "up", 20, "the target to be up")
    target = the_target(prometheus)
    show("target", {k: target[k] for k in ("health", "lastError", "scrapeUrl", "labels")})
    assert target["lastError"] == ""
    assert target["scrapeUrl"] == f"http://127.0.0.1:{loop.metrics_port}/metrics"
    assert target["labels"]["job"] == JOB
    assert prometheus.value(f'up{{job="{JOB}"}}') == 1
    (info,) = prometheus.query(f'comm100_sync_build_info{{job="{JOB}"}}')
    assert info["metric"]["version"] == __version__


def every_rule_evaluates_healthy(prometheus: Prometheus) -> None:
    # Rules evaluated before the first scrape saw no series at all (absent() was true then).
    scraped_at = time.time()
    wait_until(
        lambda: all(evaluated_at(r) > scraped_at for r in shipped_rules(prometheus).values()),
        20,
        "every rule to be evaluated after the first scrape",
    )
    rules = shipped_rules(prometheus)
    show(
        "rules", {name: [r["health"], r.get("lastError", "")] for name, r in sorted(rules.items())}
    )
    assert set(rules) == {rule["alert"] for rule in alert_rules()}
    for name, rule in rules.items():
        assert (rule["health"], rule.get("lastError", "")) == ("ok", ""), name
    # A healthy loop with a recent success trips none of them, not even to pending.
    assert prometheus.api("alerts")["alerts"] == []


def every_dashboard_query_runs(prometheus: Prometheus) -> None:
    # A few scrapes, so that rate() and increase() have two samples to compare.
    wait_until(
        lambda: (prometheus.value(f'count_over_time(up{{job="{JOB}"}}[1m])') or 0) >= 3,
        20,
        "three scrapes",
    )
    answered = {}
    for expr in dashboard_expressions(json.loads(DASHBOARD.read_text())):
        for variable, value in DASHBOARD_VARIABLES.items():
            expr = expr.replace(variable, value)
        answered[expr] = len(prometheus.query(expr))  # fails on an error or a warning
    show("dashboard queries (series each)", answered)
    assert all(answered.values()), [expr for expr, n in answered.items() if not n]


def last_success_moves(prometheus: Prometheus) -> None:
    first = prometheus.value(LAST_SUCCESS)
    wait_until(lambda: prometheus.value(LAST_SUCCESS) != first, 20, "the last success to move")


def a_failing_api_shows(prometheus: Prometheus, loop: Loop, emulator: Emulator) -> None:
    last_success_moves(prometheus)
    assert prometheus.value(FAILED) == 0
    assert prometheus.query(FAILING) == []

    emulator.inject("platforms", Fault(kind="status", status=500), times=None)
    wait_until(lambda: prometheus.query(FAILING) != [], 20, "failed cycles in Prometheus")
    stale, seen = prometheus.value(LAST_SUCCESS), prometheus.value(FAILED)
    seen_at = time.time()
    assert stale is not None and seen is not None
    # Two more failed cycles scraped, and the last success has not moved.
    wait_until(lambda: (prometheus.value(FAILED) or 0) >= seen + 2, 20, "more failed cycles")
    age = prometheus.value(f"time() - {LAST_SUCCESS}")
    show(
        "failing API",
        {
            FAILING: prometheus.query(FAILING),
            FAILED: prometheus.value(FAILED),
            LAST_SUCCESS: prometheus.value(LAST_SUCCESS),
            f"time() - {LAST_SUCCESS}": age,
        },
    )
    assert prometheus.value(LAST_SUCCESS) == stale < seen_at
    assert age is not None and age > seen_at - stale
    assert "HTTP 500" in loop.process.stderr
    # Older than its stale age (SYNC_HEALTH_MAX_AGE_SECONDS, exported per list): the rule trips.
    wait_until(lambda: prometheus.query(STALE_ALERT) != [], 20, "the stale-data alert")
    (pending,) = prometheus.query(STALE_ALERT)
    show("stale data", pending["metric"])
    assert pending["metric"]["partner_id"] == DEFAULT_PARTNER_ID
    assert pending["metric"]["alertstate"] == "pending"


def a_paused_account_shows_and_its_alert_goes_pending(
    prometheus: Prometheus, loop: Loop, emulator: Emulator
) -> None:
    alert = 'ALERTS{alertname="Comm100SyncAuthPaused",account="default"}'
    assert prometheus.value(PAUSED) == 0
    assert prometheus.query(alert) == []

    # The partner changed the password in Comm100's portal, which revokes every token.
    emulator.set_password("changed-in-the-portal")
    emulator.revoke_tokens()
    emulator.revoke_refresh_tokens()

    wait_until(lambda: prometheus.value(PAUSED) == 1, 20, "the pause gauge at 1")
    wait_until(lambda: prometheus.query(alert) != [], 20, "the alert to be pending")
    (pending,) = prometheus.query(alert)
    alerts = prometheus.api("alerts")["alerts"]
    show(
        "paused account",
        {
            PAUSED: prometheus.value(PAUSED),
            NEXT_ATTEMPT: prometheus.value(NEXT_ATTEMPT),
            alert: pending["metric"],
        },
    )
    assert pending["metric"]["alertstate"] == "pending"  # its `for` has not passed yet
    assert pending["metric"]["severity"] == "critical"
    # The paused account syncs nothing, so its lists may be going stale too; nothing else.
    names = {a["labels"]["alertname"] for a in alerts}
    assert "Comm100SyncAuthPaused" in names
    assert names <= {"Comm100SyncAuthPaused", "Comm100SyncLastSuccessTooOld"}
    assert (prometheus.value(NEXT_ATTEMPT) or 0) > 0
    assert "invalid_grant" in loop.process.stderr


def test_prometheus_scrapes_a_live_loop_whose_failures_show_in_the_shipped_rules(
    prometheus: Prometheus, loop: Loop, emulator: Emulator
) -> None:
    target_is_up(prometheus, loop)
    every_rule_evaluates_healthy(prometheus)
    every_dashboard_query_runs(prometheus)
    a_failing_api_shows(prometheus, loop, emulator)

    emulator.clear_faults()
    last_success_moves(prometheus)  # healed
    wait_until(lambda: prometheus.query(STALE_ALERT) == [], 20, "the stale-data alert to clear")
    a_paused_account_shows_and_its_alert_goes_pending(prometheus, loop, emulator)
