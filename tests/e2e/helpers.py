"""Driving `comm100-sync` processes from tests: start, watch their output, stop, and wait for
observable conditions (never for a fixed time)."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from sync.schema import sync_runs
from sync.store import create_engine

from ..conftest import CLI

STOP_LIMIT_SECONDS = 10


def wait_until(predicate: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    """Poll `predicate` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A `comm100-sync` subprocess whose stderr is collected line by line as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.popen = subprocess.Popen(
            [*CLI, *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        with self.popen.stderr:
            for line in self.popen.stderr:
                with self._lock:
                    self._lines.append(line)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def wait_for_line(self, fragment: str, timeout: float = 20, count: int = 1) -> None:
        """Wait until `fragment` has appeared on `count` lines of stderr."""
        wait_until(
            lambda: self.stderr.count(fragment) >= count,
            timeout,
            f"{fragment!r} x{count} in stderr",
        )

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.popen.send_signal(signum)

    def finish(self, timeout: float = STOP_LIMIT_SECONDS + 5) -> int:
        """Wait for the exit; returns the exit code."""
        self.popen.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return self.popen.returncode

    def stop(self) -> tuple[int, float]:
        """SIGTERM; returns the exit code and the seconds it took to exit."""
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        code = self.finish()
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.finish()


@contextmanager
def running(env: dict[str, str], *args: str) -> Iterator[Process]:
    """A `comm100-sync run` process (or `args`); killed if the test did not stop it."""
    process = Process(env, *(args or ("run",)))
    try:
        yield process
    finally:
        process.kill()


def query(url: str, statement: sa.Executable) -> list[sa.Row[tuple[object, ...]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(statement).all())
    finally:
        engine.dispose()


def run_statuses(url: str) -> list[str]:
    """Statuses of sync_runs in order; empty while the database or the schema is not there."""
    try:
        rows = query(url, sa.select(sync_runs.c.status).order_by(sync_runs.c.id))
    except sa.exc.DBAPIError:
        return []
    return [str(row[0]) for row in rows]


class PausePoint:
    """SYNC_TEST_PAUSE_AT for one process: it stops at `point` until the test says go."""

    def __init__(self, folder: Path, point: str) -> None:
        self.folder, self.point = folder, point
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        return {"SYNC_TEST_PAUSE_AT": f"{self.point}:{self.folder}"}

    def wait_reached(self, timeout: float = 30) -> None:
        ready = self.folder / f"{self.point}.ready"
        wait_until(ready.exists, timeout, f"the process to reach {self.point}")

    def release(self) -> None:
        (self.folder / f"{self.point}.go").touch()
