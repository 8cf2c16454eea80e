"""The pure diff: stored rows + fetched records → what to insert, update, delete and restore.

No I/O and no clock; the store executes the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.errors import SafetyLimitError
from sync.models import Record, canonical_bytes


@dataclass(frozen=True, slots=True)
class StoredRow:
    digest: str
    live: bool


@dataclass(frozen=True)
class Stored:
    """What the table holds for one partner: live rows' content hashes, and soft-deleted ones,
    by ident (the id, or (site, id) for a per-site list).

    Plain dict and set, so 100,000 rows are read and compared without an object per row.
    """

    live: dict[Hashable, str]
    deleted: set[Hashable]

    @classmethod
    def of(cls, rows: Mapping[Hashable, StoredRow]) -> Stored:
        return cls(
            {key: row.digest for key, row in rows.items() if row.live},
            {key for key, row in rows.items() if not row.live},
        )


@dataclass
class Plan:
    inserts: list[Record] = field(default_factory=list)
    updates: list[Record] = field(default_factory=list)
    restores: list[Record] = field(default_factory=list)
    deletes: list[Hashable] = field(default_factory=list)
    unchanged: int = 0
    live_before: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.inserts or self.updates or self.restores or self.deletes)


def plan_changes(
    stored: Stored | Mapping[Hashable, StoredRow],
    fetched: Iterable[Record],
    *,
    still_holds: Callable[[Record], bool] | None = None,
) -> Plan:
    """Compare by content hash: equal hashes mean equal canonical JSON, so the row is unchanged.

    `still_holds` (a full compare) is asked about each row whose hash matches: does the row
    really hold that content? One edited by hand keeps its hash, and is rewritten if not.
    """
    if not isinstance(stored, Stored):
        stored = Stored.of(stored)
    live, deleted = stored.live, stored.deleted
    plan = Plan(live_before=len(live))
    inserts, updates, restores = plan.inserts, plan.updates, plan.restores
    seen: set[Hashable] = set()
    unchanged = 0
    for record in fetched:
        key = record.ident
        seen.add(key)
        digest = live.get(key)
        if digest is None:
            (restores if key in deleted else inserts).append(record)
        elif digest != record.digest or (still_holds is not None and not still_holds(record)):
            updates.append(record)
        else:
            unchanged += 1
    plan.unchanged = unchanged
    plan.deletes = [key for key in live if key not in seen]
    return plan


def check_delete_fraction(plan: Plan, max_fraction: float) -> None:
    """Refuse a plan that soft-deletes more than `max_fraction` of the live rows (1.0 = off).

    An empty or truncated answer from the API must not wipe a dashboard.
    """
    if max_fraction >= 1.0 or not plan.deletes:
        return
    # Divide rather than multiply: 0.29 * 100 is 28.999999999999996, which would refuse
    # exactly 29 of 100, while 29 / 100 rounds to the same float as the setting 0.29.
    if plan.live_before and len(plan.deletes) / plan.live_before > max_fraction:
        raise SafetyLimitError(
            f"refusing to soft-delete {len(plan.deletes)} of {plan.live_before} live rows "
            f"(more than SYNC_MAX_DELETE_FRACTION={max_fraction:g}); nothing was written"
        )


def changed_fields(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """The top-level keys present on one side only or whose values differ, sorted (every key
    of the side there is, for an insert or a delete)."""
    if old is None:
        return sorted(new or {})
    if new is None:
        return sorted(old)
    # Compared as canonical JSON, so that true → 1 or 1 → 1.0 counts as a change.
    return sorted(k for k in old.keys() | new.keys() if k not in old or k not in new
                  or canonical_bytes(old[k]) != canonical_bytes(new[k]))  # fmt: skip
