"""HTTP plumbing: a promptly stoppable threading server; a handler that sends or breaks replies."""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sync.emulator.faults import BIG_ITEM, big_chunks, big_layout
from sync.emulator.replies import Reply, error_reply

_log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
IDLE_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Incoming:
    """One parsed request, independent of the socket it came on."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    client_ip: str

    def header(self, name: str) -> str | None:
        """A header value by case-insensitive name."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


Responder = Callable[[Incoming], Reply]


class EmulatorServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that stops at once: wakeable accept loop, closable connections."""

    daemon_threads = True
    # We join our own workers with a deadline instead of socketserver's unbounded join.
    block_on_close = False
    request_queue_size = 64

    def __init__(
        self, address: tuple[str, int], respond: Responder, stopping: threading.Event
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.respond = respond
        self.stopping = stopping
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        self._wake_reader, self._wake_writer = socket.socketpair()
        super().__init__(address, EmulatorHandler)
        # A client that vanishes between select() and accept() must not block the loop.
        self.socket.setblocking(False)

    def run(self) -> None:
        """Accept connections until `stopping` is set and wake() is called.

        Replaces serve_forever(), whose shutdown() waits out a polling interval.
        """
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self.stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self.socket and not self.stopping.is_set():
                        self._accept()

    def _accept(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError:  # nothing to accept after all
            return
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def wake(self) -> None:
        """Make run() look at `stopping` now."""
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup we neither need
        # nor want: the emulator must not talk to anything beyond its own address.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        worker = threading.current_thread()
        with self._lock:
            self._workers.add(worker)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._workers.discard(worker)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients here hang up mid-answer on purpose; a traceback on stderr would only be noise.
        _log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Wake every worker blocked on a socket by shutting its connection down."""
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def join_workers(self, timeout_seconds: float) -> None:
        """Wait, up to a deadline, for the request threads to finish."""
        deadline = time.monotonic() + timeout_seconds
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))


class EmulatorHandler(BaseHTTPRequestHandler):
    """Parses a request, asks the emulator for a Reply, and delivers it (or breaks it)."""

    server: EmulatorServer
    protocol_version = "HTTP/1.1"
    server_version = "comm100-emulator"
    # Head and body go out in two writes; without TCP_NODELAY the second waits for the
    # client's delayed ACK (~40 ms), which would distort every timing taken against us.
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_SECONDS

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes every request line to stderr; keep it for those who ask for DEBUG.
        _log.debug("%s %s", self.address_string(), format % args)

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        incoming = Incoming(self.command, split.path, query, headers, body, self.client_address[0])
        try:
            reply = self.server.respond(incoming)
        except Exception:
            _log.exception("emulator failed on %s %s", self.command, split.path)
            reply = error_reply(500, "server_error", "internal emulator error")
        try:
            self._deliver(reply)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up, which the slow and broken faults invite.
            self.close_connection = True
            _log.debug("client %s hung up", self.address_string())

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            self._send_error(411, "length_required", "send a Content-Length, not chunks")
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self._send_error(400, "invalid_request", "bad or too large Content-Length")
            return None
        return self.rfile.read(length) if length else b""

    def _send_error(self, status: int, error: str, description: str) -> None:
        self.close_connection = True
        reply = error_reply(status, error, description)
        self._send_head(reply, None)
        self.wfile.write(reply.body)

    def _send_head(self, reply: Reply, length: int | None) -> None:
        self.send_response(reply.status)
        if reply.content_type is not None:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body) if length is None else length))
        for name, value in reply.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _deliver(self, reply: Reply) -> None:
        delivery, body = reply.delivery, reply.body
        if delivery == "reset_before_response":
            self._reset()
            return
        if delivery != "normal":
            # A broken or slow answer leaves the connection in no state for another request.
            self.close_connection = True
        if delivery == "big":
            self._send_big(reply)
            return
        self._send_head(reply, None)
        if self.command == "HEAD":
            return
        if delivery == "normal":
            self.wfile.write(body)
        elif delivery == "truncated":
            self.wfile.write(body[: len(body) // 2])
        elif delivery == "reset_mid_body":
            self.wfile.write(body[: len(body) // 2])
            self._reset()
        elif delivery == "drip":
            self._drip(body, reply.delay_seconds)

    def _drip(self, body: bytes, delay_seconds: float) -> None:
        for offset in range(len(body)):
            if self.server.stopping.is_set():
                return
            self.wfile.write(body[offset : offset + 1])
            if self.server.stopping.wait(delay_seconds):
                return

    def _send_big(self, reply: Reply) -> None:
        item = reply.big_item or BIG_ITEM
        count, length = big_layout(reply.size_bytes, item)
        self._send_head(reply, length)
        if self.command == "HEAD":
            return
        for chunk in big_chunks(count, item):
            if self.server.stopping.is_set():
                return
            self.wfile.write(chunk)

    def _reset(self) -> None:
        """Abort the connection with a TCP RST rather than an orderly FIN."""
        self.close_connection = True
        connection: socket.socket = self.connection
        with contextlib.suppress(OSError):
            # Linger on, timeout 0: close() discards unsent data and sends RST.
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Detach so the close happens now, not when the handler's file objects let go of it;
        # the server's later shutdown/close of the detached socket object are harmless no-ops.
        os.close(connection.detach())
