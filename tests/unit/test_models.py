"""The payload contract: what a platform list and a token response must look like."""

from __future__ import annotations

import base64
import json

import pytest

from sync.errors import PayloadError
from sync.models import (
    canonical_json,
    content_digest,
    parse_token_response,
    partner_id_claim,
)
from tests.records import parse_platform_list


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def rejection(raw: bytes) -> str:
    """The message of the PayloadError that `raw` must raise; always a single line."""
    with pytest.raises(PayloadError) as caught:
        parse_platform_list(raw)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    return message


def jwt(claims: object) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


# --------------------------------------------------------------------------- valid lists


def test_valid_list_gives_one_record_per_platform_in_api_order() -> None:
    records = parse_platform_list(body([{"id": 3, "name": "c"}, {"id": 1, "name": "a"}]))

    assert [(r.key, r.typed[0]) for r in records] == [(3, "c"), (1, "a")]


def test_unknown_fields_are_kept_in_raw() -> None:
    item = {"id": 1, "name": "Web", "isEnabled": True, "tags": ["x"], "meta": {"k": None}}

    (record,) = parse_platform_list(body([item]))

    assert record.raw == item


def test_identical_duplicates_are_collapsed_into_the_first_occurrence() -> None:
    records = parse_platform_list(
        body(
            [
                {"id": 1, "name": "a", "x": 1},
                {"id": 2, "name": "b"},
                {"x": 1, "name": "a", "id": 1},
            ]
        )
    )

    assert [r.key for r in records] == [1, 2]


def test_empty_array_is_a_valid_empty_list() -> None:
    assert parse_platform_list(b"[]") == []


def test_empty_name_and_negative_and_int64_boundary_ids_are_accepted() -> None:
    edges = [{"id": -(2**63), "name": ""}, {"id": 2**63 - 1, "name": "max"}, {"id": 0, "name": "z"}]

    assert [r.key for r in parse_platform_list(body(edges))] == [-(2**63), 2**63 - 1, 0]


def test_non_ascii_names_survive_decoding() -> None:
    (record,) = parse_platform_list('[{"id": 1, "name": "Zoë 日本"}]'.encode())

    assert record.typed[0] == "Zoë 日本"


def test_a_literal_backslash_u0000_text_is_not_mistaken_for_a_nul() -> None:
    """The six characters `\\u0000` inside a name are ordinary text, not a NUL."""
    (record,) = parse_platform_list(body([{"id": 1, "name": "\\u0000"}]))

    assert record.typed[0] == "\\u0000"


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b'[{"id": 1, "name": "a"', "platform list is not valid JSON", id="truncated"),
        pytest.param(b"", "platform list is not valid JSON", id="empty-body"),
        pytest.param(
            b"<!DOCTYPE html><html><body>Maintenance</body></html>",
            "platform list is not valid JSON",
            id="html",
        ),
        pytest.param(
            b'{"data": []}', "invalid platform list: expected a JSON array, got object", id="object"
        ),
        pytest.param(b"null", "expected a JSON array", id="null"),
        pytest.param(b'"platforms"', "expected a JSON array", id="string"),
        pytest.param(b"[1]", "invalid platform list: item 0: ", id="number-item"),
        pytest.param(b'[{"id":1,"name":"a"}, ["x"]]', "item 1: ", id="array-item"),
        pytest.param(b'[{"id":1,"name":"a"}, null]', "item 1: ", id="null-item"),
        pytest.param(
            b'[{"name": "a"}]', "item 0: id: expected a 64-bit integer, got null", id="missing-id"
        ),
        pytest.param(b'[{"id": 1}]', "item 0: name: is required", id="missing-name"),
        pytest.param(b'[{"id": "1", "name": "a"}]', "item 0: id: ", id="string-id"),
        pytest.param(b'[{"id": null, "name": "a"}]', "item 0: id: ", id="null-id"),
        pytest.param(b'[{"id": true, "name": "a"}]', "item 0: id: ", id="bool-id"),
        pytest.param(b'[{"id": 1.0, "name": "a"}]', "item 0: id: ", id="float-id"),
        pytest.param(b'[{"id": 1e2, "name": "a"}]', "item 0: id: ", id="exponent-id"),
        pytest.param(b'[{"id": 9223372036854775808, "name": "a"}]', "item 0: id: ", id="id>int64"),
        pytest.param(b'[{"id": -9223372036854775809, "name": "a"}]', "item 0: id: ", id="id<int64"),
        pytest.param(b'[{"id": 1, "name": true}]', "item 0: name: ", id="boolean-name"),
        pytest.param(b'[{"id": 1, "name": null}]', "item 0: name: ", id="null-name"),
        pytest.param(b'[{"id": 1, "name": ["a"]}]', "item 0: name: ", id="array-name"),
        pytest.param(
            b'[{"id": 7, "name": "a"}, {"id": 7, "name": "b"}]',
            "invalid platform list: id 7 appears twice with different content",
            id="conflicting-duplicate",
        ),
        pytest.param(
            b'[{"id": 7, "name": "a"}, {"id": 7, "name": "a", "extra": 1}]',
            "id 7 appears twice with different content",
            id="duplicate-with-extra-field",
        ),
        pytest.param(
            b'[{"id": 1, "name": "caf\xe9"}]',
            "platform list is not valid UTF-8 (byte offset 23)",
            id="latin-1",
        ),
        pytest.param(b'[{"id": 1, "name": "a", "x": NaN}]', "NaN is not valid JSON", id="nan"),
        pytest.param(b'[{"id": 1, "name": "a", "x": Infinity}]', "not valid JSON", id="infinity"),
        pytest.param(
            b'[{"id": 1, "name": "a", "x": -Infinity}]', "not valid JSON", id="minus-infinity"
        ),
        pytest.param(
            b'[{"id": 1, "name": "a\\u0000b"}]',
            "invalid platform list: item 0: contains a NUL character",
            id="nul-in-name",
        ),
        pytest.param(
            b'[{"id": 1, "name": "a", "k\\u0000": 1}]', "contains a NUL character", id="nul-in-key"
        ),
        pytest.param(
            b'[{"id": 1, "name": "a"}, {"id": 2, "name": "\\ud800"}]',
            "invalid platform list: item 1: contains a lone UTF-16 surrogate",
            id="lone-surrogate",
        ),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "not valid JSON", id="deep-nesting"),
    ],
)
def test_payloads_outside_the_contract_are_rejected_with_a_one_line_message(
    raw: bytes, expected: str
) -> None:
    assert expected in rejection(raw)


def test_a_number_too_large_for_a_float_is_rejected() -> None:
    """1e400 overflows to infinity, which canonical JSON (and PostgreSQL jsonb) cannot hold."""
    message = rejection(b'[{"id": 1, "name": "a", "x": 1e400}]')

    assert "not valid JSON" in message


def test_the_rejection_names_the_first_item_and_field_at_fault() -> None:
    message = rejection(b'[{"id": 1, "name": "a"}, {"id": 2, "name": {}}, {}]')

    assert (
        message == "invalid platform list: item 1: name: expected a string or a number, got object"
    )


def test_rejection_messages_do_not_echo_the_offending_values() -> None:
    message = rejection(b'[{"id": "secret-looking-value", "name": "a"}]')

    assert "secret-looking-value" not in message


# --------------------------------------------------------------------------- canonical form


def test_canonical_json_and_digest_do_not_depend_on_key_order() -> None:
    (first,) = parse_platform_list(b'[{"id": 1, "name": "a", "z": {"b": 1, "a": 2}}]')
    (second,) = parse_platform_list(b'[{"z": {"a": 2, "b": 1}, "name": "a", "id": 1}]')

    assert first.canonical == second.canonical == b'{"id":1,"name":"a","z":{"a":2,"b":1}}'
    assert first.digest == second.digest


def test_digest_changes_when_any_value_changes() -> None:
    (before,) = parse_platform_list(b'[{"id": 1, "name": "a", "x": 1}]')
    (after,) = parse_platform_list(b'[{"id": 1, "name": "a", "x": 2}]')

    assert before.digest != after.digest


def test_digest_is_pinned_so_stored_hashes_stay_comparable() -> None:
    """A changed algorithm would make every stored row look updated on the next cycle."""
    assert content_digest(canonical_json({"name": "a", "id": 1})) == (
        "0b4d477c93249953bb996d5945b683dd"
    )


# The one-call-and-cut path must give exactly what one call per item gives.
CUT_CASES = {
    "boundary inside a string": [{"id": 1, "name": "a},{b"}, {"id": 2, "name": "},{"}],
    "nested arrays of objects": [
        {"id": 1, "name": "a", "x": [{"k": 1}, {"k": 2}]},
        {"id": 2, "name": "b", "x": [{"k": [{"z": 0}, {"z": 1}]}]},
    ],
    "nested objects at the end": [{"id": 1, "name": "a", "z": {"y": {}}}, {"id": 2, "name": "b"}],
    "empty objects": [{}, {}, {}],
}


@pytest.mark.parametrize("items", CUT_CASES.values(), ids=CUT_CASES.keys())
def testcanonical_items_are_those_of_one_call_per_item(items: list[object]) -> None:
    from sync.models import canonical_bytes, canonical_items

    assert list(canonical_items(list(items))) == [canonical_bytes(item) for item in items]


@pytest.mark.parametrize(
    "items",
    [
        [{"id": 1}, [{"a": 1}, {"b": 2}]],
        [[{"a": 1}, {"b": 2}], 5],
        [{"id": 1, "name": "a"}, [{"x": "},{"}, {"y": 0}], "tail"],
    ],
    ids=["object then array of objects", "array of objects then a number", "three kinds"],
)
def testcanonical_items_of_mixed_lists_are_exact(items: list[object]) -> None:
    """The cut is only trusted when every item is an object (orjson's output is opaque)."""
    from sync.models import canonical_bytes, canonical_items

    assert list(canonical_items(list(items))) == [canonical_bytes(item) for item in items]


def test_float_digests_are_pinned() -> None:
    """orjson's float output is part of the stored hash: a change would rewrite every row."""
    (record,) = parse_platform_list(b'[{"id": 1, "name": "f", "a": 0.1, "b": 1e-7, "c": 2.50}]')

    assert record.canonical == b'{"a":0.1,"b":1e-7,"c":2.5,"id":1,"name":"f"}'
    assert record.digest == content_digest(record.canonical)
    assert record.digest == "260f383e02e9dd4fad9656105dc7bfc9"


def test_canonical_json_keeps_non_ascii_as_text() -> None:
    assert canonical_json({"name": "é"}) == '{"name":"é"}'


# --------------------------------------------------------------------------- token response


def test_token_response_with_all_fields() -> None:
    grant = parse_token_response(
        body(
            {
                "access_token": "AT",
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": "RT",
            }
        )
    )

    assert (grant.access_token, grant.expires_in, grant.refresh_token) == ("AT", 3600.0, "RT")


def test_refresh_token_is_optional() -> None:
    grant = parse_token_response(body({"access_token": "AT", "token_type": "Bearer"}))

    assert grant.refresh_token is None
    assert grant.expires_in is None


def test_token_type_is_compared_case_insensitively() -> None:
    grant = parse_token_response(body({"access_token": "AT", "token_type": "bearer"}))

    assert grant.access_token == "AT"


def test_quoted_expires_in_is_accepted() -> None:
    grant = parse_token_response(
        body({"access_token": "AT", "token_type": "Bearer", "expires_in": "1800"})
    )

    assert grant.expires_in == 1800.0


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param({"token_type": "Bearer"}, "access_token missing", id="missing-access-token"),
        pytest.param(
            {"access_token": "", "token_type": "Bearer"}, "access_token missing", id="empty"
        ),
        pytest.param(
            {"access_token": 5, "token_type": "Bearer"}, "access_token missing", id="number"
        ),
        pytest.param({"access_token": "AT", "token_type": "mac"}, "is not Bearer", id="mac"),
        pytest.param({"access_token": "AT"}, "is not Bearer", id="missing-token-type"),
        pytest.param(
            {"access_token": "AT", "token_type": "Bearer", "expires_in": -5},
            "expires_in is not a positive number",
            id="negative-expires-in",
        ),
        pytest.param(
            {"access_token": "AT", "token_type": "Bearer", "expires_in": "-5"},
            "expires_in is not a positive number",
            id="quoted-negative-expires-in",
        ),
        pytest.param(
            {"access_token": "AT", "token_type": "Bearer", "expires_in": 0},
            "expires_in is not a positive number",
            id="zero-expires-in",
        ),
        pytest.param(
            {"access_token": "AT", "token_type": "Bearer", "expires_in": "soon"},
            "expires_in is not a positive number",
            id="text-expires-in",
        ),
        pytest.param(
            {"access_token": "AT", "token_type": "Bearer", "expires_in": True},
            "expires_in is not a positive number",
            id="bool-expires-in",
        ),
        pytest.param(
            {"access_token": "AT", "token_type": "Bearer", "refresh_token": 7},
            "refresh_token is not a string",
            id="number-refresh-token",
        ),
        pytest.param(["AT"], "expected a JSON object", id="array"),
    ],
)
def test_unusable_token_responses_are_rejected(payload: object, expected: str) -> None:
    with pytest.raises(PayloadError, match="invalid token response") as caught:
        parse_token_response(body(payload))

    assert expected in str(caught.value)


def test_token_response_that_is_not_json_is_rejected_without_echoing_it() -> None:
    with pytest.raises(PayloadError, match="token response is not valid JSON") as caught:
        parse_token_response(b"access_token=SECRET-AT&token_type=bearer")

    assert "SECRET-AT" not in str(caught.value)


def test_token_grant_repr_never_shows_the_tokens() -> None:
    grant = parse_token_response(
        body(
            {
                "access_token": "ACCESS-CANARY",
                "token_type": "Bearer",
                "expires_in": 60,
                "refresh_token": "REFRESH-CANARY",
            }
        )
    )

    for text in (repr(grant), str(grant), f"{grant}", repr([grant])):
        assert "ACCESS-CANARY" not in text
        assert "REFRESH-CANARY" not in text


# --------------------------------------------------------------------------- partnerId claim


def test_partner_id_claim_as_a_string() -> None:
    assert partner_id_claim(jwt({"sub": "x", "partnerId": "p-42"})) == "p-42"


def test_partner_id_claim_as_an_integer() -> None:
    assert partner_id_claim(jwt({"partnerId": 10042})) == "10042"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("opaque-token-value", id="not-a-jwt"),
        pytest.param("a.b", id="two-parts"),
        pytest.param("a.!!!not base64!!!.c", id="garbage-base64"),
        pytest.param("a.é.c", id="non-ascii"),
        pytest.param("a." + base64.urlsafe_b64encode(b"\xff\xfe").decode() + ".c", id="not-utf8"),
        pytest.param("a." + base64.urlsafe_b64encode(b"not json").decode() + ".c", id="not-json"),
        pytest.param(jwt(["partnerId"]), id="claims-not-an-object"),
        pytest.param(jwt({"sub": "x"}), id="no-claim"),
        pytest.param(jwt({"partnerId": True}), id="bool-claim"),
        pytest.param(jwt({"partnerId": 1.5}), id="float-claim"),
        pytest.param(jwt({"partnerId": "  "}), id="blank-claim"),
        pytest.param(jwt({"partnerId": {"id": 1}}), id="object-claim"),
    ],
)
def test_partner_id_claim_is_none_when_absent_or_unreadable(token: str) -> None:
    assert partner_id_claim(token) is None
