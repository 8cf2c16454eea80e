"""Named points where a process can be made to wait, so that crash and race tests can act at an
exact moment (kill a process mid-write, drop a connection while a writer holds the fence).

Off unless the CLI was started with SYNC_TEST_PAUSE_AT=POINT:DIRECTORY (tests only): at POINT
the process creates DIRECTORY/POINT.ready, then waits until DIRECTORY/POINT.go exists (at most
PAUSE_LIMIT_SECONDS). Each point pauses once per process.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

POINTS = ("after_plan", "after_first_batch", "after_commit")
PAUSE_LIMIT_SECONDS = 60.0
# Set once by the CLI from SYNC_TEST_PAUSE_AT; a process-wide switch, like a log level.
_armed: dict[str, Path] = {}


def arm(spec: str | None) -> None:
    """Arm the point named in "POINT:DIRECTORY" (None or empty: nothing)."""
    _armed.clear()
    if not spec:
        return
    point, _, folder = spec.partition(":")
    if point not in POINTS or not folder:
        raise ValueError(f"SYNC_TEST_PAUSE_AT: expected one of {POINTS} and ':DIRECTORY'")
    _armed[point] = Path(folder)


def pause_point(point: str) -> None:
    folder = _armed.pop(point, None)
    if folder is None:
        return
    (folder / f"{point}.ready").touch()
    log.warning("paused at %s (SYNC_TEST_PAUSE_AT)", point)
    deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
    while not (folder / f"{point}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
