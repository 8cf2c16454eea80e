"""Payload primitives: records, canonical JSON and digests, strict JSON decoding, the token
response and its partner claim. The list contracts themselves are in sync.parsing.

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from sync.errors import PayloadError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A JSON-escaped NUL not preceded by an escaping backslash: PostgreSQL text and jsonb refuse it.
ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(slots=True)
class Record:
    """One object of a list resource, as it will be stored.

    `canonical` is what gets stored (`raw`, audit values): written once, when the payload is
    parsed, kept as UTF-8 bytes (smaller than text), and decoded only for rows that are
    written. `fields` are its top-level keys, sorted (an insert's changed_fields), as the
    decoder's own strings, shared between records. `ident` tells records apart within one
    list: the id, or (site, id).
    """

    key: int | str
    site_id: int | None
    typed: tuple[Any, ...]
    canonical: bytes
    digest: str
    fields: tuple[str, ...]

    @property
    def ident(self) -> Hashable:
        return self.key if self.site_id is None else (self.site_id, self.key)

    @property
    def text(self) -> str:
        """The canonical JSON as text, as the database driver takes it."""
        return self.canonical.decode("utf-8")

    @property
    def raw(self) -> dict[str, Any]:
        """The object as stored (decoded from the canonical text on demand)."""
        value: dict[str, Any] = json.loads(self.canonical)
        return value


_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS


def canonical_bytes(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: equal objects give equal bytes.

    orjson does it in C; the standard library covers what orjson refuses (integers beyond 64
    bits), and a lone surrogate fails in both with UnicodeEncodeError or TypeError. orjson's
    result keeps a buffer of at least 4 KiB: a copy keeps only the bytes (records live long).
    """
    try:
        return bytes(memoryview(orjson.dumps(obj, option=_ORJSON_OPTIONS)))
    except TypeError:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8")


def canonical_json(obj: Any) -> str:
    """canonical_bytes as text (the engines' JSON serializer, so stored JSON is canonical)."""
    return canonical_bytes(obj).decode("utf-8")


# Bump whenever what is stored from a body changes (a typed column, the canonical form, which
# fields are dropped): a byte-identical answer then stops short-cutting the comparison, so
# rows written by an older version are brought up to date (see sync.job.fetch.Fetched.digest).
DERIVATION_VERSION = 3


def content_digest(canonical: str | bytes) -> str:
    """128-bit BLAKE2b of the canonical JSON: lets a cycle compare rows without decoding them."""
    data = canonical.encode("utf-8") if isinstance(canonical, str) else canonical
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 parses to inf, which canonical JSON would write as the non-JSON `Infinity`.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def decode_json(body: bytes, what: str) -> Any:
    """Strict UTF-8, strict JSON (no NaN/Infinity); PayloadError with one line otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"{what} is not valid UTF-8 (byte offset {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        detail = str(exc).splitlines()[0][:120]
        raise PayloadError(f"{what} is not valid JSON: {detail}") from None


def canonical_items(items: list[Any]) -> Iterator[bytes]:
    """Each item's canonical JSON, in order.

    One orjson call for the whole list, then cut at the `},{` between items: per-item calls
    cost ten times more. The cut is exact only when every item is an object and it yields one
    piece per item: then every boundary is a `},{`, and any other occurrence (inside a string,
    or between nested objects) would add pieces. A non-object item could hide a boundary (a
    string ending in `}` beside one starting with `{`), so then, or when the count differs,
    or when orjson refuses the list, the items are serialised one by one.
    """
    if not all(type(item) is dict for item in items):
        yield from (_canonical_or_reject(item, index) for index, item in enumerate(items))
        return
    try:
        whole = orjson.dumps(items, option=_ORJSON_OPTIONS)
    except TypeError:
        whole = b""
    pieces = whole[1:-1].split(b"},{") if len(whole) > 2 else []
    del whole
    if not pieces or len(pieces) != len(items):
        for index, item in enumerate(items):
            yield _canonical_or_reject(item, index)
        return
    last = len(pieces) - 1
    for index in range(len(pieces)):
        piece, pieces[index] = pieces[index], b""  # freed as we go, like the items
        yield (b"" if index == 0 else b"{") + piece + (b"" if index == last else b"}")


def _canonical_or_reject(item: Any, index: int) -> bytes:
    try:
        return canonical_bytes(item)
    except (TypeError, UnicodeEncodeError):
        raise PayloadError(f"item {index}: contains a lone UTF-16 surrogate") from None


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A token endpoint's answer. `repr` hides the secrets."""

    access_token: str
    token_type: str
    expires_in: float | None
    refresh_token: str | None

    def __repr__(self) -> str:
        return (
            f"TokenGrant(token_type={self.token_type!r}, expires_in={self.expires_in!r}, "
            f"refresh_token={'***' if self.refresh_token else None})"
        )


def parse_token_response(body: bytes) -> TokenGrant:
    """Validate an RFC 6749 §5.1 token response; only Bearer tokens are usable."""
    data = decode_json(body, "token response")
    if not isinstance(data, dict):
        raise PayloadError("invalid token response: expected a JSON object")
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise PayloadError("invalid token response: access_token missing or not a string")
    token_type = data.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        shown = token_type if isinstance(token_type, str) else type(token_type).__name__
        raise PayloadError(f"invalid token response: token_type {shown[:20]!r} is not Bearer")
    expires_in = data.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)  # some servers quote it
    if expires_in is not None and (
        isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0
    ):
        raise PayloadError("invalid token response: expires_in is not a positive number")
    refresh = data.get("refresh_token")
    if refresh is not None and (not isinstance(refresh, str) or not refresh):
        raise PayloadError("invalid token response: refresh_token is not a string")
    return TokenGrant(access, token_type, float(expires_in) if expires_in else None, refresh)


def partner_id_claim(access_token: str) -> str | None:
    """The `partnerId` claim of a JWT access token, read without verification (naming only)."""
    parts = access_token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    claim = payload.get("partnerId") if isinstance(payload, dict) else None
    if isinstance(claim, int | str) and not isinstance(claim, bool) and str(claim).strip():
        return str(claim).strip()[:64]
    return None
