"""deploy/dbt's sources against the schema, without dbt: the file is what tests/dbt/sources.py
generates, every table and view the migrations create is a source (or the job's bookkeeping),
every declared column exists, and the tests and freshness the package promises are there."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Engine

from sync.resources import REGISTRY
from sync.schema import ACTIONS, RUN_STATUSES
from sync.store import create_engine
from tests.conftest import REPO, _unavailable

from .sources import BOOKKEEPING, PROJECT, SOURCES_FILE, database_objects, render

HISTORY_VIEWS = {"platform_history": "platforms", "site_history": "sites"}


def declared() -> dict[str, dict[str, Any]]:
    """The source tables of the committed file, by name (YAML anchors resolved)."""
    document = yaml.safe_load(SOURCES_FILE.read_text(encoding="utf-8"))
    (source,) = document["sources"]
    return {table["name"]: table for table in source["tables"]}


def column_tests(column: dict[str, Any]) -> dict[str, Any]:
    """A column's tests by name: the arguments of each (None for a test without any)."""
    found: dict[str, Any] = {}
    for test in column.get("data_tests", []):
        if isinstance(test, str):
            found[test] = None
        else:
            ((name, body),) = test.items()
            found[name] = body["arguments"]
    return found


@pytest.fixture
def migrated(backend: str, migrated_urls: dict[str, str | Exception]) -> Iterator[Engine]:
    url = migrated_urls[backend]
    if isinstance(url, Exception):
        _unavailable(backend, url)
    assert isinstance(url, str)
    engine = create_engine(url)
    yield engine
    engine.dispose()


def test_the_sources_file_is_what_the_generator_writes() -> None:
    """A new list, column or view changes the generated file: `python -m tests.dbt.sources`."""
    assert SOURCES_FILE.read_text(encoding="utf-8") == render()


@pytest.mark.db
def test_every_table_and_view_is_a_source_or_bookkeeping(migrated: Engine) -> None:
    objects = database_objects(migrated)

    assert objects >= BOOKKEEPING  # the exclusions name real tables
    assert objects - BOOKKEEPING == set(declared())


@pytest.mark.db
def test_every_source_column_exists_and_every_column_is_described(migrated: Engine) -> None:
    inspector = sa.inspect(migrated)
    for name, table in declared().items():
        in_database = {column["name"] for column in inspector.get_columns(name)}
        described = [column["name"] for column in table["columns"]]
        assert len(described) == len(set(described)), name
        assert set(described) == in_database, name
        assert all(column["description"] for column in table["columns"]), name


def test_the_sources_are_what_the_bi_reader_is_granted() -> None:
    """docs/deploy.md's GRANT SELECT to bi_reader names the same tables and views."""
    deploy = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    grant = re.search(r"GRANT SELECT ON\n(.*?)\n\s*TO bi_reader;", deploy, re.DOTALL)
    assert grant is not None
    granted = {name.strip() for name in grant.group(1).split(",")}

    assert granted == set(declared())


def test_keys_actions_and_statuses_are_tested() -> None:
    tables = declared()
    for resource in REGISTRY.values():
        site = ["site_id"] if resource.site_scoped else []
        key = " || '|' || ".join(["partner_id", *site, "id"])
        for name in (resource.name, f"{resource.name}_current"):
            columns = {c["name"]: column_tests(c) for c in tables[name]["columns"]}
            assert tables[name]["data_tests"] == [{"unique": {"arguments": {"column_name": key}}}]
            assert all("not_null" in columns[c] for c in ("partner_id", *site, "id")), name
        audit = {
            c["name"]: column_tests(c) for c in tables[f"{resource.singular}_audit"]["columns"]
        }
        assert {"not_null", "unique"} <= audit["id"].keys()
        assert "not_null" in audit[resource.audit_key]
        assert audit["action"]["accepted_values"] == {"values": list(ACTIONS)}
    runs = {c["name"]: column_tests(c) for c in tables["sync_runs"]["columns"]}
    assert runs["status"]["accepted_values"] == {"values": list(RUN_STATUSES)}
    assert {"not_null", "unique"} <= runs["id"].keys()
    changes = {c["name"]: column_tests(c) for c in tables["all_changes"]["columns"]}
    assert changes["action"]["accepted_values"] == {"values": list(ACTIONS)}


def test_each_list_is_as_fresh_as_its_last_successful_run() -> None:
    """Every source of a list takes its freshness from that list's runs; all_changes has none."""
    tables = declared()
    for name, table in tables.items():
        if name in ("all_changes", "sync_runs"):
            continue
        resource = next(
            (r for r in REGISTRY.values() if name in (r.name, f"{r.singular}_audit",
                                                      f"{r.name}_current")),
            REGISTRY.get(HISTORY_VIEWS.get(name, "")),
        )  # fmt: skip
        assert resource is not None, name
        config = table["config"]
        assert (
            config["loaded_at_query"] == f'{{{{ comm100_sync_last_success("{resource.name}") }}}}'
        )
        for threshold in ("warn_after", "error_after"):
            assert (
                f'"{resource.name}" in var("comm100_sync_resources")'
                in (config["freshness"][threshold]["count"])
            )
    assert "config" not in tables["all_changes"]
    assert tables["sync_runs"]["config"]["loaded_at_field"] == "started_at"


def test_docs_name_every_var_with_its_default() -> None:
    """docs/bi.md's dbt section: the vars table is the package's vars, and its examples parse."""
    project = yaml.safe_load((PROJECT / "dbt_project.yml").read_text(encoding="utf-8"))
    section = (REPO / "docs" / "bi.md").read_text(encoding="utf-8").split("\n## dbt\n")[1]
    rows = re.findall(r"^\| `(comm100_sync_\w+)` \| `([^`]*)` \|", section, re.MULTILINE)

    assert {name: yaml.safe_load(default) for name, default in rows} == project["vars"]
    examples = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    assert examples[0]["packages"][0]["local"].endswith("/deploy/dbt")
    assert set(examples[1]["vars"]) <= set(project["vars"])
