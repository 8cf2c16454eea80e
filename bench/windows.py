"""Counting calls in time windows, for the rate budget's section (bench/budget.py): pure, no
imports beyond the standard library, so that tests/unit/test_bench_windows.py can load it."""

from __future__ import annotations

from collections.abc import Sequence


def window_counts(times: Sequence[float], start: float, seconds: float, windows: int) -> list[int]:
    """Calls in each of `windows` consecutive `seconds`-long windows from `start`
    ([start + k·seconds, start + (k+1)·seconds)); calls outside them are not counted."""
    counts = [0] * windows
    for at in times:
        k = int((at - start) // seconds)
        if 0 <= k < windows:
            counts[k] += 1
    return counts


def busiest_window(times: Sequence[float], seconds: float) -> int:
    """The most calls in any `seconds`-long half-open window [t, t + seconds), wherever it
    starts (the busiest one starts at a call)."""
    ordered = sorted(times)
    most, end = 0, 0
    for begin, at in enumerate(ordered):
        while end < len(ordered) and ordered[end] < at + seconds:
            end += 1
        most = max(most, end - begin)
    return most
