"""deploy/monitoring: promtool checks and unit-tests the alerts; the dashboard uses our metrics."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from sync.job import RunResult
from sync.metrics import ACTIONS, Metrics

from .conftest import MONITORING, require_tool

ALERTS = MONITORING / "alerts.yaml"
ALERT_TESTS = MONITORING / "alerts.test.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
# Series the rules may use besides ours: the scrape's own `up`, and kube-state-metrics for
# the CronJob, which exports nothing of its own.
FOREIGN_METRICS_IN_RULES = {"up", "kube_cronjob_status_last_successful_time"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GRAFANA_VARIABLES = {"$job": ".*", "$instance": ".*", "$__rate_interval": "5m"}
PROMTOOL_TIMEOUT_SECONDS = 60


def exported_metric_names() -> set[str]:
    """Every series name sync/metrics.py exposes, read from its real exposition."""
    metrics = Metrics()
    counts = {column: 1 for column in ACTIONS} | {"fetched": 1, "unchanged": 0}
    for status in ("success", "failed", "skipped"):
        result = RunResult(status, 1, "p", "platforms", 0.2, counts)
        metrics.observe(result, {"password": 1, "refresh_token": 1}, now=1.0)
    metrics.stale_after.labels("p", "platforms").set(900)  # the loop sets it per list
    families = text_string_to_metric_families(metrics.render().decode())
    return {sample.name for family in families for sample in family.samples}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords and labels left out)."""
    text = expr
    for variable in GRAFANA_VARIABLES:
        text = text.replace(variable, "")
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def test_metric_name_extraction_sees_through_functions_labels_and_grouping() -> None:
    expr = (
        'sum without (status) (increase(foo_total{status="failed", job=~"$job"}[30m])) > 0 '
        "unless on (job) bar unless histogram_quantile(0.95, rate(baz_bucket[$__rate_interval]))"
    )
    assert metric_names(expr) == {"foo_total", "bar", "baz_bucket"}


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions(node: Any) -> Iterator[str]:
    """Every PromQL expression of the dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, str) and value.startswith("label_values("):
                yield re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", value)
            else:
                yield from dashboard_expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_expressions(item)


def promtool_check(promtool: str, rules_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
        check=False,
    )


def test_alert_rules_pass_promtool_check() -> None:
    promtool = require_tool("promtool", "Debian package prometheus")

    checked = promtool_check(promtool, ALERTS)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_promtool_check_rejects_broken_promql(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "Debian package prometheus")
    broken = tmp_path / "broken.yaml"
    broken.write_text("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum(rate(foo[5m])\n")

    assert promtool_check(promtool, broken).returncode != 0


def test_alerts_fire_as_their_unit_tests_expect() -> None:
    """alerts.test.yaml: failing, stale, down, absent, never-succeeded, slow, auth paused,
    CronJob stale."""
    promtool = require_tool("promtool", "Debian package prometheus")

    tested = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
        check=False,
    )

    assert tested.returncode == 0, tested.stdout + tested.stderr
    tested_alerts = {
        case["alertname"]
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert tested_alerts == {rule["alert"] for rule in alert_rules()}


def test_alert_rules_cover_failing_stale_and_down() -> None:
    rules = {rule["alert"]: metric_names(rule["expr"]) for rule in alert_rules()}

    assert "comm100_sync_cycles_total" in rules["Comm100SyncCyclesFailing"]
    assert rules["Comm100SyncLastSuccessTooOld"] == {
        "comm100_sync_last_success_timestamp_seconds",
        "comm100_sync_stale_after_seconds",
    }
    assert rules["Comm100SyncDown"] == {"up"}
    assert rules["Comm100SyncAuthPaused"] == {"comm100_sync_auth_paused"}
    assert "absent(comm100_sync_build_info)" in str(
        {r["alert"]: r["expr"] for r in alert_rules()}["Comm100SyncAbsent"]
    )
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_alert_rules_name_only_metrics_we_export() -> None:
    known = exported_metric_names() | FOREIGN_METRICS_IN_RULES

    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= known, f"{rule['alert']}: unknown {names - known}"


def test_dashboard_is_valid_json_with_unique_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]

    assert dashboard["uid"] == "comm100-sync"
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}


def test_dashboard_names_only_metrics_that_sync_metrics_defines() -> None:
    exported = exported_metric_names()
    expressions = list(dashboard_expressions(json.loads(DASHBOARD.read_text())))

    assert len(expressions) >= 10
    used: set[str] = set()
    for expr in expressions:
        names = metric_names(expr)
        assert names, expr
        assert names <= exported, f"{expr}: unknown {names - exported}"
        used |= names
    # Cycle outcomes, duration, rows changed, last success age.
    assert {
        "comm100_sync_cycles_total",
        "comm100_sync_cycle_duration_seconds_bucket",
        "comm100_sync_rows_changed_total",
        "comm100_sync_last_success_timestamp_seconds",
    } <= used


def test_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    """Each expression, with Grafana's variables filled in, parses as a recording rule."""
    promtool = require_tool("promtool", "Debian package prometheus")
    expressions = list(dashboard_expressions(json.loads(DASHBOARD.read_text())))
    rules = []
    for number, expr in enumerate(expressions):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:expr_{number}", "expr": expr})
    rules_file = tmp_path / "dashboard-rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    checked = promtool_check(promtool, rules_file)

    assert checked.returncode == 0, checked.stdout + checked.stderr
