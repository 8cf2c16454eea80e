"""The /_emulator/ control API, for scripts driving an emulator in another process.

A test tool: whoever reaches it can rewrite every answer, so bind the emulator to loopback.
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

CONTROL_PREFIX = "/_emulator/"
OK = {"ok": True}


def handle_control(emulator: Emulator, incoming: Incoming) -> Reply:
    """Answer one control request; never recorded and never rate limited."""
    name = incoming.path.removeprefix(CONTROL_PREFIX)
    methods = _ROUTES.get(name)
    if methods is None:
        return error_reply(404, "not_found", f"no such control endpoint: {incoming.path}")
    action = methods.get(incoming.method)
    if action is None:
        allowed = ", ".join(sorted(methods))
        description = f"{incoming.path} accepts {allowed}"
        return error_reply(405, "method_not_allowed", description, headers=(("Allow", allowed),))
    try:
        return action(emulator, incoming)
    except ValueError as exc:  # JSONDecodeError and our own checks alike
        return error_reply(400, "invalid_request", str(exc))


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
        raise ValueError('"endpoint" must be "token" or "platforms"')
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


def _set_platforms(emulator: Emulator, incoming: Incoming) -> Reply:
    platforms = _json_body(incoming)
    if not isinstance(platforms, list) or not all(isinstance(p, dict) for p in platforms):
        raise ValueError("expected a JSON array of objects")
    emulator.set_platforms(platforms)
    return json_reply(200, {"ok": True, "count": len(platforms)})


def _inject(emulator: Emulator, incoming: Incoming) -> Reply:
    emulator.inject(*fault_from_json(_json_body(incoming)))
    return json_reply(200, OK)


def _simple(action: Callable[[Emulator], None]) -> Callable[[Emulator, Incoming], Reply]:
    def run(emulator: Emulator, incoming: Incoming) -> Reply:
        action(emulator)
        return json_reply(200, OK)

    return run


def _requests(emulator: Emulator, incoming: Incoming) -> Reply:
    return json_reply(200, [asdict(record) for record in emulator.requests])


_Action = Callable[["Emulator", Incoming], Reply]
_ROUTES: dict[str, dict[str, _Action]] = {
    "platforms": {
        "GET": lambda emulator, _: json_reply(200, emulator.platforms),
        "PUT": _set_platforms,
    },
    "faults": {"POST": _inject, "DELETE": _simple(lambda e: e.clear_faults())},
    "revoke": {"POST": _simple(lambda e: e.revoke_tokens())},
    "revoke-refresh": {"POST": _simple(lambda e: e.revoke_refresh_tokens())},
    "expire": {"POST": _simple(lambda e: e.expire_tokens())},
    "stats": {"GET": lambda emulator, _: json_reply(200, emulator.stats)},
    "reset": {"POST": _simple(lambda e: e.reset_stats())},
    "requests": {
        "GET": _requests,
        "DELETE": _simple(lambda e: e.clear_requests()),
    },
}
