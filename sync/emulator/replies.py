"""What the emulator answers: a status, headers and a body, plus how to deliver them."""

from __future__ import annotations

import json
from dataclasses import dataclass

JSON = "application/json"
JSON_UTF8 = "application/json; charset=utf-8"
# RFC 6749 §5.1: token responses must not be cached by the client or any proxy.
NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


@dataclass(frozen=True)
class Reply:
    """One answer, built without touching the socket so that faults can rewrite it."""

    status: int
    body: bytes = b""
    content_type: str | None = JSON_UTF8
    headers: tuple[tuple[str, str], ...] = ()
    # How the handler sends it: "normal", or one of the transport faults "truncated",
    # "reset_before_response", "reset_mid_body", "drip" (delay_seconds), "big" (size_bytes,
    # and big_item: one item's JSON text with {0} for its fixed-width number).
    delivery: str = "normal"
    delay_seconds: float = 0.0
    size_bytes: int = 0
    big_item: str = ""


def dump_json(value: object) -> bytes:
    """Serialise as the real API does: UTF-8, non-ASCII characters kept as they are."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def json_reply(
    status: int,
    value: object,
    *,
    content_type: str = JSON_UTF8,
    headers: tuple[tuple[str, str], ...] = (),
) -> Reply:
    """A JSON reply."""
    return Reply(status, dump_json(value), content_type, headers)


def error_reply(
    status: int,
    error: str,
    description: str,
    *,
    content_type: str = JSON_UTF8,
    headers: tuple[tuple[str, str], ...] = (),
) -> Reply:
    """An error in the OAuth 2.0 shape (RFC 6749 §5.2), which every endpoint here reuses."""
    body = {"error": error, "error_description": description}
    return json_reply(status, body, content_type=content_type, headers=headers)
