"""Fetching one list for one partner: a single GET, or one GET per site run concurrently; and
turning the answers into records, site by site, so that one bad site does not sink the others."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

from sync import models, tracing
from sync.client import PartnerClient
from sync.errors import AuthError, InterruptedCycleError, SyncError
from sync.models import Record
from sync.parsing import parse_list
from sync.resources import Resource
from sync.retry import Deadline

# A failure of these ends the whole list (and, for auth, the account): no site can do better.
_FATAL = (AuthError, InterruptedCycleError)


@dataclass
class Fetched:
    """A list's answers: (site, body) for each site that answered (site None for a partner
    list), the sites that failed, and the digest of the whole answer."""

    bodies: list[tuple[int | None, bytes]]
    failures: dict[int, SyncError] = field(default_factory=dict)

    def digest(self, variant: str) -> str | None:
        """BLAKE2b-128 of every answer in site order, salted with how rows are derived from
        them (None when a site failed: a partial answer is never a shortcut's reference)."""
        if self.failures:
            return None
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"derivation {models.DERIVATION_VERSION} {variant}\0".encode())
        for site, body in self.bodies:
            if site is not None:
                digest.update(f"site {site} {len(body)}\0".encode())
            digest.update(body)
        return digest.hexdigest()


def fetch(
    client: PartnerClient,
    resource: Resource,
    deadline: Deadline,
    *,
    sites: Sequence[int] = (),
    pool: Executor | None = None,
) -> Fetched:
    """GET the list (for each of `sites`, if it is a per-site list).

    Raises:
        SyncError: a partner list's failure, or one that ends a per-site list (auth, stop).
    """
    if not resource.site_scoped:
        return Fetched([(None, client.fetch_body(resource.url_path(), deadline))])

    # Per-site requests run on the pool's threads: bound, their spans nest under the list's.
    @tracing.bind
    def get(site: int) -> bytes:
        return client.fetch_body(resource.url_path(site), deadline, template=resource.path)

    fetched = Fetched([])

    def collect(site: int, answer: Future[bytes] | None) -> None:
        try:
            fetched.bodies.append((site, answer.result() if answer else get(site)))
        except _FATAL:
            raise
        except SyncError as error:
            fetched.failures[site] = error

    if pool is None:
        for site in sites:
            collect(site, None)
        return fetched
    futures = {site: pool.submit(get, site) for site in sites}
    try:
        for site, future in futures.items():
            collect(site, future)
    except BaseException:
        for future in futures.values():
            future.cancel()
        raise
    return fetched


def parse(
    client: PartnerClient,
    resource: Resource,
    fetched: Fetched,
    *,
    keep_personal: bool,
) -> tuple[list[Record], list[int]]:
    """Records of every answer, and the sites they cover; a per-site answer that breaks the
    contract becomes that site's failure (its rows stay as they are), a partner list's fails
    the list. The bodies are let go as they are parsed: a large answer is megabytes."""
    records: list[Record] = []
    parsed_sites: list[int] = []
    answered, fetched.bodies = fetched.bodies, []
    while answered:
        site, body = answered.pop(0)
        contract = functools.partial(
            parse_list, resource=resource, site_id=site, keep_personal=keep_personal
        )
        try:
            records.extend(client.parse_body(resource.url_path(site), contract, body))
            del body
        except SyncError as error:
            if site is None:
                raise
            fetched.failures[site] = error
            continue
        if site is not None:
            parsed_sites.append(site)
    return records, parsed_sites
