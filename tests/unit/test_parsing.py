"""The contract of every list: keys of the declared type, typed columns converted or refused,
unknown fields kept, personal fields never kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from sync.errors import PayloadError
from sync.parsing import parse_list
from sync.reconcile import changed_fields
from sync.resources import REGISTRY, Resource, in_sync_order, snake_case

AGENTS, PLANS, PRODUCTS, ROLES, SITES = (
    REGISTRY[name] for name in ("agents", "plans", "products", "roles", "sites")
)
GUID = "332f2a08-a6d7-5b7c-adcc-e0298ecb99bf"


def body(items: list[Any]) -> bytes:
    return json.dumps(items).encode()


def refused(resource: Resource, items: list[Any]) -> str:
    with pytest.raises(PayloadError) as caught:
        parse_list(body(items), resource)
    message = str(caught.value)
    assert "\n" not in message
    return message


def stored(resource: Resource, item: dict[str, Any], **options: Any) -> dict[str, Any]:
    (record,) = parse_list(body([item]), resource, **options)
    return record.raw


# --------------------------------------------------------------------------- keys


def test_string_and_guid_keys_are_kept_as_text() -> None:
    (product,) = parse_list(body([{"id": "LiveChat"}]), PRODUCTS)
    (agent,) = parse_list(body([{"id": GUID}]), AGENTS, site_id=10001)

    assert product.key == "LiveChat" and product.ident == "LiveChat"
    assert (agent.key, agent.site_id, agent.ident) == (GUID, 10001, (10001, GUID))


@pytest.mark.parametrize(
    ("resource", "key", "expected"),
    [
        (PRODUCTS, 7, "id: expected a string of 1 to 128 characters, got number"),
        (PRODUCTS, "", "got 0 characters"),
        (PRODUCTS, "x" * 129, "got 129 characters"),
        (AGENTS, None, "got null"),
        (SITES, "10001", "id: expected a 64-bit integer, got string"),
        (PLANS, True, "got boolean"),
    ],
)
def test_a_key_of_another_type_fails_the_list(
    resource: Resource, key: object, expected: str
) -> None:
    assert expected in refused(resource, [{"id": key}])


# --------------------------------------------------------------------------- typed columns


def test_typed_columns_are_the_snake_case_of_the_fields() -> None:
    assert snake_case("countryOrRegion") == "country_or_region"
    assert SITES.typed_columns == (
        "platform_id", "status", "company", "website", "country_or_region", "time_zone",
        "external_id",
    )  # fmt: skip
    assert AGENTS.typed_columns == ("is_admin", "is_active", "is_locked", "time_zone",
                                    "created_time")  # fmt: skip


def test_values_are_converted_to_their_column_types() -> None:
    (plan,) = parse_list(
        body([{"id": 1, "name": 42, "isEnabled": False, "groupName": None,
               "createdTime": "2022-07-08T09:30:00.1234567Z",
               "lastUpdatedTime": "2023-02-14T18:05:42+02:00"}]),
        PLANS,
    )  # fmt: skip

    assert plan.typed == (
        "42",  # a number where text is due is kept as its text
        False,
        None,
        datetime(2022, 7, 8, 9, 30, 0, 123456, tzinfo=UTC),
        datetime(2023, 2, 14, 16, 5, 42, tzinfo=UTC),
    )


def test_absent_fields_are_null_and_unknown_fields_are_kept() -> None:
    item = {"id": 1, "featureComparisonDescription": "", "isBestseller": False}
    (plan,) = parse_list(body([item]), PLANS)

    assert plan.typed == (None, None, None, None, None)
    assert plan.raw == item


def test_a_time_without_an_offset_is_utc_and_a_placeholder_year_is_null() -> None:
    (early, late) = parse_list(
        body([{"id": 1, "createdTime": "0001-01-01T00:00:00"},
              {"id": 2, "createdTime": "2022-07-08T09:30:00"}]),
        PLANS,
    )  # fmt: skip

    assert early.typed[3] is None and early.raw["createdTime"] == "0001-01-01T00:00:00"
    assert late.typed[3] == datetime(2022, 7, 8, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("resource", "item", "expected"),
    [
        (PLANS, {"id": 1, "isEnabled": "true"}, "isEnabled: expected true or false, got string"),
        (PLANS, {"id": 1, "createdTime": "yesterday"}, "createdTime: not an ISO-8601 time"),
        (PLANS, {"id": 1, "createdTime": 1657272600}, "expected an ISO-8601 time, got number"),
        (SITES, {"id": 1, "company": {"name": "x"}}, "company: expected a string or a number"),
        (SITES, {"id": 1, "platformId": "100"}, "platformId: expected a 64-bit integer"),
        (SITES, {"id": 1, "status": ["Open"]}, "status: expected a string or a number, got array"),
        (ROLES, {"id": GUID, "name": True}, "name: expected a string or a number, got boolean"),
    ],
)
def test_a_field_of_another_json_type_fails_the_whole_list(
    resource: Resource, item: dict[str, Any], expected: str
) -> None:
    message = refused(resource, [{"id": 2}, item] if resource.key == "int" else [item])

    assert expected in message
    assert f"invalid {resource.singular.replace('_', ' ')} list: item " in message


def test_the_roles_quirk_of_permission_ids_as_one_string_is_kept_as_it_came() -> None:
    item = {"id": GUID, "name": "Custom", "type": "Custom", "permissionIds": ["4,5"]}

    assert stored(ROLES, item)["permissionIds"] == ["4,5"]


# --------------------------------------------------------------------------- personal data

AGENT = {
    "id": GUID,
    "email": "ada@example.com",
    "phone": "+1 555",
    "firstName": "Ada",
    "lastName": "Lovelace",
    "displayName": "Ada L.",
    "bio": "data:text/plain;base64,QWRh",
    "title": "Admin",
    "avatar": "https://files.example/a.png",
    "customizeAvatar": "iVBORw0KGgo=",
    "ifCustomizeAvatar": True,
    "systemAvatarId": "5dfc193c-780c-5616-9022-b7c9e0edf424",
    "AvatarUrl": "https://files.example/b.png",
    "isAdmin": True,
    "timeZone": "UTC",
}
PERSONAL = [key for key in AGENT if key not in ("id", "isAdmin", "timeZone")]


def test_agents_personal_fields_are_dropped_before_anything_is_kept() -> None:
    (record,) = parse_list(body([AGENT]), AGENTS, site_id=1)

    assert record.raw == {"id": GUID, "isAdmin": True, "timeZone": "UTC"}
    for field in PERSONAL:
        assert field.encode() not in record.canonical
    assert record.fields == ("id", "isAdmin", "timeZone")


def test_personal_fields_are_kept_only_when_asked() -> None:
    assert stored(AGENTS, AGENT, keep_personal=True) == AGENT


def test_the_hash_of_an_agent_ignores_its_personal_fields() -> None:
    """A renamed agent is no change at all: nothing personal is stored to change."""
    (before,) = parse_list(body([AGENT]), AGENTS, site_id=1)
    (after,) = parse_list(body([{**AGENT, "lastName": "Byron"}]), AGENTS, site_id=1)

    assert before.digest == after.digest


def test_personal_fields_of_other_lists_are_not_touched() -> None:
    site = {"id": 1, "firstName": "Ada", "phone": "+1 555"}
    assert stored(SITES, site) == site


# --------------------------------------------------------------------------- changed_fields


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, {"id": 1, "b": 2, "a": 1}, ["a", "b", "id"]),
        ({"id": 1, "b": 2}, None, ["b", "id"]),
        ({"id": 1, "a": 1, "b": 2}, {"id": 1, "a": 1, "b": 3, "c": 0}, ["b", "c"]),
        ({"id": 1, "gone": 1}, {"id": 1}, ["gone"]),
        ({"id": 1, "x": True}, {"id": 1, "x": 1}, ["x"]),  # true → 1 is a change
        ({"id": 1, "n": {"a": [1, 2]}}, {"id": 1, "n": {"a": [1, 2]}}, []),
    ],
)
def test_changed_fields_are_the_top_level_keys_that_differ(
    old: dict[str, Any] | None, new: dict[str, Any] | None, expected: list[str]
) -> None:
    assert changed_fields(old, new) == expected


# --------------------------------------------------------------------------- registry


def test_lists_sync_partner_lists_first_and_sites_before_per_site_lists() -> None:
    names = [r.name for r in in_sync_order(["roles", "agents", "platforms", "sites", "plans"])]

    assert names == ["platforms", "sites", "plans", "agents", "roles"]


def test_every_list_has_its_tables() -> None:
    for resource in REGISTRY.values():
        assert resource.table.name == resource.name
        assert resource.audit.name == f"{resource.singular}_audit"
        assert resource.audit_key in resource.audit.c
        assert ("site_id" in resource.table.c) == resource.site_scoped
