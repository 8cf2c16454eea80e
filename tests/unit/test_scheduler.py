"""The service's schedule, health verdict and metrics bookkeeping (no sockets, no sleeping)."""

from __future__ import annotations

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client.parser import text_string_to_metric_families

from sync.errors import ConfigError, UnavailableError
from sync.job import RunResult
from sync.metrics import Health, Metrics
from sync.scheduler import _trigger
from sync.settings import Settings, load

from ..conftest import FakeClock


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_CLIENT_ID", "c")
    monkeypatch.setenv("SYNC_EMAIL", "e")
    monkeypatch.setenv("SYNC_PASSWORD", "p")


def result(status: str, **counts: int) -> RunResult:
    error = UnavailableError("GET /v4/global/platforms: HTTP 503") if status == "failed" else None
    return RunResult(status, 1, "10000", "platforms", 0.05, counts, error)


@pytest.mark.parametrize(("interval", "tick"), [("90", 5), ("2", 2), ("0.3", 0.3)])
def test_the_loop_looks_for_due_work_every_few_seconds_or_every_interval(
    credentials: None, monkeypatch: pytest.MonkeyPatch, interval: str, tick: float
) -> None:
    """Due work is kept in the database; a tick only looks for it, so it can be frequent."""
    monkeypatch.setenv("SYNC_INTERVAL_SECONDS", interval)
    trigger = _trigger(load(Settings))
    assert isinstance(trigger, IntervalTrigger)
    assert trigger.interval.total_seconds() == tick


def test_a_cron_expression_replaces_the_interval(
    credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNC_CRON", "*/15 6-22 * * mon-fri")
    trigger = _trigger(load(Settings))
    assert isinstance(trigger, CronTrigger)
    assert str(trigger.timezone) == "UTC"


def test_a_malformed_cron_expression_is_a_config_error(
    credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNC_CRON", "every five minutes")
    with pytest.raises(ConfigError, match="SYNC_CRON: not a five-field cron expression"):
        load(Settings)


def test_health_is_ok_after_start_then_stale_without_a_success(clock: FakeClock) -> None:
    health = Health(60, clock=clock, resources=("platforms",))
    assert health.check()[0] is True
    clock.advance(61)
    healthy, body = health.check()
    assert not healthy and "since start" in body["reason"]


def test_health_follows_the_last_success_and_quotes_the_last_error(clock: FakeClock) -> None:
    health = Health(60, clock=clock, resources=("platforms",))
    health.record(result("success"))
    clock.advance(50)
    health.record(result("failed"))
    assert health.check()[0] is True
    clock.advance(11)
    healthy, body = health.check()
    assert not healthy
    assert body["status"] == "stale" and "HTTP 503" in body["last_error"]
    health.record(result("success"))
    assert health.check()[0] is True


def test_health_is_stale_when_any_list_is_and_names_it(clock: FakeClock) -> None:
    health = Health(60, clock=clock, resources=("platforms", "sites"))
    health.record(result("success"))
    clock.advance(61)
    health.record(result("success"))

    healthy, body = health.check()

    assert not healthy
    assert body["stalest"]["resource"] == "sites"
    assert "no successful sites cycle since start" in body["reason"]


def test_each_list_is_stale_after_its_own_max_age(clock: FakeClock) -> None:
    """Per-site lists synced hourly are not stale when the platforms' 15 minutes have passed."""
    limits = {"platforms": 900.0, "agents": 3 * 3600.0}
    health = Health(limits.__getitem__, clock=clock, resources=("platforms", "agents"))
    health.record(result("success"))  # platforms
    health.record(RunResult("success", 2, "10000", "agents", 0.05, {}, None))
    clock.advance(3600)
    health.record(result("success"))

    assert health.check()[0] is True
    clock.advance(3 * 3600 - 3600 + 1)
    health.record(result("success"))
    healthy, body = health.check()

    assert not healthy
    assert body["stalest"]["resource"] == "agents" and body["max_age_seconds"] == 3 * 3600


def test_a_success_of_another_replica_keeps_this_one_healthy(clock: FakeClock) -> None:
    """Replicas share the work: what another process synced (read from the run history)
    counts, so a replica that did not win a list this interval is not stale."""
    health = Health(60, clock=clock, resources=("platforms",))
    clock.advance(100)
    assert health.check()[0] is False

    health.seen("default", "platforms", age_seconds=10)

    assert health.check()[0] is True
    clock.advance(51)
    assert health.check()[0] is False
    health.seen("default", "platforms", age_seconds=80)  # older than what it knows: ignored
    assert health.check()[0] is False


def sample_values(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def test_metrics_count_cycles_rows_and_token_requests_by_delta() -> None:
    metrics = Metrics()
    metrics.observe(result("success", inserted=3, unchanged=0), {"password": 1}, now=1000.0)
    metrics.observe(result("success", updated=1, unchanged=2), {"password": 1}, now=1300.0)
    metrics.observe(result("failed"), {"password": 1, "refresh_token": 1})
    samples = sample_values(metrics)
    lists = (("partner_id", "10000"), ("resource", "platforms"))

    assert samples[("comm100_sync_cycles_total", (*lists, ("status", "success")))] == 2
    assert samples[("comm100_sync_cycles_total", (*lists, ("status", "failed")))] == 1
    assert samples[("comm100_sync_rows_changed_total", (("action", "insert"), *lists))] == 3
    grants = "comm100_sync_token_requests_total"
    assert samples[(grants, (("account", "default"), ("grant", "password")))] == 1
    assert samples[(grants, (("account", "default"), ("grant", "refresh_token")))] == 1
    assert samples[("comm100_sync_last_success_timestamp_seconds", lists)] == 1300.0


def test_token_requests_are_counted_per_account() -> None:
    metrics = Metrics(accounts=("acme", "globex"))
    metrics.observe(result("success"), {"password": 1}, account="acme")
    metrics.observe(result("success"), {"password": 1}, account="globex")
    metrics.observe(result("success"), {"password": 2}, account="acme")

    samples = sample_values(metrics)

    grants = "comm100_sync_token_requests_total"
    assert samples[(grants, (("account", "acme"), ("grant", "password")))] == 2
    assert samples[(grants, (("account", "globex"), ("grant", "password")))] == 1


def test_cycle_series_exist_at_zero_before_the_first_cycle() -> None:
    """increase() needs a sample before the first failure, or an alert misses it."""
    metrics = Metrics(resources=("platforms",), partners=("10000",))
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    statuses = {
        s.labels["status"]: s.value
        for s in families["comm100_sync_cycles"].samples
        if s.name.endswith("_total")
    }
    assert statuses == dict.fromkeys(
        ("success", "partial", "failed", "skipped", "interrupted"), 0.0
    )


def test_the_last_success_gauge_shows_the_newest_success_of_any_replica() -> None:
    metrics = Metrics()
    gauge = (
        "comm100_sync_last_success_timestamp_seconds",
        (("partner_id", "10000"), ("resource", "platforms")),
    )
    metrics.observe(result("success"), {}, now=1000.0)

    metrics.seen("10000", "platforms", 1200.0)
    assert sample_values(metrics)[gauge] == 1200.0
    metrics.seen("10000", "platforms", 1100.0)  # older: the gauge never goes back
    assert sample_values(metrics)[gauge] == 1200.0
