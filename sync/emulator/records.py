"""The request log: what API requests the emulator saw, for tests to assert on."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from sync.emulator.handler import Incoming
from sync.emulator.tokens import parse_form

# Enough for any test; bounds the memory of an emulator left running for days.
MAX_RECORDED_REQUESTS = 100_000


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the emulator saw it (control requests are not recorded)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str]  # token requests only; the password shows as "***"
    timestamp: float
    client_ip: str


class RequestLog:
    """The latest MAX_RECORDED_REQUESTS requests, oldest first; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=MAX_RECORDED_REQUESTS)

    def record(self, incoming: Incoming, *, with_form: bool) -> None:
        """Append one request; `with_form` keeps its form fields, the password masked."""
        form: dict[str, str] = {}
        if with_form:
            parsed = parse_form(incoming.header("Content-Type"), incoming.body) or {}
            form = {name: values[0] for name, values in parsed.items()}
            if "password" in form:
                form["password"] = "***"
        record = RequestRecord(
            method=incoming.method,
            path=incoming.path,
            query=incoming.query,
            headers=incoming.headers,
            form=form,
            timestamp=time.time(),
            client_ip=incoming.client_ip,
        )
        with self._lock:
            self._records.append(record)

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def count(self, path_prefix: str = "", method: str | None = None) -> int:
        """How many records have a path starting with `path_prefix` (and this method, if given)."""
        with self._lock:
            return sum(
                1
                for record in self._records
                if record.path.startswith(path_prefix) and method in (None, record.method)
            )
