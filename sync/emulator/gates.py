"""Gates: hold requests to an endpoint until a test releases them, instead of sleeping."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

DEFAULT_WAIT_SECONDS = 10.0


class Gate:
    """Holds the next `times` requests to one endpoint, once received and recorded.

    Each held request sets `arrived` and counts in `arrivals`; release() lets every held and
    future request through, and the gate is spent. A released request is answered as it would
    have been: the real answer, or the fault queued for it.
    """

    def __init__(self, gate_id: int, endpoint: str, times: int) -> None:
        self.id = gate_id
        self.endpoint = endpoint
        self.times = times
        self.arrived = threading.Event()
        self._released = threading.Event()
        self._changed = threading.Condition()
        self._arrivals = 0

    @property
    def arrivals(self) -> int:
        """How many requests this gate has held so far."""
        with self._changed:
            return self._arrivals

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def wait_arrived(self, n: int = 1, timeout: float = DEFAULT_WAIT_SECONDS) -> bool:
        """Wait until `n` requests are held (or have been); False if `timeout` passes first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._arrivals >= n, timeout)

    def release(self) -> None:
        """Let every held and future request through; calling it again does nothing."""
        with self._changed:
            self._released.set()
            self._changed.notify_all()

    def claim(self) -> bool:
        """Count one arriving request if the gate still holds requests; True if it does."""
        with self._changed:
            if self._released.is_set() or self._arrivals >= self.times:
                return False
            self._arrivals += 1
            self.arrived.set()
            self._changed.notify_all()
            return True

    def hold(self) -> None:
        """Block the calling request thread until release()."""
        self._released.wait()

    def __repr__(self) -> str:
        return (
            f"Gate(id={self.id}, endpoint={self.endpoint!r}, times={self.times}, "
            f"arrivals={self.arrivals}, released={self.released})"
        )


class GateBoard:
    """The gates of one emulator, by id and by endpoint; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._gates: dict[int, Gate] = {}

    def open(self, endpoint: str, times: int) -> Gate:
        """A new gate for the next `times` requests to `endpoint` (already validated)."""
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError("a gate's times must be an integer of at least 1")
        with self._lock:
            gate = Gate(next(self._ids), endpoint, times)
            self._gates[gate.id] = gate
        return gate

    def find(self, gate_id: int) -> Gate | None:
        with self._lock:
            return self._gates.get(gate_id)

    def hold(self, keys: Sequence[str]) -> None:
        """Hold this request at the first open gate for one of `keys` (in order), if any."""
        with self._lock:
            candidates = [
                gate
                for key in keys
                for gate in self._gates.values()
                if gate.endpoint == key and not gate.released
            ]
        for gate in candidates:
            if gate.claim():
                gate.hold()
                return

    def release_all(self) -> None:
        """Release every gate, so that no request thread stays blocked (on stop)."""
        with self._lock:
            gates = list(self._gates.values())
        for gate in gates:
            gate.release()
