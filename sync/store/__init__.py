"""Reads and writes the synced tables, the audit trail and sync_runs; never the HTTP side."""

from sync.store.auth_state import (
    logins,
    paused_logins,
    read_auth_state,
    read_sealed_token,
    write_acceptance,
    write_refusal,
    write_sealed_token,
)
from sync.store.engine import create_engine, describe_db_error, translate_errors
from sync.store.locks import named_lock
from sync.store.runs import (
    active_site_ids,
    fail_abandoned_runs,
    finish_run_now,
    last_success,
    last_successes,
    prune_runs,
    recent_runs,
    record_run,
    start_run,
    unchanged_snapshot,
)
from sync.store.schedule import claim, due, schedule
from sync.store.schema_version import current_revision
from sync.store.snapshot import apply_snapshot

__all__ = [
    "active_site_ids",
    "apply_snapshot",
    "claim",
    "create_engine",
    "current_revision",
    "describe_db_error",
    "due",
    "fail_abandoned_runs",
    "finish_run_now",
    "last_success",
    "last_successes",
    "logins",
    "named_lock",
    "paused_logins",
    "prune_runs",
    "read_auth_state",
    "read_sealed_token",
    "recent_runs",
    "record_run",
    "schedule",
    "start_run",
    "translate_errors",
    "unchanged_snapshot",
    "write_acceptance",
    "write_refusal",
    "write_sealed_token",
]
