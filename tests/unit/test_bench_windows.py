"""The rate budget benchmark's window arithmetic (bench/windows.py): the figures `make bench`
reports for issue 12 are only as good as these counts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH_WINDOWS = Path(__file__).resolve().parents[2] / "bench" / "windows.py"


@pytest.fixture(scope="module")
def windows() -> ModuleType:
    # Loaded by path: putting bench/ on sys.path would shadow the standard library's `profile`.
    spec = importlib.util.spec_from_file_location("bench_windows", BENCH_WINDOWS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_window_counts_are_half_open_and_ignore_calls_outside(windows: ModuleType) -> None:
    times = [99.0, 100.0, 104.0, 109.999, 110.0, 125.0, 130.0]
    assert windows.window_counts(times, 100.0, 10.0, 3) == [3, 1, 1]


def test_busiest_window_finds_a_burst_that_straddles_fixed_windows(windows: ModuleType) -> None:
    """Fixed windows hold 3 calls each; the 10 s from 9.0 on hold 4."""
    times = [1.0, 2.0, 9.0, 10.0, 11.0, 12.0, 25.0]
    assert windows.window_counts(times, 0.0, 10.0, 2) == [3, 3]
    assert windows.busiest_window(times, 10.0) == 4


def test_busiest_window_is_half_open(windows: ModuleType) -> None:
    assert windows.busiest_window([0.0, 10.0, 20.0], 10.0) == 1
    assert windows.busiest_window([0.0, 9.999, 20.0], 10.0) == 2
    assert windows.busiest_window([], 10.0) == 0
