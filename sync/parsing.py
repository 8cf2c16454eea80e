"""The contract of a list body: a JSON array of objects whose `id` and typed fields have the types
the resource declares (sync.resources). Anything else fails the whole list, with one line that
names the item and the field, never a value.

Pure functions: no I/O, no clock. Checked by hand in one pass: 100,000 items parse in a few
tenths of a second.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from sync.errors import PayloadError
from sync.models import (
    ESCAPED_NUL,
    INT64_MAX,
    INT64_MIN,
    Record,
    canonical_items,
    decode_json,
)
from sync.resources import KEY_TEXT_LENGTH, Column, Resource

# MariaDB's DATETIME starts at year 1000. An earlier date is a placeholder (.NET's
# DateTime.MinValue, "0001-01-01T00:00:00", means "never"), kept in `raw`, NULL in the column.
EARLIEST_TIME = datetime(1000, 1, 1, tzinfo=UTC)


class _Invalid(Exception):
    """A field that breaks the contract; parse_list adds where."""


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        # The reference does not pin these types: a number is kept as its JSON text.
        return orjson.dumps(value).decode() if isinstance(value, float) else str(value)
    raise _Invalid(f"expected a string or a number, got {_json_type(value)}")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _Invalid(f"expected true or false, got {_json_type(value)}")


def _int(value: Any) -> int:
    # type() rather than isinstance(): a JSON true must not pass for the integer 1.
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return value
    raise _Invalid(f"expected a 64-bit integer, got {_json_type(value)}")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        raise _Invalid(f"expected an ISO-8601 time, got {_json_type(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid("not an ISO-8601 time") from None
    # Without an offset the API means UTC.
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return parsed if parsed >= EARLIEST_TIME else None


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "text": _text,
    "bool": _bool,
    "int": _int,
    "time": _time,
}


def _typed(item: dict[str, Any], columns: tuple[Column, ...]) -> tuple[Any, ...]:
    values: list[Any] = []
    for column in columns:
        value = item.get(column.field)
        if value is None:
            if column.required:
                raise _Invalid(f"{column.field}: is required")
            values.append(None)
            continue
        try:
            values.append(_CONVERT[column.kind](value))
        except _Invalid as exc:
            raise _Invalid(f"{column.field}: {exc}") from None
    return tuple(values)


def typed_values(item: dict[str, Any], resource: Resource) -> tuple[Any, ...] | None:
    """The typed column values `item` gives, or None if it breaks the contract."""
    try:
        return _typed(item, resource.columns)
    except _Invalid:
        return None


def _key(item: dict[str, Any], resource: Resource) -> int | str:
    key = item.get("id")
    if resource.key == "int":
        try:
            return _int(key)
        except _Invalid as exc:
            raise _Invalid(f"id: {exc}") from None
    if not isinstance(key, str) or not key or len(key) > KEY_TEXT_LENGTH:
        got = _json_type(key) if not isinstance(key, str) else f"{len(key)} characters"
        raise _Invalid(f"id: expected a string of 1 to {KEY_TEXT_LENGTH} characters, got {got}")
    return key


def parse_list(
    body: bytes,
    resource: Resource,
    *,
    site_id: int | None = None,
    keep_personal: bool = False,
) -> list[Record]:
    """Validate a list body and return one Record per distinct object, in API order.

    Personal fields are dropped first (unless `keep_personal`), so nothing stored, hashed or
    compared ever holds them. Unknown fields are kept.

    Raises:
        PayloadError: not UTF-8 or JSON, not an array of objects, an `id` or a typed field of
            the wrong JSON type, an unparsable time, a NUL or lone surrogate anywhere, or the
            same id twice with different content.
    """
    what = f"{resource.singular.replace('_', ' ')} list"
    data = decode_json(body, what)
    if not isinstance(data, list):
        raise PayloadError(f"invalid {what}: expected a JSON array, got {_json_type(data)}")
    if not keep_personal and (resource.personal or resource.personal_substring):
        for item in data:
            if type(item) is dict:
                for name in [name for name in item if resource.is_personal(name)]:
                    del item[name]
    records: dict[int | str, Record] = {}
    blake2b, columns = hashlib.blake2b, resource.columns
    try:
        for index, canonical in enumerate(canonical_items(data)):
            item = data[index]
            # Drop each decoded object as soon as its Record exists: at 100,000 items the
            # decoded list and the records would otherwise be in memory together.
            data[index] = None
            if type(item) is not dict:
                raise PayloadError(f"item {index}: expected an object, got {_json_type(item)}")
            try:
                key, typed = _key(item, resource), _typed(item, columns)
            except _Invalid as exc:
                raise PayloadError(f"item {index}: {exc}") from None
            if b"\\u0000" in canonical and ESCAPED_NUL.search(canonical):
                raise PayloadError(f"item {index}: contains a NUL character")
            digest = blake2b(canonical, digest_size=16).hexdigest()
            seen = records.get(key)
            if seen is None:
                # A tuple of the decoder's key strings: small orjson results would each keep
                # a 4 KiB buffer, hundreds of MB over 100,000 records.
                records[key] = Record(key, site_id, typed, canonical, digest, tuple(sorted(item)))
            elif seen.digest != digest:
                raise PayloadError(f"id {key!r} appears twice with different content")
    except PayloadError as exc:
        raise PayloadError(f"invalid {what}: {exc}") from None
    return list(records.values())
