"""Gates: requests held after they are recorded and before they are answered, until released.

These tests show the pattern for crash and race tests: no sleep, only gates and events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from sync.emulator import DEFAULT_SITE_LISTS, Emulator, Fault, Gate
from tests.e2e.test_emulator import TIMEOUT, control, password_form, token_request
from tests.e2e.test_emulator_lists import OPEN, SUSPENDED, Api, site_path

pytestmark = pytest.mark.e2e


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(rate_limit=None) as emulator:
        yield emulator


@pytest.fixture
def api(emu: Emulator) -> Api:
    return Api(emu)


class Call:
    """One request in a thread: `done` is set once it has an answer (or an error)."""

    def __init__(self, send: Callable[[], requests.Response]) -> None:
        self.done = threading.Event()
        self.response: requests.Response | None = None
        self.error: BaseException | None = None
        self._send = send
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.response = self._send()
        except requests.RequestException as exc:
            self.error = exc
        finally:
            self.done.set()

    def result(self) -> requests.Response:
        assert self.done.wait(TIMEOUT), "the request was answered"
        assert self.response is not None, self.error
        return self.response


def call(api: Api, path: str, **kwargs: Any) -> Call:
    return Call(lambda: api.get(path, **kwargs))


def test_a_gated_request_waits_for_release_then_gets_the_real_answer(
    api: Api, emu: Emulator
) -> None:
    gate = emu.gate("agents")
    held = call(api, site_path("agents", OPEN))
    assert gate.wait_arrived()
    assert gate.arrived.is_set() and gate.arrivals == 1
    assert emu.count_requests("/v4/global/sites/10001/agents") == 1, "recorded before held"
    assert not held.done.is_set()
    gate.release()
    response = held.result()
    assert (response.status_code, response.json()) == (200, DEFAULT_SITE_LISTS[OPEN]["agents"])
    assert gate.released


def test_a_gate_holds_its_count_and_lets_later_requests_pass(api: Api, emu: Emulator) -> None:
    gate = emu.gate("roles", times=2)
    first, second = call(api, site_path("roles", OPEN)), call(api, site_path("roles", SUSPENDED))
    assert gate.wait_arrived(2)
    assert api.get(site_path("roles", OPEN)).status_code == 200, "the third is not held"
    assert gate.arrivals == 2
    assert not (first.done.is_set() or second.done.is_set())
    gate.release()
    assert [first.result().status_code, second.result().status_code] == [200, 200]


def test_wait_arrived_times_out_with_false(emu: Emulator) -> None:
    gate = emu.gate("plans")
    assert gate.wait_arrived(timeout=0.01) is False
    assert not gate.arrived.is_set()


def test_a_released_request_still_takes_a_queued_fault(api: Api, emu: Emulator) -> None:
    gate = emu.gate("sites")
    held = call(api, "/global/sites")
    assert gate.wait_arrived()
    emu.inject("sites", Fault("status", status=503))
    gate.release()
    assert held.result().status_code == 503
    assert emu.stats["sites_fault"] == 1


def test_a_site_scoped_gate_holds_that_site_only(api: Api, emu: Emulator) -> None:
    gate = emu.gate(f"departments@{OPEN}")
    held = call(api, site_path("departments", OPEN))
    assert gate.wait_arrived()
    assert api.get(site_path("departments", SUSPENDED)).status_code == 200
    gate.release()
    assert held.result().status_code == 200


def test_a_site_scoped_gate_takes_a_request_before_a_gate_on_the_list(
    api: Api, emu: Emulator
) -> None:
    whole, scoped = emu.gate("agents"), emu.gate(f"agents@{OPEN}")
    held = call(api, site_path("agents", OPEN))
    assert scoped.wait_arrived()
    assert whole.arrivals == 0
    scoped.release()
    assert held.result().status_code == 200
    whole.release()


def test_a_token_gate_holds_the_token_endpoint(emu: Emulator) -> None:
    gate = emu.gate("token")
    held = Call(lambda: token_request(emu, password_form()))
    assert gate.wait_arrived()
    assert emu.requests[-1].form["password"] == "***"
    gate.release()
    assert "access_token" in held.result().json()


def test_two_requests_overlap_for_certain_under_a_gate(api: Api, emu: Emulator) -> None:
    """Race tests need both requests in flight at once: wait_arrived(2) proves it."""
    gate = emu.gate("platforms", times=2)
    calls = [call(api, "/global/platforms") for _ in range(2)]
    assert gate.wait_arrived(2)
    gate.release()
    assert [c.result().status_code for c in calls] == [200, 200]


def test_stop_releases_every_gate() -> None:
    emu = Emulator().start()
    try:
        api = Api(emu)
        gates = [emu.gate("agents"), emu.gate("token")]
        held = [call(api, site_path("agents", OPEN)), Call(lambda: token_request(emu, {}))]
        assert all(gate.wait_arrived() for gate in gates)
    finally:
        emu.stop()
    assert all(gate.released for gate in gates)
    assert all(c.done.wait(TIMEOUT) for c in held), "no request thread stays blocked"


def test_control_gates_open_show_and_release(api: Api, emu: Emulator) -> None:
    opened = control(emu, "POST", "gates", json={"endpoint": f"agents@{OPEN}", "times": 1})
    gate_id = opened.json()["id"]
    assert control(emu, "GET", f"gates/{gate_id}").json() == {"arrivals": 0, "released": False}
    held = call(api, site_path("agents", OPEN))
    gate = emu.find_gate(gate_id)
    assert isinstance(gate, Gate) and gate.wait_arrived()
    assert control(emu, "GET", f"gates/{gate_id}").json() == {"arrivals": 1, "released": False}
    control(emu, "POST", f"gates/{gate_id}/release").raise_for_status()
    assert held.result().status_code == 200
    assert control(emu, "GET", f"gates/{gate_id}").json() == {"arrivals": 1, "released": True}


@pytest.mark.parametrize(
    ("method", "name", "body", "status"),
    [
        ("POST", "gates", {"endpoint": "nowhere"}, 400),
        ("POST", "gates", {"endpoint": "agents", "times": 0}, 400),
        ("POST", "gates", {"endpoint": "agents", "times": "2"}, 400),
        ("POST", "gates", {"times": 1}, 400),
        ("GET", "gates/999", None, 404),
        ("GET", "gates/abc", None, 404),
        ("POST", "gates/999/release", None, 404),
        ("DELETE", "gates", None, 405),
    ],
)
def test_control_gates_refuse_bad_requests(
    emu: Emulator, method: str, name: str, body: object, status: int
) -> None:
    assert control(emu, method, name, json=body).status_code == status


def test_gate_times_must_be_positive(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="times"):
        emu.gate("agents", times=0)


def test_release_is_idempotent_and_a_released_gate_holds_nothing(api: Api, emu: Emulator) -> None:
    gate = emu.gate("plans")
    gate.release()
    gate.release()
    assert api.get("/global/plans").status_code == 200
    assert gate.arrivals == 0
