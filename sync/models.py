"""Payload contracts: the platform list and the token response, validated with pydantic.

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import orjson
from pydantic import ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from sync.errors import PayloadError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A JSON-escaped NUL not preceded by an escaping backslash: PostgreSQL text and jsonb refuse it.
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class _PlatformItem(TypedDict):
    __pydantic_config__ = ConfigDict(extra="allow", strict=True)  # type: ignore[misc]
    id: Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
    name: StrictStr


@functools.cache
def _platform_item() -> TypeAdapter[_PlatformItem]:
    """Built on first use: only an invalid payload needs pydantic's account of it."""
    return TypeAdapter(_PlatformItem)


@dataclass(slots=True)
class Record:
    """One object of a list resource: its key, name, canonical JSON and content hash.

    The canonical JSON is what gets stored (`raw`, audit values): it is written once, when
    the payload is parsed, kept as UTF-8 bytes (smaller than text), and decoded only for
    rows that are written.
    """

    key: int
    name: str
    canonical: bytes
    digest: str

    @property
    def text(self) -> str:
        """The canonical JSON as text, as the database driver takes it."""
        return self.canonical.decode("utf-8")

    @property
    def raw(self) -> dict[str, Any]:
        """The object as received (decoded from the canonical text on demand)."""
        value: dict[str, Any] = json.loads(self.canonical)
        return value


_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS


def canonical_bytes(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: equal objects give equal bytes.

    orjson does it in C; the standard library covers what orjson refuses (integers beyond 64
    bits), and a lone surrogate fails in both with UnicodeEncodeError or TypeError.
    """
    try:
        return orjson.dumps(obj, option=_ORJSON_OPTIONS)
    except TypeError:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8")


def canonical_json(obj: Any) -> str:
    """canonical_bytes as text (the engines' JSON serializer, so stored JSON is canonical)."""
    return canonical_bytes(obj).decode("utf-8")


# Bump whenever what is stored from a body changes (a typed column, the canonical form, which
# fields are dropped): a byte-identical answer then stops short-cutting the comparison, so
# rows written by an older version are brought up to date.
DERIVATION_VERSION = 2


def snapshot_digest(body: bytes, *, variant: str = "") -> str:
    """BLAKE2b-128 of a response body, salted with how this version derives rows from it."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"derivation {DERIVATION_VERSION} {variant}\0".encode())
    digest.update(body)
    return digest.hexdigest()


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


def _first_error(exc: ValidationError, index: int) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    field = ".".join(str(p) for p in first.get("loc", ()))
    where = f"item {index}"
    text = f"{where}: {field}: {first['msg']}" if field else f"{where}: {first['msg']}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more)"
    return text


def parse_platform_list(body: bytes) -> list[Record]:
    """Validate a platform-list body and return one Record per distinct platform, in API order.

    The common case is checked by hand in one pass (100,000 items in about 0.2 s); the first
    item that fails is handed to the pydantic model, which says what is wrong with it.

    Raises:
        PayloadError: not UTF-8 or JSON, not an array of objects with an integer `id` and a
            string `name`, a NUL or lone surrogate anywhere, or duplicate ids that differ.
    """
    data = decode_json(body, "platform list")
    if not isinstance(data, list):
        raise PayloadError(
            f"invalid platform list: expected a JSON array, got {type(data).__name__}"
        )
    records: dict[int, Record] = {}
    blake2b = hashlib.blake2b
    for index, (item, canonical) in enumerate(zip(data, _canonical_items(data), strict=True)):
        # Drop each parsed object as soon as its Record exists: at 100,000 items the decoded
        # list and the records would otherwise be in memory together.
        data[index] = None
        key = item.get("id") if type(item) is dict else None
        name = item.get("name") if type(item) is dict else None
        # type() rather than isinstance(): a JSON true must not pass for the integer 1.
        if type(key) is not int or type(name) is not str or not INT64_MIN <= key <= INT64_MAX:
            _explain(item, index)
        if b"\\u0000" in canonical and _ESCAPED_NUL.search(canonical):
            raise PayloadError(f"invalid platform list: item {index}: contains a NUL character")
        digest = blake2b(canonical, digest_size=16).hexdigest()
        seen = records.get(key)
        if seen is None:
            records[key] = Record(key, name, canonical, digest)
        elif seen.digest != digest:
            raise PayloadError(
                f"invalid platform list: id {key} appears twice with different content"
            )
    return list(records.values())


def _canonical_items(items: list[Any]) -> Iterator[bytes]:
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
        raise PayloadError(
            f"invalid platform list: item {index}: contains a lone UTF-16 surrogate"
        ) from None


def _explain(item: Any, index: int) -> NoReturn:
    """Raise the pydantic model's account of why `item` is not a platform."""
    try:
        _platform_item().validate_python(item)
    except ValidationError as exc:
        raise PayloadError(f"invalid platform list: {_first_error(exc, index)}") from None
    raise PayloadError(f"invalid platform list: item {index}: not a platform")  # pragma: no cover


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
