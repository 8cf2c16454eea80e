"""The /_emulator/ control API, for scripts driving an emulator in another process.

A test tool: whoever reaches it can rewrite every answer, so bind the emulator to loopback.

    GET|PUT  platforms                    the platform list (as lists/platforms)
    GET|PUT  lists/{name}[@{siteId}]      one list, e.g. lists/sites, lists/agents@10001
    POST     faults                       {"endpoint", "times", "fault"}; DELETE clears them
    POST     gates                        {"endpoint", "times"} -> {"id"}
    GET      gates/{id}                   {"arrivals", "released"}
    POST     gates/{id}/release
    PUT      rate-limit                   {"limit": int | null, "window_seconds": number}
    PUT      latency                      {"seconds": number}
    POST     revoke, revoke-refresh, expire, reset;  GET stats;  GET|DELETE requests
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

from sync.emulator.faults import Fault
from sync.emulator.handler import Incoming
from sync.emulator.replies import Reply, error_reply, json_reply

if TYPE_CHECKING:
    from sync.emulator.app import Emulator
    from sync.emulator.gates import Gate

CONTROL_PREFIX = "/_emulator/"
OK = {"ok": True}


class _NotFoundError(LookupError):
    """A control request naming something that does not exist (a gate id): 404."""


def handle_control(emulator: Emulator, incoming: Incoming) -> Reply:
    """Answer one control request; never recorded and never rate limited."""
    matched = _match(incoming.path.removeprefix(CONTROL_PREFIX))
    if matched is None:
        return error_reply(404, "not_found", f"no such control endpoint: {incoming.path}")
    methods, args = matched
    action = methods.get(incoming.method)
    if action is None:
        allowed = ", ".join(sorted(methods))
        description = f"{incoming.path} accepts {allowed}"
        return error_reply(405, "method_not_allowed", description, headers=(("Allow", allowed),))
    try:
        return action(emulator, incoming, args)
    except _NotFoundError as exc:
        return error_reply(404, "not_found", str(exc))
    except ValueError as exc:  # JSONDecodeError and our own checks alike
        return error_reply(400, "invalid_request", str(exc))


def _match(name: str) -> tuple[dict[str, _Action], tuple[str, ...]] | None:
    """The methods of the route `name` matches, and the path segments its "{}" stand for."""
    parts = name.split("/")
    for pattern, methods in _ROUTES.items():
        wanted = pattern.split("/")
        if len(wanted) != len(parts):
            continue
        if all(w == p or (w == "{}" and p) for w, p in zip(wanted, parts, strict=True)):
            return methods, tuple(p for w, p in zip(wanted, parts, strict=True) if w == "{}")
    return None


def fault_from_json(document: object) -> tuple[str, Fault, int | None]:
    """Parse a POST /_emulator/faults body into (endpoint, fault, times).

    Body: {"endpoint": "platforms", "times": 1, "fault": {"kind": ..., ...}}; "times" defaults
    to 1 and null means every request; a fault body is "body" (a Latin-1 string, so any bytes
    fit) or "body_b64".
    """
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    endpoint = document.get("endpoint")
    times = document.get("times", 1)
    spec = document.get("fault")
    if not isinstance(endpoint, str):
        raise ValueError('"endpoint" must be a string: "token", a list name, or "agents@10001"')
    if times is not None and (not isinstance(times, int) or isinstance(times, bool)):
        raise ValueError('"times" must be an integer or null')
    if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
        raise ValueError('"fault" must be an object with a "kind"')
    body: bytes | None = None
    if isinstance(spec.get("body_b64"), str):
        try:
            body = base64.b64decode(spec["body_b64"], validate=True)
        except binascii.Error as exc:
            raise ValueError('"body_b64" is not valid base64') from exc
    elif isinstance(spec.get("body"), str):
        try:
            body = spec["body"].encode("latin-1")
        except UnicodeEncodeError as exc:
            raise ValueError('"body" must be a Latin-1 string; use "body_b64"') from exc
    retry_after = spec.get("retry_after")
    content_type = spec.get("content_type")
    if content_type is not None and not isinstance(content_type, str):
        raise ValueError('"content_type" must be a string')
    fault = Fault(
        kind=spec["kind"],
        status=_int(spec, "status", 500),
        retry_after=None if retry_after is None else str(retry_after),
        body=body,
        content_type=content_type,
        delay_seconds=_float(spec, "delay_seconds", 0.0),
        size_bytes=_int(spec, "size_bytes", 0),
    )
    return endpoint, fault, times


def _int(spec: dict[str, object], key: str, default: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'"{key}" must be an integer')
    return value


def _float(spec: dict[str, object], key: str, default: float) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'"{key}" must be a number')
    return float(value)


def _json_body(incoming: Incoming) -> object:
    return json.loads(incoming.body or b"null")


def _json_object(incoming: Incoming) -> dict[str, object]:
    document = _json_body(incoming)
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    return document


def _json_objects(incoming: Incoming) -> list[dict[str, object]]:
    items = _json_body(incoming)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError("expected a JSON array of objects")
    return items


def _list_address(text: str) -> tuple[str, int | None]:
    """ "agents@10001" -> ("agents", 10001); "sites" -> ("sites", None)."""
    name, scoped, site = text.partition("@")
    if not scoped:
        return name, None
    if not (site.isascii() and site.isdecimal()):
        raise ValueError(f"site id {site!r} is not an integer")
    return name, int(site)


def _get_list(emulator: Emulator, incoming: Incoming, args: tuple[str, ...]) -> Reply:
    name, site_id = _list_address(args[0])
    return json_reply(200, emulator.get_list(name, site_id=site_id))


def _set_list(emulator: Emulator, incoming: Incoming, args: tuple[str, ...]) -> Reply:
    name, site_id = _list_address(args[0])
    items = _json_objects(incoming)
    emulator.set_list(name, items, site_id=site_id)
    return json_reply(200, {"ok": True, "count": len(items)})


def _inject(emulator: Emulator, incoming: Incoming, args: tuple[str, ...]) -> Reply:
    emulator.inject(*fault_from_json(_json_body(incoming)))
    return json_reply(200, OK)


def _open_gate(emulator: Emulator, incoming: Incoming, args: tuple[str, ...]) -> Reply:
    document = _json_object(incoming)
    endpoint, times = document.get("endpoint"), document.get("times", 1)
    if not isinstance(endpoint, str):
        raise ValueError('"endpoint" must be a string: "token", a list name, or "agents@10001"')
    if isinstance(times, bool) or not isinstance(times, int):
        raise ValueError('"times" must be an integer')
    return json_reply(200, {"id": emulator.gate(endpoint, times).id})


def _gate(emulator: Emulator, gate_id: str) -> Gate:
    gate = emulator.find_gate(int(gate_id)) if gate_id.isascii() and gate_id.isdecimal() else None
    if gate is None:
        raise _NotFoundError(f"no gate {gate_id!r}")
    return gate


def _show_gate(emulator: Emulator, incoming: Incoming, args: tuple[str, ...]) -> Reply:
    gate = _gate(emulator, args[0])
    return json_reply(200, {"arrivals": gate.arrivals, "released": gate.released})


def _release_gate(emulator: Emulator, incoming: Incoming, args: tuple[str, ...]) -> Reply:
    _gate(emulator, args[0]).release()
    return json_reply(200, OK)


def _set_rate_limit(emulator: Emulator, incoming: Incoming, args: tuple[str, ...]) -> Reply:
    document = _json_object(incoming)
    limit = document.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise ValueError('"limit" must be an integer or null')
    emulator.set_rate_limit(limit, _float(document, "window_seconds", emulator.rate_window_seconds))
    return json_reply(200, OK)


def _set_latency(emulator: Emulator, incoming: Incoming, args: tuple[str, ...]) -> Reply:
    seconds = _float(_json_object(incoming), "seconds", 0.0)
    if seconds < 0:
        raise ValueError('"seconds" must not be negative')
    emulator.latency_seconds = seconds
    return json_reply(200, OK)


def _simple(action: Callable[[Emulator], None]) -> _Action:
    def run(emulator: Emulator, incoming: Incoming, args: tuple[str, ...]) -> Reply:
        action(emulator)
        return json_reply(200, OK)

    return run


def _requests(emulator: Emulator, incoming: Incoming, args: tuple[str, ...]) -> Reply:
    return json_reply(200, [asdict(record) for record in emulator.requests])


_Action = Callable[["Emulator", Incoming, tuple[str, ...]], Reply]
# Patterns: "{}" matches one non-empty path segment, handed to the action in args.
_ROUTES: dict[str, dict[str, _Action]] = {
    "platforms": {
        "GET": lambda emulator, incoming, _: _get_list(emulator, incoming, ("platforms",)),
        "PUT": lambda emulator, incoming, _: _set_list(emulator, incoming, ("platforms",)),
    },
    "lists/{}": {"GET": _get_list, "PUT": _set_list},
    "faults": {"POST": _inject, "DELETE": _simple(lambda e: e.clear_faults())},
    "gates": {"POST": _open_gate},
    "gates/{}": {"GET": _show_gate},
    "gates/{}/release": {"POST": _release_gate},
    "rate-limit": {"PUT": _set_rate_limit},
    "latency": {"PUT": _set_latency},
    "revoke": {"POST": _simple(lambda e: e.revoke_tokens())},
    "revoke-refresh": {"POST": _simple(lambda e: e.revoke_refresh_tokens())},
    "expire": {"POST": _simple(lambda e: e.expire_tokens())},
    "stats": {"GET": lambda emulator, _, __: json_reply(200, emulator.stats)},
    "reset": {"POST": _simple(lambda e: e.reset_stats())},
    "requests": {
        "GET": _requests,
        "DELETE": _simple(lambda e: e.clear_requests()),
    },
}
