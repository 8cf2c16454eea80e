"""Statements per snapshot: a constant plus a few per batch of BATCH_SIZE rows, never one per row.

Counts what SQLAlchemy sends (before_cursor_execute; an executemany is one statement). No timing:
`make bench` measures time, this only guards the shape that keeps 100,000 platforms cheap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from sync import store
from sync.resources import PLATFORMS
from sync.store.snapshot import BATCH_SIZE
from tests.records import parse_platform_list

pytestmark = pytest.mark.db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# Sent by every cycle whatever its size: BEGIN (SQLite), the read of the stored rows, closing the
# run row, with room for a few more (a temporary table, a lock) but far below one per row.
FIXED_STATEMENTS = 6
# Statements that repeat once per batch: old values read, upsert, soft delete, audit insert.
BATCHED_KINDS = 4


def platform_list(count: int) -> list[dict[str, Any]]:
    return [{"id": 1000 + i, "name": f"platform {i}"} for i in range(count)]


def one_percent_changed(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """1 % renamed and 0.1 % removed (at least one of each), as the benchmark does."""
    rename_every = min(100, len(objects))
    remove_every = min(1000, len(objects))
    changed = []
    for i, item in enumerate(objects):
        if i % remove_every == remove_every // 2 + 1:
            continue
        changed.append({**item, "name": item["name"] + " v2"} if i % rename_every == 0 else item)
    return changed


@contextmanager
def counted(engine: Engine) -> Iterator[list[int]]:
    box = [0]

    def on_execute(*_args: Any) -> None:
        box[0] += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield box
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


def cycle(
    engine: Engine, objects: list[dict[str, Any]], partner: str, minutes: int
) -> tuple[int, int]:
    """Apply `objects` as one cycle's snapshot; returns (statements sent, rows written)."""
    now = T0 + timedelta(minutes=minutes)
    records = parse_platform_list(json.dumps(objects).encode())
    run_id = store.start_run(engine, resource=PLATFORMS.name, partner_id=partner, now=now)
    with counted(engine) as statements:
        plan = store.apply_snapshot(
            engine,
            PLATFORMS,
            run_id=run_id,
            partner_id=partner,
            records=records,
            now=now,
            max_delete_fraction=1.0,
        )
    written = len(plan.inserts) + len(plan.updates) + len(plan.restores) + len(plan.deletes)
    return statements[0], written


def bound(written: int) -> int:
    return FIXED_STATEMENTS + BATCHED_KINDS * math.ceil(written / BATCH_SIZE)


@pytest.mark.parametrize("count", [30, 3000])
def test_first_and_changed_cycles_send_a_constant_plus_a_few_per_batch(
    engine: Engine, backend: str, count: int
) -> None:
    first = platform_list(count)
    for minutes, objects in enumerate((first, one_percent_changed(first))):
        statements, written = cycle(engine, objects, "10000", minutes)
        assert written > 0
        assert statements <= bound(written), (
            f"{backend}: {statements} statements to write {written} rows "
            f"(allowed {bound(written)} with batches of {BATCH_SIZE})"
        )


def test_statement_count_grows_with_batches_not_with_rows(engine: Engine, backend: str) -> None:
    """N = 3,000 sends what N = 30 sends, plus at most BATCHED_KINDS per extra batch."""
    sent: dict[int, list[tuple[int, int]]] = {}
    for count in (30, 3000):
        first = platform_list(count)
        changed = one_percent_changed(first)
        sent[count] = [
            cycle(engine, objects, f"partner-{count}", minutes)
            for minutes, objects in enumerate((first, changed, changed))
        ]
    for phase, ((small, small_rows), (large, large_rows)) in zip(
        ("first", "changed", "no change"), zip(sent[30], sent[3000], strict=True), strict=True
    ):
        extra_batches = math.ceil(large_rows / BATCH_SIZE) - math.ceil(small_rows / BATCH_SIZE)
        assert large - small <= BATCHED_KINDS * max(0, extra_batches), (
            f"{backend}, {phase} cycle: {small} statements for 30 platforms, {large} for 3,000"
        )
    no_change_small, no_change_large = sent[30][2], sent[3000][2]
    assert no_change_small[1] == no_change_large[1] == 0
    assert no_change_small[0] == no_change_large[0]
