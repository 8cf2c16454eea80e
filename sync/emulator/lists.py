"""The Partner API lists: their declarations, paths and endpoint names, and the data served.

An endpoint name is "token", a list name ("agents": that list on every site), or a per-site list
scoped to one site ("agents@10001"). A path maps to one list route; a route to its endpoint name.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sync.emulator.replies import dump_json

Item = dict[str, object]
Items = list[Item]

TOKEN_ENDPOINT = "token"
TOKEN_PATH = "/oauth/token"
API_PREFIX = "/v4/global/"
SITE_SCOPE = "@"
# What a site's status makes of a per-site request; the reference allows 403 or 404 for both.
SITE_STATUS_REFUSALS = {
    "Closed": (403, "access_denied", "site {0} is closed"),
    "Purged": (404, "not_found", "site {0} has been purged"),
}


@dataclass(frozen=True)
class ListSpec:
    """One list of the reference: where it lives and what its items look like."""

    name: str
    segment: str  # the last path segment ("products" for site_products)
    per_site: bool
    int_ids: bool  # int ids (platforms, sites, plans, permissions); else strings or guids
    label: str  # a string field every item carries, which the reshaping faults deface
    required: str  # the field the missing_fields fault drops


LIST_SPECS: dict[str, ListSpec] = {
    spec.name: spec
    for spec in (
        ListSpec("platforms", "platforms", False, True, "name", "name"),
        ListSpec("sites", "sites", False, True, "company", "id"),
        ListSpec("products", "products", False, False, "name", "id"),
        ListSpec("plans", "plans", False, True, "name", "id"),
        ListSpec("agents", "agents", True, False, "displayName", "id"),
        ListSpec("departments", "departments", True, False, "name", "id"),
        ListSpec("roles", "roles", True, False, "name", "id"),
        ListSpec("site_products", "products", True, False, "name", "id"),
        ListSpec("permissions", "permissions", True, True, "name", "id"),
    )
}
LIST_NAMES = tuple(LIST_SPECS)
PARTNER_LISTS = tuple(name for name, spec in LIST_SPECS.items() if not spec.per_site)
SITE_LISTS = tuple(name for name, spec in LIST_SPECS.items() if spec.per_site)
_PARTNER_SEGMENTS = {spec.segment: spec for spec in LIST_SPECS.values() if not spec.per_site}
_SITE_SEGMENTS = {spec.segment: spec for spec in LIST_SPECS.values() if spec.per_site}


@dataclass(frozen=True)
class ListRoute:
    """One list as a request (or a fault, or a gate) names it: a spec, and a site if per site."""

    spec: ListSpec
    site_id: int | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint name: "platforms", or "agents@10001" for a per-site list."""
        if self.site_id is None:
            return self.spec.name
        return f"{self.spec.name}{SITE_SCOPE}{self.site_id}"

    @property
    def keys(self) -> tuple[str, ...]:
        """Endpoint names that match a request to this route, the site-scoped one first."""
        if self.site_id is None:
            return (self.spec.name,)
        return (self.endpoint, self.spec.name)


def route_for_path(path: str) -> ListRoute | None:
    """The list a request path asks for, or None (404) for any other path."""
    if not path.startswith(API_PREFIX):
        return None
    parts = path.removeprefix(API_PREFIX).split("/")
    if len(parts) == 1:
        spec = _PARTNER_SEGMENTS.get(parts[0])
        return None if spec is None else ListRoute(spec)
    if len(parts) == 3 and parts[0] == "sites":
        site_id, spec = _site_id(parts[1]), _SITE_SEGMENTS.get(parts[2])
        if site_id is not None and spec is not None:
            return ListRoute(spec, site_id)
    return None


@dataclass(frozen=True)
class Target:
    """What a request path names: its endpoint, the names that match it, and its method."""

    endpoint: str
    keys: tuple[str, ...]
    method: str


def target_for_path(path: str) -> Target | None:
    """The endpoint a request path names, or None (404)."""
    if path == TOKEN_PATH:
        return Target(TOKEN_ENDPOINT, (TOKEN_ENDPOINT,), "POST")
    route = route_for_path(path)
    return None if route is None else Target(route.endpoint, route.keys, "GET")


def route_for_endpoint(endpoint: str) -> ListRoute | None:
    """Parse an endpoint name; None stands for "token".

    Raises:
        ValueError: not "token", a list name, or a per-site list name with "@<site id>".
    """
    if endpoint == TOKEN_ENDPOINT:
        return None
    name, scoped, site = endpoint.partition(SITE_SCOPE)
    spec = LIST_SPECS.get(name)
    if spec is None:
        expected = ", ".join((TOKEN_ENDPOINT, *LIST_NAMES))
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {expected}")
    if not scoped:
        return ListRoute(spec)
    site_id = _site_id(site)
    if not spec.per_site or site_id is None:
        raise ValueError(
            f"endpoint {endpoint!r}: only a per-site list ({', '.join(SITE_LISTS)}) "
            f"takes {SITE_SCOPE}<site id>, an integer"
        )
    return ListRoute(spec, site_id)


def list_route(name: str, site_id: int | None) -> ListRoute:
    """The route for a list name and an optional site, checked against the list's scope.

    Raises:
        ValueError: unknown name, a per-site list without a site, or a partner list with one.
    """
    spec = LIST_SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown list {name!r}; expected one of {', '.join(LIST_NAMES)}")
    if spec.per_site and site_id is None:
        raise ValueError(f"list {name!r} is per site: give a site_id")
    if not spec.per_site and site_id is not None:
        raise ValueError(f"list {name!r} is partner-wide: it takes no site_id")
    return ListRoute(spec, site_id)


def _site_id(text: str) -> int | None:
    # isdecimal() alone admits other scripts' digits, which no real site id uses.
    return int(text) if text.isascii() and text.isdecimal() else None


def document_lists(document: object) -> list[tuple[ListRoute, Items]]:
    """The lists a data document names, with their routes.

    A document: {"platforms": [...], "sites": [...], "agents": {"10001": [...]}, ...}.

    Raises:
        ValueError: not an object; an unknown list name; a partner list that is not an array
            of objects; a per-site list that is not an object of site ids to such arrays.
    """
    if not isinstance(document, Mapping):
        raise ValueError("a data document is a JSON object of list names")
    entries: list[tuple[ListRoute, Items]] = []
    for name, value in document.items():
        spec = LIST_SPECS.get(name)
        if spec is None:
            raise ValueError(f"unknown list {name!r} in the data document")
        if not spec.per_site:
            entries.append((ListRoute(spec), _objects(name, value)))
            continue
        if not isinstance(value, Mapping):
            raise ValueError(f"{name}: expected an object of site ids to arrays")
        for key, items in value.items():
            route = ListRoute(spec, _site_key(name, key))
            entries.append((route, _objects(route.endpoint, items)))
    return entries


def _objects(where: str, value: object) -> Items:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError(f"{where}: expected a JSON array of objects")
    return value


def _site_key(name: str, key: object) -> int:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str) and key.isascii() and key.isdecimal():
        return int(key)
    raise ValueError(f"{name}: site id {key!r} is not an integer")


class ListStore:
    """Every list served, partner-wide and per site; thread-safe, copies in and out.

    Per-site lists are kept by site id, independently of the site list: a site that leaves
    `sites` keeps its lists (and answers for them) until they are replaced.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[ListRoute, Items] = {}
        # Bodies are serialised once per change, not once per request.
        self._bodies: dict[ListRoute, bytes] = {}
        self._statuses: dict[int, object] = {}

    def set(self, route: ListRoute, items: Sequence[Mapping[str, object]]) -> None:
        """Replace one list.

        Raises:
            ValueError: an item is not an object.
            TypeError: a value is not JSON-serialisable (raised here, not on the next request).
        """
        self.replace([(route, items)], keep=LIST_NAMES)

    def replace(
        self,
        lists: Sequence[tuple[ListRoute, Sequence[Mapping[str, object]]]],
        *,
        keep: Sequence[str] = (),
    ) -> None:
        """Put `lists` in place at once, and forget every other list not named in `keep`.

        Everything is copied and serialised before anything changes, so a request never sees
        half a data set, and an error leaves the store as it was. A forgotten list serves [].
        """
        staged: dict[ListRoute, tuple[Items, bytes]] = {}
        for route, items in lists:
            if not all(isinstance(item, Mapping) for item in items):
                raise ValueError(f"{route.endpoint}: expected a list of objects")
            stored = [dict(copy.deepcopy(item)) for item in items]
            staged[route] = (stored, dump_json(stored))
        with self._lock:
            for route in [r for r in self._items if r.spec.name not in keep]:
                del self._items[route]
                del self._bodies[route]
            for route, (stored, body) in staged.items():
                self._items[route] = stored
                self._bodies[route] = body
            self._statuses = _statuses(self._items.get(ListRoute(LIST_SPECS["sites"]), []))

    def get(self, route: ListRoute) -> Items:
        """A deep copy of one list (empty if never set)."""
        with self._lock:
            return copy.deepcopy(self._items.get(route, []))

    def body(self, route: ListRoute) -> bytes:
        """The JSON body of one list as served."""
        with self._lock:
            return self._bodies.get(route, b"[]")

    def refusal(self, site_id: int) -> tuple[int, str, str] | None:
        """Why a per-site request for `site_id` is refused (status, error, text), or None."""
        with self._lock:
            if site_id in self._statuses:
                status = self._statuses[site_id]
                refused = SITE_STATUS_REFUSALS.get(status) if isinstance(status, str) else None
            elif any(route.site_id == site_id for route in self._items):
                return None  # a site that left the list but still has lists of its own
            else:
                refused = (404, "not_found", "site {0} does not exist")
        if refused is None:
            return None
        status_code, error, text = refused
        return status_code, error, text.format(site_id)


def _statuses(sites: Items) -> dict[int, object]:
    """Site id -> status, for the sites with an int id (the others cannot be asked for)."""
    statuses: dict[int, object] = {}
    for site in sites:
        site_id = site.get("id")
        if isinstance(site_id, int) and not isinstance(site_id, bool):
            statuses[site_id] = site.get("status")
    return statuses


def filter_by_module(items: Items, module: str) -> Items:
    """Products whose moduleId is `module` (compared as text, ignoring case as guids allow)."""
    wanted = module.casefold()
    return [item for item in items if str(item.get("moduleId", "")).casefold() == wanted]


def resign_icons(items: Items, serial: int) -> Items:
    """Plans whose signed `icon` URLs carry a new Signature, as a fresh signing would give."""
    for item in items:
        icon = item.get("icon")
        if isinstance(icon, str) and icon:
            item["icon"] = _resigned(icon, serial)
    return items


def _resigned(url: str, serial: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "Signature"]
    digest = hashlib.sha256(f"{parts.path}#{serial}".encode()).hexdigest()[:40]
    query.append(("Signature", digest))
    return urlunsplit(parts._replace(query=urlencode(query)))
