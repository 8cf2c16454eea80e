"""Scripted faults: what can go wrong, the queue of them per endpoint, and the bodies they send."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus

from sync.emulator.replies import JSON, JSON_UTF8, NO_STORE, Reply, dump_json, error_reply

ENDPOINTS = ("token", "platforms")
FAULT_KINDS = (
    "status",
    "delay",
    "malformed_json",
    "html",
    "wrong_content_type",
    "object",
    "wrong_types",
    "missing_fields",
    "duplicate_conflict",
    "duplicate_identical",
    "raw",
    "truncated",
    "reset_before_response",
    "reset_mid_body",
    "drip",
    "big",
    "non_utf8",
)
# These still run the real endpoint: the fault is in the timing or the label, not the content.
ANSWERS_NORMALLY = ("delay", "wrong_content_type", "drip")
# A token response has no list to duplicate items in.
PLATFORMS_ONLY = ("duplicate_conflict", "duplicate_identical")

BIG_FIRST_ID = 10**9
# Fixed-width items (10-digit ids) make the length of a big body known before it is generated.
BIG_ITEM = '{{"id": {0}, "name": "platform-{0}"}}'
BIG_ITEMS_PER_CHUNK = 2000

MAINTENANCE_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Temporarily Unavailable</title></head>\n"
    b"<body><h1>Service Temporarily Unavailable</h1>\n"
    b"<p>The server is down for maintenance. Please try again later.</p>\n"
    b"<hr><center>nginx</center></body></html>\n"
)

_STATUS_ERRORS = {
    400: "invalid_request",
    403: "access_denied",
    404: "not_found",
    429: "too_many_requests",
    503: "temporarily_unavailable",
}


@dataclass
class Fault:
    """One scripted misbehaviour; which fields matter depends on `kind` (see FAULT_KINDS)."""

    kind: str
    status: int = 500
    retry_after: str | None = None
    body: bytes | None = None
    content_type: str | None = None
    delay_seconds: float = 0.0
    size_bytes: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"fault status {self.status} is not an HTTP status")
        if self.delay_seconds < 0 or self.size_bytes < 0:
            raise ValueError("fault delay_seconds and size_bytes must not be negative")


@dataclass
class _Entry:
    fault: Fault
    remaining: int | None


class FaultQueue:
    """FIFO of faults per endpoint; an entry with remaining=None fires until cleared."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[_Entry]] = {endpoint: deque() for endpoint in ENDPOINTS}

    def push(self, endpoint: str, fault: Fault, times: int | None) -> None:
        """Queue `fault` for the next `times` requests to `endpoint` (None: every request)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
        if endpoint == "token" and fault.kind in PLATFORMS_ONLY:
            raise ValueError(f"fault kind {fault.kind!r} applies to the platforms endpoint only")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for every request")
        with self._lock:
            self._queues[endpoint].append(_Entry(fault, times))

    def take(self, endpoint: str) -> Fault | None:
        """The fault for this request to `endpoint`, if any, consuming one use of it."""
        with self._lock:
            queue = self._queues[endpoint]
            if not queue:
                return None
            entry = queue[0]
            if entry.remaining is not None:
                entry.remaining -= 1
                if entry.remaining == 0:
                    queue.popleft()
            return entry.fault

    def clear(self) -> None:
        with self._lock:
            for queue in self._queues.values():
                queue.clear()


def fault_reply(endpoint: str, fault: Fault, sample: object) -> Reply:
    """The reply for a fault that replaces the endpoint's answer.

    Args:
        endpoint: "token" or "platforms".
        fault: any kind not in ANSWERS_NORMALLY.
        sample: what a success would carry (the platform list, or a token response object).
    """
    content_type = JSON if endpoint == "token" else JSON_UTF8
    headers = NO_STORE if endpoint == "token" else ()
    kind = fault.kind
    if kind == "status":
        return _status_reply(endpoint, fault, content_type, headers)
    if kind == "raw":
        return Reply(200, fault.body or b"", fault.content_type or JSON, headers)
    if kind == "html":
        return Reply(200, MAINTENANCE_PAGE, "text/html; charset=utf-8")
    if kind == "reset_before_response":
        return Reply(0, delivery=kind)
    if kind == "big":
        return Reply(200, b"", JSON_UTF8, headers, delivery=kind, size_bytes=fault.size_bytes)
    if kind in ("truncated", "reset_mid_body"):
        return Reply(200, dump_json(sample), content_type, headers, delivery=kind)
    if kind == "malformed_json":
        text = dump_json(sample).decode("utf-8")
        # Any strict prefix of an array or object is invalid; cutting the str keeps it UTF-8.
        return Reply(200, text[: max(1, len(text) // 2)].encode("utf-8"), content_type, headers)
    if kind == "non_utf8":
        return Reply(200, _non_utf8_body(sample), content_type, headers)
    return Reply(200, dump_json(_reshaped(kind, sample)), content_type, headers)


def _status_reply(
    endpoint: str, fault: Fault, content_type: str, headers: tuple[tuple[str, str], ...]
) -> Reply:
    extra = list(headers)
    if fault.retry_after is not None:
        extra.append(("Retry-After", fault.retry_after))
    if fault.status == 401 and endpoint == "platforms":
        extra.append(("WWW-Authenticate", 'Bearer error="invalid_token"'))
    if fault.body is not None:
        return Reply(fault.status, fault.body, fault.content_type or JSON, tuple(extra))
    if fault.status == 401:
        error = "invalid_client" if endpoint == "token" else "invalid_token"
    else:
        fallback = "server_error" if fault.status >= 500 else "injected_fault"
        error = _STATUS_ERRORS.get(fault.status, fallback)
    try:
        phrase = HTTPStatus(fault.status).phrase
    except ValueError:
        phrase = "Unknown"
    description = f"injected fault: HTTP {fault.status} {phrase}"
    return error_reply(
        fault.status, error, description, content_type=content_type, headers=tuple(extra)
    )


def _reshaped(kind: str, sample: object) -> object:
    """The sample with the defect `kind` names: wrong container, types, fields or duplicates."""
    if kind == "object":
        return {"data": sample}
    if isinstance(sample, dict):
        token = dict(sample)
        if kind == "wrong_types":
            token["access_token"] = 12345
            token["expires_in"] = str(token.get("expires_in"))
        elif kind == "missing_fields":
            token.pop("access_token", None)
        return token
    items = _padded(sample, 2 if kind == "wrong_types" else 1)
    if kind == "wrong_types":
        items[0]["id"] = str(items[0].get("id"))
        items[1]["name"] = 123
    elif kind == "missing_fields":
        items[-1].pop("name", None)
    elif kind == "duplicate_conflict":
        items.append({**items[0], "name": f"{items[0].get('name')} (conflict)"})
    elif kind == "duplicate_identical":
        items.append(dict(items[0]))
    return items


def _padded(sample: object, minimum: int) -> list[dict[str, object]]:
    """Copies of the list's objects, padded with made-up platforms so a defect has a target."""
    items = (
        [dict(item) for item in sample if isinstance(item, dict)]
        if isinstance(sample, list)
        else []
    )
    next_id = _max_id(items) + 100
    while len(items) < minimum:
        items.append({"id": next_id, "name": f"Platform {next_id}"})
        next_id += 100
    return items


def _max_id(items: list[dict[str, object]]) -> int:
    return max((value for item in items if isinstance(value := item.get("id"), int)), default=0)


def _non_utf8_body(sample: object) -> bytes:
    """The sample plus one value encoded in Latin-1, which a strict UTF-8 decoder rejects."""
    text = dump_json(sample)
    if isinstance(sample, dict):
        return text[:-1] + b', "region": "Montr\xe9al"}'
    items = _padded(sample, 0)
    extra = b'{"id": %d, "name": "Montr\xe9al"}' % (_max_id(items) + 100)
    return text[:-1] + (b", " if text != b"[]" else b"") + extra + b"]"


def big_layout(size_bytes: int) -> tuple[int, int]:
    """How many items a big body of about `size_bytes` holds, and its exact length in bytes."""
    item_bytes = len(BIG_ITEM.format(BIG_FIRST_ID)) + len(", ")
    count = max(1, round(size_bytes / item_bytes))
    # "[" and "]" take the place of the separator the last item does not have.
    return count, count * item_bytes


def big_chunks(count: int) -> Iterator[bytes]:
    """A valid JSON array of `count` platforms, a few thousand items at a time."""
    for start in range(0, count, BIG_ITEMS_PER_CHUNK):
        stop = min(start + BIG_ITEMS_PER_CHUNK, count)
        text = ", ".join(BIG_ITEM.format(BIG_FIRST_ID + i) for i in range(start, stop))
        prefix = "[" if start == 0 else ", "
        suffix = "]" if stop == count else ""
        yield (prefix + text + suffix).encode("ascii")
