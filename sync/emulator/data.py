"""What the emulator serves before anyone scripts it: a small realistic account, and bigger ones.

Shapes, field names and key types follow the reference (partner-api-lists.md), quirks included:
`Industry` capitalised in sites, `partnerId` an int there, extra plan keys the field table does
not list, a role whose permissionIds is ["4,5"], a bio sent as a data: URL. Data sets travel as
documents (lists.document_lists): {"platforms": [...], "agents": {"10001": [...]}, ...}.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Mapping

from sync.emulator.lists import SITE_LISTS, Items

DEFAULT_PARTNER_ID = "10000"
DEFAULT_PLATFORMS: Items = [
    {"id": 100, "name": "US"},
    {"id": 200, "name": "EU"},
    {"id": 300, "name": "AU"},
]
# Derived guids: stable across runs, so tests and fixtures may name them.
_NAMESPACE = uuid.UUID("4e1f7a52-3c1b-4d8e-9a55-1c0d2f3e4b60")
NO_SUPER_AGENT = "00000000-0000-0000-0000-000000000000"
CREATED = "2022-07-08T09:30:00Z"
UPDATED = "2023-02-14T16:05:42Z"
ICON_URL = "https://files.partner.example/plans/{0}/icon.png?Expires=1767225600&KeyId=emulator"


def guid(name: str) -> str:
    """The stable guid the default data uses for `name` (e.g. "agent/10001/1")."""
    return str(uuid.uuid5(_NAMESPACE, name))


def _module(key: str, name: str, order: int) -> dict[str, object]:
    return {
        "id": guid(f"module/{key}"),
        "name": name,
        "description": f"The {name} module",
        "order": order,
        "isDeleted": False,
    }


def _product(key: str, name: str, order: int, description: str) -> dict[str, object]:
    return {
        "id": key,
        "moduleId": guid(f"module/{key}"),
        "name": name,
        "description": description,
        "isDeleted": False,
        "module": _module(key, name, order),
    }


DEFAULT_PRODUCTS: Items = [
    _product("LiveChat", "Live Chat", 1, "Real-time chat on the customer's website"),
    _product("Ticket", "Ticketing & Messaging", 2, "Email, SMS and social messages as tickets"),
    _product("Bot", "AI Chatbot", 3, "Answers visitors before an agent joins"),
]


def site_product(product: Mapping[str, object]) -> dict[str, object]:
    """A product as a site lists it: the partner's product without the nested module."""
    return {key: value for key, value in product.items() if key != "module"}


def _plan(plan_id: int, name: str, products: list[str], price: float) -> dict[str, object]:
    return {
        "id": plan_id,
        "name": name,
        "isEnabled": True,
        "isServicePlan": False,
        "description": f"{name} plan for small teams",
        "groupName": "Standard",
        "icon": ICON_URL.format(plan_id) + "&Signature=" + guid(f"icon/{plan_id}").replace("-", ""),
        "isVisibleToCustomer": True,
        "freeTrialDays": 14,
        "createdByPartnerUserId": guid("partner-user/1"),
        "createdTime": CREATED,
        "lastUpdatedByPartnerUserId": guid("partner-user/2"),
        "lastUpdatedTime": UPDATED,
        "planPricingModels": [
            {"id": plan_id * 10 + 1, "billingCycle": "Monthly", "price": price, "currency": "USD"},
            {
                "id": plan_id * 10 + 2,
                "billingCycle": "Yearly",
                "price": round(price * 10, 2),
                "currency": "USD",
            },
        ],
        "planProductRelations": [
            {"planId": plan_id, "productId": product, "seats": 5} for product in products
        ],
        "planFeatureLimitationConfig": [
            {"featureName": "maxAgents", "limitation": 5 * len(products)},
            {"featureName": "chatHistoryDays", "limitation": 90},
        ],
        # In the reference's example, not in its field table: kept, as a client must keep them.
        "featureComparisonDescription": "",
        "isBestseller": plan_id == 2,
        "registerCode": f"PLAN-{plan_id:04d}",
        "isPricingHiddenToCustomer": False,
        "customPriceName": "",
        "canBeAddedByCustomer": True,
        "canBeCancelledByCustomer": True,
    }


DEFAULT_PLANS: Items = [
    _plan(1, "Starter", ["LiveChat"], 29.0),
    _plan(2, "Business", ["LiveChat", "Ticket", "Bot"], 79.5),
]


def _site(site_id: int, status: str, person: tuple[str, str], company: str) -> dict[str, object]:
    first, last = person
    sub_domain = f"{company.split()[0].lower()}{site_id}"
    return {
        "id": site_id,
        "externalId": f"crm-{site_id}",
        "partnerId": int(DEFAULT_PARTNER_ID),
        "platformId": 100,
        "status": status,
        "firstName": first,
        "lastName": last,
        "company": company,
        "website": f"https://www.{sub_domain}.example",
        "phone": f"+1 555 01{site_id % 100:02d}",
        "fax": "",
        "companySize": "11-50",
        "mailingAddress": f"{site_id % 1000} Main Street",
        "city": "Springfield",
        "stateOrProvince": "IL",
        "postalOrZipCode": "62701",
        "countryOrRegion": "United States",
        "languageId": "en",
        "subDomain": sub_domain,
        "customDomain": "",
        "datetimeFormat": "MM/dd/yyyy hh:mm tt",
        "timeZone": "Central Standard Time",
        "Industry": "Retail",
    }


DEFAULT_SITES: Items = [
    _site(10001, "Open", ("Ada", "Lovelace"), "Engines Retail"),
    _site(10002, "Suspended", ("Grace", "Hopper"), "Compilers Corp"),
    _site(10003, "Closed", ("Alan", "Turing"), "Enigma Books"),
]


def _bio(text: str, encoded: bool) -> str:
    if not encoded:
        return text
    return "data:text/plain;base64," + base64.b64encode(text.encode("utf-8")).decode("ascii")


def _agent(
    site_id: int, number: int, person: tuple[str, str], *, admin: bool, locked: bool = False
) -> dict[str, object]:
    first, last = person
    avatar_id = guid(f"system-avatar/{number}")
    return {
        "id": guid(f"agent/{site_id}/{number}"),
        "externalId": f"emp-{site_id}-{number}",
        "email": f"{first.lower()}.{last.lower()}@site{site_id}.example",
        "language": "en",
        "displayName": f"{first} {last[0]}.",
        "firstName": first,
        "lastName": last,
        "isAdmin": admin,
        "isActive": not locked,
        "phone": f"+1 555 02{number:02d}",
        "title": "Administrator" if admin else "Support agent",
        # The reference allows both forms of bio; the first agent of a site gets the encoded one.
        "bio": _bio(f"{first} answers chats about orders.", encoded=number == 1),
        "timeZone": "Central Standard Time",
        "datetimeFormat": "MM/dd/yyyy hh:mm tt",
        "createdTime": CREATED,
        "isLocked": locked,
        "lockedTime": UPDATED if locked else None,
        "ifCustomizeAvatar": number == 2,
        "customizeAvatar": "data:image/png;base64,iVBORw0KGgo=" if number == 2 else "",
        "systemAvatarId": avatar_id,
        "avatar": f"https://files.partner.example/avatars/{avatar_id}.png",
        "superAgentId": NO_SUPER_AGENT,
        "permissionIds": [1, 2, 3] if admin else [1],
        "departmentIds": [guid(f"department/{site_id}/1")],
    }


def _department(site_id: int, number: int, name: str, agent_ids: list[str]) -> dict[str, object]:
    return {
        "id": guid(f"department/{site_id}/{number}"),
        "name": name,
        "description": f"{name} questions",
        "isAvailableInLiveChat": True,
        "isAvailableInTicketingAndMessaging": number == 1,
        "offlineMessageMailTo": "AllAgents" if number == 1 else "SpecificEmails",
        "offlineMessageEmailAddresses": [] if number == 1 else [f"sales@site{site_id}.example"],
        "agentIds": agent_ids,
        "isDeleted": False,
        "chatbotSmartTriggerActionIds": [],
        "shiftIds": [],
        "segmentIds": [],
    }


def _role(
    site_id: int, kind: str, name: str, agent_ids: list[str], permission_ids: list[object]
) -> dict[str, object]:
    return {
        "id": guid(f"role/{site_id}/{name}"),
        "name": name,
        "description": f"{name} of the site",
        "type": kind,
        "agentIds": agent_ids,
        "permissionIds": permission_ids,
    }


def _roles(site_id: int, agent_ids: list[str]) -> Items:
    return [
        _role(site_id, "Administrators", "Administrators", agent_ids[:1], [1, 2, 3, 4, 5]),
        _role(site_id, "AllAgents", "All Agents", agent_ids, [1]),
        # As the reference's example shows it: one string holding two ids.
        _role(site_id, "Custom", "Reporting", agent_ids[1:], ["4,5"]),
    ]


_PERMISSION_NAMES = (
    ("Chat", "LiveChat"),
    ("Manage Chats", "LiveChat"),
    ("Tickets", "Ticket"),
    ("Reports", "LiveChat"),
    ("Export Reports", "LiveChat"),
)


def _permissions() -> Items:
    return [
        {
            "id": number,
            "moduleId": guid(f"module/{module}"),
            "name": name,
            "description": f"Allows {name.lower()}",
            "order": number,
            "isEnabledForAgentByDefault": number == 1,
            # Export Reports sits under Reports; 0 marks a top-level permission.
            "parentId": 4 if number == 5 else 0,
            "isDeleted": False,
        }
        for number, (name, module) in enumerate(_PERMISSION_NAMES, start=1)
    ]


def _site_lists(site_id: int, agents: Items) -> dict[str, Items]:
    agent_ids = [str(agent["id"]) for agent in agents]
    return {
        "agents": agents,
        "departments": [
            _department(site_id, 1, "Support", agent_ids),
            _department(site_id, 2, "Sales", agent_ids[:1]),
        ],
        "roles": _roles(site_id, agent_ids),
        "site_products": [site_product(p) for p in DEFAULT_PRODUCTS[:2]],
        "permissions": _permissions(),
    }


# The closed site (10003) has no lists: it answers 403 before any would be read.
DEFAULT_SITE_LISTS: dict[int, dict[str, Items]] = {
    10001: _site_lists(
        10001,
        [
            _agent(10001, 1, ("Ada", "Lovelace"), admin=True),
            _agent(10001, 2, ("Charles", "Babbage"), admin=False),
            _agent(10001, 3, ("Mary", "Somerville"), admin=False, locked=True),
        ],
    ),
    10002: _site_lists(
        10002,
        [
            _agent(10002, 1, ("Grace", "Hopper"), admin=True),
            _agent(10002, 2, ("Jean", "Sammet"), admin=False),
        ],
    ),
}


def default_document() -> dict[str, object]:
    """The default account as a data document."""
    return {
        "platforms": DEFAULT_PLATFORMS,
        "sites": DEFAULT_SITES,
        "products": DEFAULT_PRODUCTS,
        "plans": DEFAULT_PLANS,
        **{
            name: {str(site_id): lists[name] for site_id, lists in DEFAULT_SITE_LISTS.items()}
            for name in SITE_LISTS
        },
    }


# populate(): how often each status comes up, as weights.
POPULATE_STATUSES = (("Open", 80), ("Suspended", 15), ("Closed", 5))
POPULATE_FIRST_SITE_ID = 20001
_FIRST_NAMES = ("Ada", "Alan", "Barbara", "Claude", "Donald", "Edsger", "Frances", "Grace")
_LAST_NAMES = ("Allen", "Dijkstra", "Hopper", "Knuth", "Liskov", "Shannon", "Turing", "Wing")


def populated_document(sites: int, per_site: int = 10, seed: int = 0) -> dict[str, object]:
    """A big account for benchmarks: `sites` sites and `per_site` items in each per-site list.

    Statuses are mostly Open, some Suspended, a few Closed; every site gets agents, departments,
    roles and products (`per_site` each) and the permission catalogue. Same seed, same data.
    """
    if sites < 0 or per_site < 0:
        raise ValueError("sites and per_site must not be negative")
    rng = random.Random(seed)
    statuses = [status for status, _ in POPULATE_STATUSES]
    weights = [weight for _, weight in POPULATE_STATUSES]
    site_items: Items = []
    per_site_lists: dict[str, dict[str, Items]] = {name: {} for name in SITE_LISTS}
    for index in range(sites):
        site_id = POPULATE_FIRST_SITE_ID + index
        person = (rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES))
        site = _site(site_id, rng.choices(statuses, weights)[0], person, f"{person[1]} Co {index}")
        site["platformId"] = rng.choice(DEFAULT_PLATFORMS)["id"]
        site_items.append(site)
        agents = [_random_agent(rng, site_id, n) for n in range(1, per_site + 1)]
        agent_ids = [str(agent["id"]) for agent in agents]
        lists = {
            "agents": agents,
            "departments": [_random_department(rng, site_id, n, agent_ids) for n in _n(per_site)],
            "roles": [_random_role(rng, site_id, n, agent_ids) for n in _n(per_site)],
            "site_products": [_numbered_product(n) for n in _n(per_site)],
            "permissions": _permissions(),
        }
        for name, items in lists.items():
            per_site_lists[name][str(site_id)] = items
    return {"sites": site_items, **per_site_lists}


def _n(count: int) -> range:
    return range(1, count + 1)


def _random_guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _random_agent(rng: random.Random, site_id: int, number: int) -> dict[str, object]:
    person = (rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES))
    agent = _agent(site_id, number, person, admin=number == 1, locked=rng.random() < 0.05)
    agent["id"] = _random_guid(rng)
    agent["email"] = f"agent{number}@site{site_id}.example"
    agent["departmentIds"] = []
    return agent


def _random_department(
    rng: random.Random, site_id: int, number: int, agent_ids: list[str]
) -> dict[str, object]:
    members = rng.sample(agent_ids, k=min(len(agent_ids), 3))
    department = _department(site_id, number, f"Department {number}", members)
    department["id"] = _random_guid(rng)
    return department


def _random_role(
    rng: random.Random, site_id: int, number: int, agent_ids: list[str]
) -> dict[str, object]:
    if number == 1:
        role = _role(site_id, "Administrators", "Administrators", agent_ids[:1], [1, 2, 3, 4, 5])
    elif number == 2:
        role = _role(site_id, "AllAgents", "All Agents", agent_ids, [1])
    else:
        members = rng.sample(agent_ids, k=min(len(agent_ids), 2))
        role = _role(site_id, "Custom", f"Custom role {number}", members, [1, 4])
    role["id"] = _random_guid(rng)
    return role


def _numbered_product(number: int) -> dict[str, object]:
    """The site's products: the three known ones, then numbered variants of them."""
    base = DEFAULT_PRODUCTS[(number - 1) % len(DEFAULT_PRODUCTS)]
    product = site_product(base)
    if number > len(DEFAULT_PRODUCTS):
        product["id"] = f"{base['id']}{number}"
        product["name"] = f"{base['name']} {number}"
    return product
