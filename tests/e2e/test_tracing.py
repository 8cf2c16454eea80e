"""Tracing in real `once` and `run` processes: off, nothing of OpenTelemetry is imported; on, the
spans reach an OTLP/HTTP receiver on 127.0.0.1, also after a SIGTERM; on without the packages,
one line and exit 78."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sync import __version__
from sync.emulator import Emulator
from sync.errors import EX_CONFIG
from sync.tracing import FLUSH_TIMEOUT_SECONDS

from ..conftest import CLI
from .helpers import run_statuses, running

pytestmark = pytest.mark.e2e

EnvBuilder = Callable[..., dict[str, str]]
# Runs the CLI, then prints which opentelemetry modules the process imported.
PROBE = """
import sys
from sync.cli import main
code = main(sys.argv[1:])
print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
sys.exit(code)
"""
# Runs the CLI as if the otel extra were not installed.
WITHOUT_OTEL = """
import sys

class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoOpenTelemetry())
from sync.cli import main
sys.exit(main(sys.argv[1:]))
"""


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/v1/traces":
                    receiver.take(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self, request: ExportTraceServiceRequest) -> None:
        with self.lock:
            for resource_spans in request.resource_spans:
                self.resources.append(_values(resource_spans.resource.attributes))
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            {
                                "name": span.name,
                                "id": span.span_id,
                                "parent": span.parent_span_id,
                                "attributes": _values(span.attributes),
                            }
                        )

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [span for span in self.spans if span["name"] == name]

    def parent_of(self, span: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            (parent,) = [s for s in self.spans if s["id"] == span["parent"]]
        return parent


def _values(attributes: Any) -> dict[str, Any]:
    values = {}
    for item in attributes:
        kind = item.value.WhichOneof("value")
        values[item.key] = getattr(item.value, kind) if kind else None
    return values


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sync.db'}"


def probe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_off_by_default_a_cycle_imports_nothing_of_opentelemetry(
    sync_env: EnvBuilder, sqlite_url: str
) -> None:
    done = probe(sync_env(sqlite_url), "once")

    assert done.returncode == 0, done.stderr
    assert run_statuses(sqlite_url) == ["success"]
    assert done.stdout.strip() == "[]"
    assert "tracing on" not in done.stderr


def test_once_with_an_otlp_endpoint_sends_its_cycle_to_the_collector(
    sync_env: EnvBuilder, sqlite_url: str, receiver: Receiver
) -> None:
    env = sync_env(
        sqlite_url,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        SYNC_RESOURCES="platforms,sites,agents",
    )

    done = probe(env, "once")

    assert done.returncode == 0, done.stderr
    assert "tracing on (OTEL_EXPORTER_OTLP_ENDPOINT)" in done.stderr
    assert "opentelemetry.sdk.trace" in done.stdout  # the control of the test above
    assert {"service.name": "comm100-sync", "service.version": __version__}.items() <= (
        receiver.resources[0].items()
    )
    (cycle,) = receiver.named("sync.cycle")
    assert cycle["parent"] == b""
    assert cycle["attributes"]["sync.outcome"] == "success"
    lists = receiver.named("sync.resource")
    assert sorted(span["attributes"]["sync.resource"] for span in lists) == [
        "agents",
        "platforms",
        "sites",
    ]
    assert all(receiver.parent_of(span) == cycle for span in lists)
    agents = next(span for span in lists if span["attributes"]["sync.resource"] == "agents")
    per_site = receiver.named("GET /v4/global/sites/{siteId}/agents")
    assert len(per_site) == 2
    assert all(receiver.parent_of(span) == agents for span in per_site)
    assert receiver.parent_of(receiver.named("POST /oauth/token")[0]) == cycle


@pytest.mark.parametrize("command", ["once", "run"])
def test_the_spans_of_a_cycle_stopped_by_sigterm_are_sent_before_the_process_exits(
    command: str,
    sync_env: EnvBuilder,
    sqlite_url: str,
    receiver: Receiver,
    emulator: Emulator,
) -> None:
    """A batch delay of ten minutes: nothing leaves before the exit's flush."""
    gate = emulator.gate("platforms")
    env = sync_env(
        sqlite_url,
        SYNC_OTEL="true",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="600000",
        SYNC_INTERVAL_SECONDS="3600",
    )
    with running(env, command) as process:
        assert gate.wait_arrived()
        process.signal()
        process.wait_for_line("SIGTERM received")
        assert receiver.spans == []
        gate.release()
        code = process.finish()

    assert code == 0, process.stderr
    assert run_statuses(sqlite_url) == ["success"]
    (cycle,) = receiver.named("sync.cycle")
    (platforms,) = receiver.named("sync.resource")
    assert platforms["attributes"]["sync.status"] == "success"
    assert platforms["attributes"]["sync.rows.inserted"] == 3
    assert receiver.parent_of(platforms) == cycle


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SYNC_OTEL", "true"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")],
)
def test_tracing_on_without_the_packages_is_one_line_and_exit_78(
    variable: str, value: str, sync_env: EnvBuilder, sqlite_url: str, emulator: Emulator
) -> None:
    env = sync_env(sqlite_url, **{variable: value})

    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_OTEL, "once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == EX_CONFIG
    assert done.stderr.splitlines() == [
        f"comm100-sync: error: invalid settings: {variable}: tracing needs the OpenTelemetry "
        "packages (opentelemetry is not installed): pip install 'comm100-sync[otel]', or set "
        "SYNC_OTEL=false"
    ]
    assert emulator.requests == []  # nothing contacted
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


@pytest.mark.slow
def test_a_collector_that_does_not_answer_holds_the_exit_five_seconds_at_most(
    sync_env: EnvBuilder, sqlite_url: str
) -> None:
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)  # connections are queued, never answered
        env = sync_env(
            sqlite_url,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{hole.getsockname()[1]}",
            OTEL_EXPORTER_OTLP_TIMEOUT="60",
        )
        started = time.monotonic()
        done = subprocess.run(
            [*CLI, "once"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        took = time.monotonic() - started

    assert done.returncode == 0, done.stderr
    assert run_statuses(sqlite_url) == ["success"]
    assert "the collector took more than 5s: the last spans are lost" in done.stderr
    assert FLUSH_TIMEOUT_SECONDS <= took < FLUSH_TIMEOUT_SECONDS + 5
