"""The pure diff between stored rows and a fetched list, and the delete-fraction guard."""

from __future__ import annotations

import json

import pytest

from sync.errors import SafetyLimitError
from sync.models import Record
from sync.reconcile import Plan, StoredRow, check_delete_fraction, plan_changes
from tests.records import parse_platform_list


def records(*items: dict[str, object]) -> list[Record]:
    return parse_platform_list(json.dumps(list(items)).encode())


def live(item: dict[str, object]) -> StoredRow:
    (record,) = records(item)
    return StoredRow(digest=record.digest, live=True)


def deleted(item: dict[str, object]) -> StoredRow:
    (record,) = records(item)
    return StoredRow(digest=record.digest, live=False)


def plan_with(live_before: int, deletes: int) -> Plan:
    return Plan(deletes=list(range(deletes)), live_before=live_before)


# --------------------------------------------------------------------------- classification


def test_new_platform_is_an_insert() -> None:
    plan = plan_changes({}, records({"id": 1, "name": "a"}))

    assert [r.key for r in plan.inserts] == [1]
    assert (plan.updates, plan.restores, plan.deletes, plan.unchanged) == ([], [], [], 0)
    assert plan.changed


def test_same_content_is_unchanged_and_not_a_change() -> None:
    stored = {1: live({"id": 1, "name": "a", "x": [1, 2]})}

    plan = plan_changes(stored, records({"x": [1, 2], "name": "a", "id": 1}))

    assert plan.unchanged == 1
    assert not plan.changed


def test_renamed_platform_is_an_update() -> None:
    plan = plan_changes({1: live({"id": 1, "name": "a"})}, records({"id": 1, "name": "b"}))

    assert [(r.key, r.typed[0]) for r in plan.updates] == [(1, "b")]
    assert plan.unchanged == 0


def test_change_in_an_unknown_field_is_an_update() -> None:
    stored = {1: live({"id": 1, "name": "a", "enabled": True})}

    plan = plan_changes(stored, records({"id": 1, "name": "a", "enabled": False}))

    assert [r.key for r in plan.updates] == [1]


def test_live_row_missing_from_the_answer_is_a_delete() -> None:
    stored = {1: live({"id": 1, "name": "a"}), 2: live({"id": 2, "name": "b"})}

    plan = plan_changes(stored, records({"id": 1, "name": "a"}))

    assert plan.deletes == [2]
    assert plan.unchanged == 1


def test_already_deleted_row_missing_from_the_answer_is_left_alone() -> None:
    stored = {1: live({"id": 1, "name": "a"}), 2: deleted({"id": 2, "name": "b"})}

    plan = plan_changes(stored, records({"id": 1, "name": "a"}))

    assert plan.deletes == []
    assert not plan.changed


def test_deleted_row_that_reappears_is_a_restore_even_with_the_same_content() -> None:
    plan = plan_changes({1: deleted({"id": 1, "name": "a"})}, records({"id": 1, "name": "a"}))

    assert [r.key for r in plan.restores] == [1]
    assert (plan.inserts, plan.updates, plan.unchanged) == ([], [], 0)


def test_deleted_row_that_reappears_renamed_is_a_restore_carrying_the_new_content() -> None:
    plan = plan_changes({1: deleted({"id": 1, "name": "a"})}, records({"id": 1, "name": "b"}))

    assert [(r.key, r.typed[0]) for r in plan.restores] == [(1, "b")]
    assert plan.updates == []


def test_live_before_counts_only_live_rows() -> None:
    stored = {
        1: live({"id": 1, "name": "a"}),
        2: live({"id": 2, "name": "b"}),
        3: deleted({"id": 3, "name": "c"}),
    }

    assert plan_changes(stored, []).live_before == 2


def test_mixed_cycle_classifies_every_row_once() -> None:
    stored = {
        1: live({"id": 1, "name": "same"}),
        2: live({"id": 2, "name": "old"}),
        3: live({"id": 3, "name": "gone"}),
        4: deleted({"id": 4, "name": "back"}),
    }

    plan = plan_changes(
        stored,
        records(
            {"id": 1, "name": "same"},
            {"id": 2, "name": "new"},
            {"id": 4, "name": "back"},
            {"id": 5, "name": "fresh"},
        ),
    )

    assert [r.key for r in plan.inserts] == [5]
    assert [r.key for r in plan.updates] == [2]
    assert [r.key for r in plan.restores] == [4]
    assert plan.deletes == [3]
    assert plan.unchanged == 1
    assert plan.live_before == 3


# --------------------------------------------------------------------------- delete guard


def test_deleting_exactly_the_allowed_fraction_passes() -> None:
    check_delete_fraction(plan_with(live_before=10, deletes=5), 0.5)


@pytest.mark.parametrize(
    ("live_before", "deletes", "fraction"),
    [(100, 29, 0.29), (100, 57, 0.57), (10, 3, 0.3), (3, 1, 1 / 3), (1000, 7, 0.007)],
)
def test_exact_fraction_passes_despite_float_rounding(
    live_before: int, deletes: int, fraction: float
) -> None:
    """0.29 * 100 is 28.999999999999996 in floating point; 29 of 100 is still exactly 0.29."""
    check_delete_fraction(plan_with(live_before, deletes), fraction)


def test_deleting_one_more_than_the_allowed_fraction_fails_and_says_why() -> None:
    with pytest.raises(SafetyLimitError) as caught:
        check_delete_fraction(plan_with(live_before=10, deletes=6), 0.5)

    message = str(caught.value)
    assert "6 of 10" in message
    assert "SYNC_MAX_DELETE_FRACTION=0.5" in message
    assert "nothing was written" in message


def test_empty_answer_against_live_rows_trips_the_default_guard() -> None:
    stored = {i: live({"id": i, "name": str(i)}) for i in range(1, 4)}

    with pytest.raises(SafetyLimitError):
        check_delete_fraction(plan_changes(stored, []), 0.5)


def test_fraction_one_disables_the_guard() -> None:
    check_delete_fraction(plan_with(live_before=10, deletes=10), 1.0)


def test_fraction_zero_refuses_any_delete() -> None:
    with pytest.raises(SafetyLimitError):
        check_delete_fraction(plan_with(live_before=1000, deletes=1), 0.0)


def test_fraction_zero_allows_a_cycle_without_deletes() -> None:
    check_delete_fraction(plan_with(live_before=1000, deletes=0), 0.0)


def test_nothing_live_means_no_guard() -> None:
    """A first cycle, or one after everything was deleted, has nothing to protect."""
    stored = {1: deleted({"id": 1, "name": "a"})}

    check_delete_fraction(plan_changes(stored, []), 0.0)
