"""The emulator's lists beyond platforms: shapes, sites, scoping, faults per list, data sets."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sync.emulator import (
    DEFAULT_PLANS,
    DEFAULT_PLATFORMS,
    DEFAULT_PRODUCTS,
    DEFAULT_SITE_LISTS,
    DEFAULT_SITES,
    FAULT_KINDS,
    LIST_NAMES,
    PARTNER_LISTS,
    SITE_LISTS,
    STAT_KEYS,
    Emulator,
    Fault,
)
from tests.e2e.test_emulator import REPO_ROOT, TIMEOUT, control, get_tokens, password_form

pytestmark = pytest.mark.e2e

OPEN, SUSPENDED, CLOSED = 10001, 10002, 10003
NOWHERE = 99999
PARTNER_PATHS = {name: f"/global/{name}" for name in PARTNER_LISTS}
SITE_SEGMENTS = {name: "products" if name == "site_products" else name for name in SITE_LISTS}


def site_path(name: str, site_id: int | str) -> str:
    return f"/global/sites/{site_id}/{SITE_SEGMENTS[name]}"


def list_path(name: str, site_id: int = OPEN) -> str:
    return PARTNER_PATHS[name] if name in PARTNER_PATHS else site_path(name, site_id)


class Api:
    """A client of one emulator holding one access token."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.token = get_tokens(emulator)["access_token"]

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return requests.get(
            self.emulator.api_url + path, headers=headers, timeout=TIMEOUT, **kwargs
        )

    def items(self, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        response = self.get(path, **kwargs)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()
        return items


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(rate_limit=None) as emulator:
        yield emulator


@pytest.fixture
def api(emu: Emulator) -> Api:
    return Api(emu)


# -- shapes -------------------------------------------------------------------------------

GUID = "guid"
ISO = "iso-8601"
OPTIONAL_ISO = "iso-8601 or null"


def _is(value: object, kind: object) -> bool:
    if kind == GUID:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    if kind == ISO:
        return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
    if kind == OPTIONAL_ISO:
        return value is None or _is(value, ISO)
    assert isinstance(kind, type | tuple)
    # bool is an int to Python, never to JSON: an int field must not hold true.
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


_PRODUCT = {
    "id": str,
    "moduleId": GUID,
    "name": str,
    "description": str,
    "isDeleted": bool,
}
# The reference's fields and key types, list by list (partner-api-lists.md).
SHAPES: dict[str, dict[str, object]] = {
    "platforms": {"id": int, "name": str},
    "sites": {
        "id": int,
        "externalId": str,
        "partnerId": int,
        "platformId": int,
        "status": str,
        **dict.fromkeys(
            (
                "firstName",
                "lastName",
                "company",
                "website",
                "phone",
                "fax",
                "companySize",
                "mailingAddress",
                "city",
                "stateOrProvince",
                "postalOrZipCode",
                "countryOrRegion",
                "languageId",
                "subDomain",
                "customDomain",
                "datetimeFormat",
                "timeZone",
                "Industry",
            ),
            str,
        ),
    },
    "products": {**_PRODUCT, "module": dict},
    "plans": {
        "id": int,
        "name": str,
        "isEnabled": bool,
        "isServicePlan": bool,
        "description": str,
        "groupName": str,
        "icon": str,
        "isVisibleToCustomer": bool,
        "freeTrialDays": int,
        "createdByPartnerUserId": str,
        "createdTime": ISO,
        "lastUpdatedByPartnerUserId": str,
        "lastUpdatedTime": ISO,
        "planPricingModels": list,
        "planProductRelations": list,
        "planFeatureLimitationConfig": list,
    },
    "agents": {
        "id": GUID,
        "externalId": str,
        "email": str,
        "language": str,
        "displayName": str,
        "firstName": str,
        "lastName": str,
        "isAdmin": bool,
        "isActive": bool,
        "phone": str,
        "title": str,
        "bio": str,
        "timeZone": str,
        "datetimeFormat": str,
        "createdTime": ISO,
        "isLocked": bool,
        "lockedTime": OPTIONAL_ISO,
        "ifCustomizeAvatar": bool,
        "customizeAvatar": str,
        "systemAvatarId": GUID,
        "avatar": str,
        "superAgentId": GUID,
        "permissionIds": list,
    },
    "departments": {
        "id": GUID,
        "name": str,
        "description": str,
        "isAvailableInLiveChat": bool,
        "isAvailableInTicketingAndMessaging": bool,
        "offlineMessageMailTo": str,
        "offlineMessageEmailAddresses": list,
        "agentIds": list,
        "isDeleted": bool,
        "chatbotSmartTriggerActionIds": list,
        "shiftIds": list,
        "segmentIds": list,
    },
    "roles": {
        "id": GUID,
        "name": str,
        "description": str,
        "type": str,
        "agentIds": list,
        "permissionIds": list,
    },
    "site_products": _PRODUCT,
    "permissions": {
        "id": int,
        "moduleId": GUID,
        "name": str,
        "description": str,
        "order": int,
        "isEnabledForAgentByDefault": bool,
        "parentId": int,
        "isDeleted": bool,
    },
}


def test_shapes_cover_every_list() -> None:
    assert set(SHAPES) == set(LIST_NAMES) == {*PARTNER_LISTS, *SITE_LISTS}


@pytest.mark.parametrize("name", LIST_NAMES)
def test_every_list_answers_a_bare_array_of_the_reference_shape(api: Api, name: str) -> None:
    response = api.get(list_path(name))
    items = response.json()
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert isinstance(items, list) and items
    for item in items:
        for field, kind in SHAPES[name].items():
            assert field in item, f"{name}: {field} missing"
            assert _is(item[field], kind), f"{name}.{field} = {item[field]!r}, not {kind}"
    assert len({json.dumps(item["id"]) for item in items}) == len(items), "ids are unique"


def test_default_lists_are_the_exported_constants(api: Api, emu: Emulator) -> None:
    assert api.items("/global/platforms") == DEFAULT_PLATFORMS
    assert api.items("/global/sites") == DEFAULT_SITES
    assert api.items("/global/products") == DEFAULT_PRODUCTS
    assert api.items("/global/plans") == DEFAULT_PLANS
    for site_id, lists in DEFAULT_SITE_LISTS.items():
        for name, items in lists.items():
            assert api.items(site_path(name, site_id)) == items
            assert emu.get_list(name, site_id=site_id) == items


def test_default_account_has_the_reference_quirks(api: Api) -> None:
    sites = api.items("/global/sites")
    assert Counter(site["status"] for site in sites) == {"Open": 1, "Suspended": 1, "Closed": 1}
    assert all("industry" not in site and isinstance(site["Industry"], str) for site in sites)
    products = api.items("/global/products")
    assert {product["id"] for product in products} == {"LiveChat", "Ticket", "Bot"}
    module = products[0]["module"]
    assert (type(module["id"]), type(module["order"]), type(module["isDeleted"])) == (
        str,
        int,
        bool,
    )
    assert all("module" not in product for product in api.items(site_path("site_products", OPEN)))
    extra = {
        "featureComparisonDescription",
        "isBestseller",
        "registerCode",
        "isPricingHiddenToCustomer",
        "customPriceName",
        "canBeAddedByCustomer",
        "canBeCancelledByCustomer",
    }
    for plan in api.items("/global/plans"):
        assert extra <= set(plan)
        assert "Signature" in parse_qs(urlsplit(plan["icon"]).query)
        assert plan["planPricingModels"] and plan["planProductRelations"]
    roles = api.items(site_path("roles", OPEN))
    assert {role["type"] for role in roles} == {"Administrators", "AllAgents", "Custom"}
    assert ["4,5"] in [role["permissionIds"] for role in roles]


def test_agents_carry_every_personal_field_and_both_forms_of_bio(api: Api) -> None:
    agents = api.items(site_path("agents", OPEN))
    assert 2 <= len(agents) <= 3
    bios = [agent["bio"] for agent in agents]
    encoded = [bio for bio in bios if bio.startswith("data:text/plain;base64,")]
    plain = [bio for bio in bios if not bio.startswith("data:")]
    assert encoded and plain
    decoded = base64.b64decode(encoded[0].removeprefix("data:text/plain;base64,"), validate=True)
    assert decoded.decode("utf-8")
    for agent in agents:
        assert agent["superAgentId"] == "00000000-0000-0000-0000-000000000000"
        assert re.fullmatch(r"[^@\s]+@[^@\s]+", agent["email"])
        assert agent["phone"] and agent["title"] and agent["avatar"]


# -- sites --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SITE_LISTS)
def test_per_site_list_of_a_site_that_does_not_exist_is_404(api: Api, name: str) -> None:
    response = api.get(site_path(name, NOWHERE))
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "error_description": f"site {NOWHERE} does not exist",
    }


@pytest.mark.parametrize("name", SITE_LISTS)
def test_per_site_list_of_a_closed_site_is_403(api: Api, name: str) -> None:
    response = api.get(site_path(name, CLOSED))
    assert response.status_code == 403
    assert response.json()["error"] == "access_denied"


def test_per_site_list_of_a_purged_site_is_404_and_of_a_suspended_one_answers(
    api: Api, emu: Emulator
) -> None:
    sites = emu.get_list("sites")
    sites[0]["status"] = "Purged"
    emu.set_sites(sites)
    assert api.get(site_path("agents", OPEN)).status_code == 404
    assert api.items(site_path("agents", SUSPENDED)) == DEFAULT_SITE_LISTS[SUSPENDED]["agents"]


@pytest.mark.parametrize("site", ["abc", "-1", "1.5", "1e3", "\uff11", ""])
def test_a_site_id_that_is_not_an_integer_is_404(api: Api, site: str) -> None:
    response = api.get(site_path("agents", site))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_a_site_that_left_the_site_list_still_answers_for_its_lists(
    api: Api, emu: Emulator
) -> None:
    emu.set_sites([site for site in DEFAULT_SITES if site["id"] != OPEN])
    assert api.items(site_path("agents", OPEN)) == DEFAULT_SITE_LISTS[OPEN]["agents"]
    assert api.items(site_path("departments", OPEN)) == DEFAULT_SITE_LISTS[OPEN]["departments"]


def test_a_listed_site_without_lists_answers_empty_arrays(api: Api, emu: Emulator) -> None:
    emu.set_sites([*DEFAULT_SITES, {**DEFAULT_SITES[0], "id": 10004}])
    assert all(api.items(site_path(name, 10004)) == [] for name in SITE_LISTS)


def test_per_site_lists_are_held_per_site(api: Api, emu: Emulator) -> None:
    mine = [{"id": str(uuid.uuid4()), "displayName": "Only on 10001"}]
    emu.set_list("agents", mine, site_id=OPEN)
    assert api.items(site_path("agents", OPEN)) == mine
    assert api.items(site_path("agents", SUSPENDED)) == DEFAULT_SITE_LISTS[SUSPENDED]["agents"]
    assert api.items(site_path("departments", OPEN)) == DEFAULT_SITE_LISTS[OPEN]["departments"]
    # The site's products and the partner's products are two lists.
    assert api.items("/global/products") == DEFAULT_PRODUCTS


@pytest.mark.parametrize(
    "path", [*PARTNER_PATHS.values(), *(site_path(n, OPEN) for n in SITE_LISTS)]
)
def test_every_list_without_a_token_is_401_with_a_bearer_challenge(
    emu: Emulator, path: str
) -> None:
    response = requests.get(emu.api_url + path, timeout=TIMEOUT)
    assert response.status_code == 401
    assert 'Bearer error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.json()["error"] == "invalid_token"


def test_the_token_is_checked_before_the_site(emu: Emulator) -> None:
    response = requests.get(emu.api_url + site_path("agents", NOWHERE), timeout=TIMEOUT)
    assert response.status_code == 401


def test_lists_accept_get_only(api: Api) -> None:
    response = requests.post(api.emulator.api_url + site_path("roles", OPEN), timeout=TIMEOUT)
    assert (response.status_code, response.headers["Allow"]) == (405, "GET")


def test_module_query_filters_the_partner_products(api: Api) -> None:
    live_chat = DEFAULT_PRODUCTS[0]
    module_id = str(live_chat["moduleId"])
    assert api.items("/global/products", params={"module": module_id}) == [live_chat]
    assert api.items("/global/products", params={"module": module_id.upper()}) == [live_chat]
    assert api.items("/global/products", params={"module": str(uuid.uuid4())}) == []


def test_stats_count_each_list_by_outcome(api: Api, emu: Emulator) -> None:
    emu.reset_stats()
    api.get(site_path("agents", OPEN))
    api.get(site_path("agents", SUSPENDED))
    requests.get(emu.api_url + "/global/sites", timeout=TIMEOUT)
    emu.inject("site_products", Fault("html"))
    api.get(site_path("site_products", OPEN))
    stats = emu.stats
    assert set(STAT_KEYS) == set(stats)
    assert {name: count for name, count in stats.items() if count} == {
        "agents_ok": 2,
        "sites_unauthorized": 1,
        "site_products_fault": 1,
    }


def test_count_requests_by_path_prefix(api: Api, emu: Emulator) -> None:
    for site_id in (OPEN, SUSPENDED, CLOSED):
        api.get(site_path("roles", site_id))
    assert emu.count_requests("/v4/global/sites/") == 3
    assert emu.count_requests("/v4/global/sites/10001/") == 1
    assert emu.count_requests("/oauth/token", method="POST") == 1
    assert emu.count_requests() == 4


# -- scripting lists ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "site_id"),
    [("nothing", None), ("agents", None), ("sites", OPEN), ("platforms", 1), ("token", None)],
)
def test_list_names_and_scopes_are_checked(emu: Emulator, name: str, site_id: int | None) -> None:
    with pytest.raises(ValueError):
        emu.set_list(name, [], site_id=site_id)
    with pytest.raises(ValueError):
        emu.get_list(name, site_id=site_id)


def test_lists_are_copied_in_and_out(emu: Emulator) -> None:
    items: list[dict[str, object]] = [{"id": 1, "name": "A", "tags": ["x"]}]
    emu.set_list("permissions", items, site_id=OPEN)
    items[0]["tags"] = ["changed"]
    copy = emu.get_list("permissions", site_id=OPEN)
    copy[0]["name"] = "changed"
    assert emu.get_list("permissions", site_id=OPEN) == [{"id": 1, "name": "A", "tags": ["x"]}]


def test_set_list_refuses_what_json_cannot_carry(emu: Emulator) -> None:
    with pytest.raises(TypeError):
        emu.set_list("sites", [{"id": 1, "when": object()}])
    with pytest.raises(ValueError):
        emu.set_list("sites", ["not an object"])  # type: ignore[list-item]
    assert emu.get_list("sites") == DEFAULT_SITES


def test_platform_aliases_are_the_platform_list(emu: Emulator) -> None:
    emu.set_platforms([{"id": 1, "name": "One"}])
    assert emu.get_list("platforms") == emu.platforms == [{"id": 1, "name": "One"}]


def test_a_data_document_replaces_the_defaults(tmp_path: Path) -> None:
    document: dict[str, Any] = {
        "platforms": [{"id": 1, "name": "One"}],
        "sites": [{**DEFAULT_SITES[0], "id": 5}],
        "agents": {"5": [{"id": str(uuid.uuid4()), "displayName": "A"}]},
    }
    with Emulator(data=document) as emu:
        api = Api(emu)
        assert api.items("/global/platforms") == document["platforms"]
        assert api.items(site_path("agents", 5)) == document["agents"]["5"]
        assert api.items("/global/plans") == []
        assert api.items(site_path("roles", 5)) == []
        assert api.get(site_path("agents", OPEN)).status_code == 404


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"nothing": []},
        {"sites": {"1": []}},
        {"agents": [{"id": "x"}]},
        {"agents": {"abc": []}},
        {"agents": {"1": [1]}},
    ],
    ids=["array", "unknown-list", "sites-per-site", "agents-array", "bad-site", "not-objects"],
)
def test_a_malformed_data_document_is_refused(document: Any) -> None:
    with pytest.raises(ValueError):
        Emulator(data=document)


def test_control_lists_set_and_read_any_list(emu: Emulator, api: Api) -> None:
    agents = [{"id": str(uuid.uuid4()), "displayName": "Over HTTP"}]
    assert control(emu, "PUT", f"lists/agents@{SUSPENDED}", json=agents).json()["count"] == 1
    assert control(emu, "GET", f"lists/agents@{SUSPENDED}").json() == agents
    assert api.items(site_path("agents", SUSPENDED)) == agents
    control(emu, "PUT", "lists/sites", json=[]).raise_for_status()
    assert control(emu, "GET", "lists/sites").json() == []
    assert control(emu, "GET", "platforms").json() == DEFAULT_PLATFORMS


@pytest.mark.parametrize(
    ("method", "name", "body"),
    [
        ("GET", "lists/agents", None),
        ("GET", "lists/sites@1", None),
        ("GET", "lists/agents@abc", None),
        ("GET", "lists/nothing", None),
        ("PUT", "lists/plans", {"id": 1}),
        ("PUT", "lists/plans", [1]),
    ],
)
def test_control_lists_refuse_bad_names_and_bodies(
    emu: Emulator, method: str, name: str, body: object
) -> None:
    response = control(emu, method, name, json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# -- faults per list ----------------------------------------------------------------------


def test_a_fault_scoped_to_a_site_spoils_that_site_only(api: Api, emu: Emulator) -> None:
    emu.inject(f"agents@{OPEN}", Fault("status", status=503), times=None)
    assert api.get(site_path("agents", OPEN)).status_code == 503
    assert api.get(site_path("agents", SUSPENDED)).status_code == 200
    assert api.get(site_path("departments", OPEN)).status_code == 200
    assert emu.stats["agents_fault"] == 1


def test_an_unscoped_fault_spoils_the_list_on_every_site(api: Api, emu: Emulator) -> None:
    emu.inject("roles", Fault("status", status=502), times=2)
    statuses = [api.get(site_path("roles", s)).status_code for s in (OPEN, SUSPENDED, OPEN)]
    assert statuses == [502, 502, 200]


def test_a_scoped_fault_comes_before_the_unscoped_queue(api: Api, emu: Emulator) -> None:
    emu.inject("agents", Fault("status", status=502))
    emu.inject(f"agents@{OPEN}", Fault("status", status=504))
    open_statuses = [api.get(site_path("agents", OPEN)).status_code for _ in range(3)]
    assert open_statuses == [504, 502, 200]


def test_faults_fire_before_the_site_is_checked(api: Api, emu: Emulator) -> None:
    emu.inject(f"agents@{NOWHERE}", Fault("status", status=500))
    assert api.get(site_path("agents", NOWHERE)).status_code == 500
    assert api.get(site_path("agents", NOWHERE)).status_code == 404


@pytest.mark.parametrize(
    "endpoint", ["sites@10001", "token@1", "agents@", "agents@abc", "agents@-1", "Agents"]
)
def test_malformed_endpoint_names_are_refused(emu: Emulator, endpoint: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        emu.inject(endpoint, Fault("html"))
    with pytest.raises(ValueError, match="endpoint"):
        emu.gate(endpoint)


@pytest.mark.parametrize("endpoint", [*LIST_NAMES, f"agents@{OPEN}", f"permissions@{NOWHERE}"])
def test_every_fault_kind_is_accepted_on_every_list(emu: Emulator, endpoint: str) -> None:
    for kind in FAULT_KINDS:
        emu.inject(endpoint, Fault(kind))
    emu.clear_faults()
    assert Api(emu).get(list_path(endpoint.partition("@")[0])).status_code == 200


@pytest.mark.parametrize("name", ["agents", "departments", "roles", "site_products", "products"])
def test_wrong_types_gives_a_string_id_list_an_int_id(api: Api, emu: Emulator, name: str) -> None:
    emu.inject(name, Fault("wrong_types"))
    items = api.items(list_path(name))
    assert any(isinstance(item["id"], int) for item in items)
    assert any(any(value == 123 for value in item.values()) for item in items)


@pytest.mark.parametrize("name", ["sites", "plans", "permissions"])
def test_wrong_types_gives_an_int_id_list_a_string_id(api: Api, emu: Emulator, name: str) -> None:
    emu.inject(name, Fault("wrong_types"))
    items = api.items(list_path(name))
    assert [type(item["id"]) for item in items].count(str) == 1


@pytest.mark.parametrize("name", ["agents", "sites", "site_products"])
def test_missing_fields_drops_an_id(api: Api, emu: Emulator, name: str) -> None:
    emu.inject(name, Fault("missing_fields"))
    items = api.items(list_path(name))
    assert [("id" in item) for item in items].count(False) == 1


def test_duplicate_faults_repeat_a_guid_on_agents(api: Api, emu: Emulator) -> None:
    emu.inject("agents", Fault("duplicate_conflict"))
    emu.inject("agents", Fault("duplicate_identical"))
    conflict = api.items(site_path("agents", OPEN))
    identical = api.items(site_path("agents", OPEN))
    first = DEFAULT_SITE_LISTS[OPEN]["agents"][0]
    twins = [agent for agent in conflict if agent["id"] == first["id"]]
    assert len(twins) == 2 and twins[0]["displayName"] != twins[1]["displayName"]
    assert identical == [*DEFAULT_SITE_LISTS[OPEN]["agents"], first]


def test_reshaping_an_empty_string_id_list_makes_up_guid_items(api: Api, emu: Emulator) -> None:
    emu.set_list("departments", [], site_id=OPEN)
    emu.inject("departments", Fault("wrong_types"))
    emu.inject("departments", Fault("duplicate_identical"))
    wrong = api.items(site_path("departments", OPEN))
    duplicated = api.items(site_path("departments", OPEN))
    assert [type(item["id"]) for item in wrong] == [int, str]
    assert uuid.UUID(wrong[1]["id"])
    assert len(duplicated) == 2 and duplicated[0] == duplicated[1]


def test_non_utf8_fault_on_a_string_id_list(api: Api, emu: Emulator) -> None:
    emu.inject("roles", Fault("non_utf8"))
    content = api.get(site_path("roles", OPEN)).content
    with pytest.raises(UnicodeDecodeError):
        content.decode("utf-8")
    extra = json.loads(content.decode("latin-1"))[-1]
    assert extra["name"] == "Montréal" and isinstance(extra["id"], str)


def test_big_fault_on_a_string_id_list_has_string_ids(api: Api, emu: Emulator) -> None:
    emu.inject("agents", Fault("big", size_bytes=100_000))
    response = api.get(site_path("agents", OPEN))
    items = response.json()
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert all(isinstance(item["id"], str) for item in items)
    assert len({item["id"] for item in items}) == len(items) > 1000


def test_status_401_fault_on_a_list_carries_a_bearer_challenge(api: Api, emu: Emulator) -> None:
    emu.inject("plans", Fault("status", status=401))
    response = api.get("/global/plans")
    assert response.status_code == 401
    assert 'Bearer error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_control_fault_scoped_to_a_site(api: Api, emu: Emulator) -> None:
    body = {"endpoint": f"departments@{SUSPENDED}", "fault": {"kind": "object"}}
    control(emu, "POST", "faults", json=body).raise_for_status()
    assert api.get(site_path("departments", OPEN)).json() == DEFAULT_SITE_LISTS[OPEN]["departments"]
    wrapped = api.get(site_path("departments", SUSPENDED)).json()
    assert wrapped == {"data": DEFAULT_SITE_LISTS[SUSPENDED]["departments"]}


def test_control_fault_refuses_a_malformed_endpoint(emu: Emulator) -> None:
    body = {"endpoint": "sites@1", "fault": {"kind": "html"}}
    response = control(emu, "POST", "faults", json=body)
    assert response.status_code == 400
    assert "sites@1" in response.json()["error_description"]


# -- plan icons ---------------------------------------------------------------------------


def _signatures(plans: list[dict[str, Any]]) -> list[str]:
    return [parse_qs(urlsplit(plan["icon"]).query)["Signature"][0] for plan in plans]


def _unsigned(plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**plan, "icon": plan["icon"].partition("?")[0]} for plan in plans]


def test_rotating_plan_icons_signs_each_answer_anew() -> None:
    with Emulator(rotate_plan_icons=True) as emu:
        api = Api(emu)
        first, second = api.items("/global/plans"), api.items("/global/plans")
    assert _unsigned(first) == _unsigned(second) == _unsigned(DEFAULT_PLANS)
    assert all(a != b for a, b in zip(_signatures(first), _signatures(second), strict=True))
    assert emu.get_list("plans") == DEFAULT_PLANS, "the stored list is left as it was"


def test_plan_icons_are_stable_by_default(api: Api) -> None:
    assert api.items("/global/plans") == api.items("/global/plans") == DEFAULT_PLANS


# -- populate -----------------------------------------------------------------------------


def site_ids(emulator: Emulator) -> list[int]:
    return [int(str(site["id"])) for site in emulator.get_list("sites")]


def test_populate_is_deterministic_for_a_seed() -> None:
    def lists(seed: int) -> list[Any]:
        emulator = Emulator()
        emulator.populate(30, per_site=4, seed=seed)
        per_site = [
            emulator.get_list(name, site_id=site_id)
            for site_id in site_ids(emulator)
            for name in SITE_LISTS
        ]
        return [emulator.get_list("sites"), per_site]

    assert lists(7) == lists(7)
    assert lists(7) != lists(8)


def test_populate_builds_sites_and_per_site_lists_of_the_size_asked(emu: Emulator) -> None:
    emu.populate(200, per_site=6, seed=1)
    sites = emu.get_list("sites")
    statuses = Counter(site["status"] for site in sites)
    assert len(sites) == len({site["id"] for site in sites}) == 200
    assert set(statuses) == {"Open", "Suspended", "Closed"}
    assert statuses["Open"] > statuses["Suspended"] > statuses["Closed"]
    for site_id in site_ids(emu):
        for name in ("agents", "departments", "roles", "site_products"):
            items = emu.get_list(name, site_id=site_id)
            assert len(items) == 6
            assert len({item["id"] for item in items}) == 6
        assert emu.get_list("permissions", site_id=site_id)


def test_populated_lists_are_served_in_the_reference_shape(emu: Emulator) -> None:
    emu.populate(20, per_site=5)
    api = Api(emu)
    open_site = next(int(str(s["id"])) for s in emu.get_list("sites") if s["status"] == "Open")
    for name in ("sites", *SITE_LISTS):
        for item in api.items(list_path(name, open_site)):
            assert all(_is(item[field], kind) for field, kind in SHAPES[name].items()), name
    assert api.get(site_path("agents", OPEN)).status_code == 404, "the default sites are gone"
    assert api.items("/global/plans") == DEFAULT_PLANS, "partner lists other than sites stay"


# -- the command --------------------------------------------------------------------------


def test_main_serves_a_data_file_and_a_platforms_file(tmp_path: Path) -> None:
    data_file = tmp_path / "data.json"
    agents = [{"id": str(uuid.uuid4()), "displayName": "From the file"}]
    data_file.write_text(json.dumps({"sites": [], "agents": {"7": agents}}), encoding="utf-8")
    platforms_file = tmp_path / "platforms.json"
    platforms_file.write_text(json.dumps([{"id": 5, "name": "Five"}]), encoding="utf-8")
    code = (
        "import sys; from sync.emulator import main; "
        "main('127.0.0.1', 0, platforms_file=sys.argv[1], data_file=sys.argv[2])"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(platforms_file), str(data_file)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = re.search(r"http://\S+", process.stdout.readline())
        assert url, "the emulator printed its URL"
        token = requests.post(url[0] + "/oauth/token", data=password_form(), timeout=TIMEOUT)
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

        def get(path: str) -> Any:
            return requests.get(url[0] + "/v4" + path, headers=headers, timeout=TIMEOUT).json()

        assert get("/global/platforms") == [{"id": 5, "name": "Five"}]
        assert get("/global/sites/7/agents") == agents
        assert get("/global/plans") == []
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert (process.returncode, err) == (0, "")
