"""Sync cycles: one list (cycle), a partner account's lists (account), what they return (results)
and how a list is fetched (fetch)."""

from sync.job.account import exit_code_of, record_outcome, run_account, run_once
from sync.job.cycle import Cycle, lock_name
from sync.job.results import (
    CycleOptions,
    RunResult,
    Upkeep,
    counts_of_unchanged,
    log_summary,
    utc_now,
)

__all__ = [
    "Cycle",
    "CycleOptions",
    "RunResult",
    "Upkeep",
    "counts_of_unchanged",
    "exit_code_of",
    "lock_name",
    "log_summary",
    "record_outcome",
    "run_account",
    "run_once",
    "utc_now",
]
