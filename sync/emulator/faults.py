"""Scripted faults: what can go wrong, the queue of them per endpoint, and the bodies they send.

Endpoints are named as in lists.py: "token", a list name, or "agents@10001". A reshaping fault
defaces the list it is served on, in that list's own shape (its id type, its label field).
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus

from sync.emulator.lists import TOKEN_ENDPOINT, ListSpec
from sync.emulator.replies import JSON, JSON_UTF8, NO_STORE, Reply, dump_json, error_reply

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
LISTS_ONLY = ("duplicate_conflict", "duplicate_identical")
# The wrong-typed id a string-id list gets.
WRONG_INT_ID = 12345

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
    """FIFO of faults per endpoint name; an entry with remaining=None fires until cleared."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: defaultdict[str, deque[_Entry]] = defaultdict(deque)

    def push(self, endpoint: str, fault: Fault, times: int | None) -> None:
        """Queue `fault` for the next `times` requests to `endpoint` (None: every request).

        `endpoint` is a valid endpoint name (see lists.route_for_endpoint), checked by the caller.
        """
        if endpoint == TOKEN_ENDPOINT and fault.kind in LISTS_ONLY:
            raise ValueError(f"fault kind {fault.kind!r} applies to list endpoints only")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for every request")
        with self._lock:
            self._queues[endpoint].append(_Entry(fault, times))

    def take(self, keys: Sequence[str]) -> Fault | None:
        """The fault for this request, if any, consuming one use of it.

        Args:
            keys: the endpoint names the request matches, most specific first ("agents@10001",
                then "agents"): the first with a queued fault supplies it.
        """
        with self._lock:
            queue = next((q for key in keys if (q := self._queues.get(key))), None)
            if queue is None:
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


def fault_reply(spec: ListSpec | None, fault: Fault, sample: object) -> Reply:
    """The reply for a fault that replaces the endpoint's answer.

    Args:
        spec: the list served, or None for the token endpoint.
        fault: any kind not in ANSWERS_NORMALLY.
        sample: what a success would carry (the list, or a token response object).
    """
    content_type = JSON if spec is None else JSON_UTF8
    headers = NO_STORE if spec is None else ()
    kind = fault.kind
    if kind == "status":
        return _status_reply(spec, fault, content_type, headers)
    if kind == "raw":
        return Reply(200, fault.body or b"", fault.content_type or JSON, headers)
    if kind == "html":
        return Reply(200, MAINTENANCE_PAGE, "text/html; charset=utf-8")
    if kind == "reset_before_response":
        return Reply(0, delivery=kind)
    if kind == "big":
        item = BIG_ITEM if spec is None else big_item(spec)
        return Reply(
            200, b"", JSON_UTF8, headers, delivery=kind, size_bytes=fault.size_bytes, big_item=item
        )
    if kind in ("truncated", "reset_mid_body"):
        return Reply(200, dump_json(sample), content_type, headers, delivery=kind)
    if kind == "malformed_json":
        text = dump_json(sample).decode("utf-8")
        # Any strict prefix of an array or object is invalid; cutting the str keeps it UTF-8.
        return Reply(200, text[: max(1, len(text) // 2)].encode("utf-8"), content_type, headers)
    if kind == "non_utf8":
        return Reply(200, _non_utf8_body(spec, sample), content_type, headers)
    return Reply(200, dump_json(_reshaped(spec, kind, sample)), content_type, headers)


def _status_reply(
    spec: ListSpec | None, fault: Fault, content_type: str, headers: tuple[tuple[str, str], ...]
) -> Reply:
    extra = list(headers)
    if fault.retry_after is not None:
        extra.append(("Retry-After", fault.retry_after))
    if fault.status == 401 and spec is not None:
        extra.append(("WWW-Authenticate", 'Bearer error="invalid_token"'))
    if fault.body is not None:
        return Reply(fault.status, fault.body, fault.content_type or JSON, tuple(extra))
    if fault.status == 401:
        error = "invalid_client" if spec is None else "invalid_token"
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


def _reshaped(spec: ListSpec | None, kind: str, sample: object) -> object:
    """The sample with the defect `kind` names: wrong container, types, fields or duplicates."""
    if kind == "object":
        return {"data": sample}
    if spec is None:
        token = dict(sample) if isinstance(sample, dict) else {}
        if kind == "wrong_types":
            token["access_token"] = 12345
            token["expires_in"] = str(token.get("expires_in"))
        elif kind == "missing_fields":
            token.pop("access_token", None)
        return token
    items = _padded(spec, sample, 2 if kind == "wrong_types" else 1)
    label = spec.label
    if kind == "wrong_types":
        # The id takes the other JSON type: a string where an int is due, an int where a string.
        items[0]["id"] = str(items[0].get("id")) if spec.int_ids else WRONG_INT_ID
        items[1][label] = 123
    elif kind == "missing_fields":
        items[-1].pop(spec.required, None)
    elif kind == "duplicate_conflict":
        items.append({**items[0], label: f"{items[0].get(label)} (conflict)"})
    elif kind == "duplicate_identical":
        items.append(dict(items[0]))
    return items


def _padded(spec: ListSpec, sample: object, minimum: int) -> list[dict[str, object]]:
    """Copies of the list's objects, padded with made-up ones so a defect has a target."""
    items = (
        [dict(item) for item in sample if isinstance(item, dict)]
        if isinstance(sample, list)
        else []
    )
    while len(items) < minimum:
        items.append(_made_up(spec, items, "Platform" if spec.name == "platforms" else "Item"))
    return items


def _made_up(spec: ListSpec, items: list[dict[str, object]], prefix: str) -> dict[str, object]:
    """An item of the list's shape whose id none of `items` has."""
    if spec.int_ids:
        next_id = _max_id(items) + 100
        return {"id": next_id, spec.label: f"{prefix} {next_id}"}
    taken = {item.get("id") for item in items}
    number = next(n for n in range(1, len(items) + 2) if _made_up_id(n) not in taken)
    return {"id": _made_up_id(number), spec.label: f"{prefix} {number}"}


def _made_up_id(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


def _max_id(items: list[dict[str, object]]) -> int:
    return max((value for item in items if isinstance(value := item.get("id"), int)), default=0)


def _non_utf8_body(spec: ListSpec | None, sample: object) -> bytes:
    """The sample plus one value encoded in Latin-1, which a strict UTF-8 decoder rejects."""
    text = dump_json(sample)
    if spec is None:
        return text[:-1] + b', "region": "Montr\xe9al"}'
    extra = _made_up(spec, _padded(spec, sample, 0), "Item")
    extra[spec.label] = "Montr\u00e9al"
    # ensure_ascii=False keeps é as one character, which Latin-1 turns into the byte 0xE9.
    encoded = dump_json(extra).decode("utf-8").encode("latin-1")
    return text[:-1] + (b", " if text != b"[]" else b"") + encoded + b"]"


def big_item(spec: ListSpec) -> str:
    """The fixed-width item template of a big body for `spec` ({0}: a 10-digit number)."""
    if spec.name == "platforms":
        return BIG_ITEM
    key = "{0}" if spec.int_ids else '"{0}"'
    return '{{"id": ' + key + ', "' + spec.label + '": "' + spec.name + '-{0}"}}'


def big_layout(size_bytes: int, item: str = BIG_ITEM) -> tuple[int, int]:
    """How many items a big body of about `size_bytes` holds, and its exact length in bytes."""
    item_bytes = len(item.format(BIG_FIRST_ID)) + len(", ")
    count = max(1, round(size_bytes / item_bytes))
    # "[" and "]" take the place of the separator the last item does not have.
    return count, count * item_bytes


def big_chunks(count: int, item: str = BIG_ITEM) -> Iterator[bytes]:
    """A valid JSON array of `count` items, a few thousand at a time."""
    for start in range(0, count, BIG_ITEMS_PER_CHUNK):
        stop = min(start + BIG_ITEMS_PER_CHUNK, count)
        text = ", ".join(item.format(BIG_FIRST_ID + i) for i in range(start, stop))
        prefix = "[" if start == 0 else ", "
        suffix = "]" if stop == count else ""
        yield (prefix + text + suffix).encode("ascii")
