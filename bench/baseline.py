"""Baseline for the benchmarks: the same job as plainly as it can be written (requests + Core).

Password grant, GET the list, read the current rows, diff in Python (decoded JSON compared),
then executemany inserts/updates and audit rows in one transaction. `--copy` loads new rows with
PostgreSQL COPY instead. `--lists` does the same for the four partner lists that `once` syncs
by default (platforms, sites, products, plans): four GETs one after another, then each list
into a table of its own (`baseline_list_<name>`, id and raw JSON) in a transaction of its own,
with audit rows in `baseline_list_audit`. Reads SYNC_AUTH_URL, SYNC_API_URL, SYNC_CLIENT_ID,
SYNC_EMAIL, SYNC_PASSWORD and SYNC_DATABASE_URL. Not part of the package: a yardstick, with no
retries, lock, run log or validation.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import requests
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData()
JSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
platforms = sa.Table(
    "baseline_platforms",
    metadata,
    sa.Column("partner_id", sa.String(64), primary_key=True),
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("raw", JSON, nullable=False),
    sa.Column("first_seen_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("deleted_at", sa.DateTime),
)
audit = sa.Table(
    "baseline_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("platform_id", sa.BigInteger, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("old_values", JSON),
    sa.Column("new_values", JSON),
    sa.Column("changed_at", sa.DateTime, nullable=False),
)
P = platforms.c

# `--lists`: the default lists of `once` and the JSON type of their ids.
LIST_KEYS: dict[str, type] = {"platforms": int, "sites": int, "products": str, "plans": int}
list_tables = {
    name: sa.Table(
        f"baseline_list_{name}",
        metadata,
        sa.Column("partner_id", sa.String(64), primary_key=True),
        sa.Column(
            "id",
            sa.BigInteger if key is int else sa.String(128),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("raw", JSON, nullable=False),
        sa.Column("first_seen_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("deleted_at", sa.DateTime),
    )
    for name, key in LIST_KEYS.items()
}
list_audit = sa.Table(
    "baseline_list_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("list", sa.String(32), nullable=False),
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("item_id", sa.String(128), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("old_values", JSON),
    sa.Column("new_values", JSON),
    sa.Column("changed_at", sa.DateTime, nullable=False),
)
LIST_TABLE_NAMES = ("baseline_list_audit", *(t.name for t in list_tables.values()))


def get_token(session: requests.Session, auth_url: str) -> str:
    form = {
        "grant_type": "password",
        "client_id": os.environ["SYNC_CLIENT_ID"],
        "email": os.environ["SYNC_EMAIL"],
        "password": os.environ["SYNC_PASSWORD"],
    }
    reply = session.post(auth_url, data=form, timeout=30)
    reply.raise_for_status()
    return str(reply.json()["access_token"])


def fetch(
    session: requests.Session, api_url: str, token: str, name: str = "platforms"
) -> list[dict[str, Any]]:
    reply = session.get(
        f"{api_url}/global/{name}", timeout=30, headers={"Authorization": f"Bearer {token}"}
    )
    reply.raise_for_status()
    items: list[dict[str, Any]] = reply.json()
    return items


def sync_list(
    engine: sa.Engine, name: str, items: list[dict[str, Any]], partner: str = ""
) -> dict[str, int]:
    """`sync` for one of the four default lists: its own table and transaction, no COPY."""
    table, now = list_tables[name], datetime.now(UTC).replace(tzinfo=None)
    c = table.c
    with engine.begin() as conn:
        query = sa.select(c.id, c.raw, c.deleted_at).where(c.partner_id == partner)
        current = {row.id: row for row in conn.execute(query)}
        fetched = {item["id"]: item for item in items}
        new, changed, trail = [], [], []
        for key, item in fetched.items():
            row = current.get(key)
            if row is None:
                new.append({"partner_id": partner, "id": key, "raw": item})
                trail.append((key, "insert", None, item))
            elif row.deleted_at is not None or row.raw != item:
                changed.append({"b_id": key, "raw": item})
                action = "restore" if row.deleted_at is not None else "update"
                trail.append((key, action, row.raw, item))
        gone = [k for k, row in current.items() if row.deleted_at is None and k not in fetched]
        trail += [(key, "delete", current[key].raw, None) for key in gone]
        if new:
            conn.execute(sa.insert(table).values(first_seen_at=now, updated_at=now), new)
        where = (c.partner_id == partner) & (c.id == sa.bindparam("b_id"))
        if changed:
            stmt = sa.update(table).where(where).values(updated_at=now, deleted_at=None)
            conn.execute(stmt, changed)
        if gone:
            stmt = sa.update(table).where(where).values(deleted_at=now, updated_at=now)
            conn.execute(stmt, [{"b_id": key} for key in gone])
        if trail:
            rows = [
                dict(item_id=str(k), action=a, old_values=old, new_values=item)
                for k, a, old, item in trail
            ]
            stmt = sa.insert(list_audit).values(list=name, partner_id=partner, changed_at=now)
            conn.execute(stmt, rows)
    return {"inserted": len(new), "changed": len(changed), "deleted": len(gone)}


def sync(
    engine: sa.Engine, items: list[dict[str, Any]], partner: str = "", copy: bool = False
) -> dict[str, int]:
    """One transaction: read, diff, write, audit. Returns counts (and how many COPYs ran)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        query = sa.select(P.id, P.raw, P.deleted_at).where(P.partner_id == partner)
        current = {row.id: row for row in conn.execute(query)}
        fetched = {item["id"]: item for item in items}
        new: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        trail: list[tuple[int, str, Any, Any]] = []  # id, action, old, new
        for key, item in fetched.items():
            row = current.get(key)
            if row is None:
                new.append(dict(partner_id=partner, id=key, name=item["name"], raw=item))
                trail.append((key, "insert", None, item))
            elif row.deleted_at is not None or row.raw != item:
                changed.append({"b_id": key, "name": item["name"], "raw": item})
                action = "restore" if row.deleted_at is not None else "update"
                trail.append((key, action, row.raw, item))
        gone = [k for k, row in current.items() if row.deleted_at is None and k not in fetched]
        trail += [(key, "delete", current[key].raw, None) for key in gone]
        copies = 0
        if copy and conn.dialect.name == "postgresql" and new:
            copies = _copy(conn, new, trail, partner, now)
        else:
            if new:
                conn.execute(sa.insert(platforms).values(first_seen_at=now, updated_at=now), new)
            if trail:
                rows = [
                    dict(platform_id=k, action=a, old_values=old, new_values=item)
                    for k, a, old, item in trail
                ]
                conn.execute(sa.insert(audit).values(partner_id=partner, changed_at=now), rows)
        where = (P.partner_id == partner) & (P.id == sa.bindparam("b_id"))
        if changed:
            stmt = sa.update(platforms).where(where).values(updated_at=now, deleted_at=None)
            conn.execute(stmt, changed)
        if gone:
            stmt = sa.update(platforms).where(where).values(deleted_at=now, updated_at=now)
            conn.execute(stmt, [{"b_id": key} for key in gone])
    unchanged = len(fetched) - len(new) - len(changed)
    counts = {"inserted": len(new), "changed": len(changed), "deleted": len(gone)}
    return {**counts, "unchanged": unchanged, "copies": copies}


def _copy(conn: sa.Connection, new: list[dict[str, Any]], trail: list[Any], partner: str,
          now: datetime) -> int:  # fmt: skip
    """COPY the new rows and every audit row on the transaction's own psycopg connection."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    dump = json.dumps
    cols = "partner_id, id, name, raw, first_seen_at, updated_at"
    with cursor.copy(f"COPY baseline_platforms ({cols}) FROM STDIN") as out:
        for r in new:
            out.write_row((partner, r["id"], r["name"], dump(r["raw"]), now, now))
    cols = "partner_id, platform_id, action, old_values, new_values, changed_at"
    with cursor.copy(f"COPY baseline_audit ({cols}) FROM STDIN") as out:
        for key, action, old, item in trail:
            out.write_row((partner, key, action, old and dump(old), item and dump(item), now))
    return 2


def main() -> int:
    engine = sa.create_engine(os.environ["SYNC_DATABASE_URL"])
    metadata.create_all(engine)  # checks first: a no-op once the tables exist
    names = list(LIST_KEYS) if "--lists" in sys.argv else ["platforms"]
    with requests.Session() as session:
        token = get_token(session, os.environ["SYNC_AUTH_URL"])
        answers = {name: fetch(session, os.environ["SYNC_API_URL"], token, name) for name in names}
    if "--lists" in sys.argv:
        counts: dict[str, Any] = {name: sync_list(engine, name, answers[name]) for name in names}
    else:
        counts = sync(engine, answers["platforms"], copy="--copy" in sys.argv)
    engine.dispose()
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
