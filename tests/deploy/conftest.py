"""Helpers for the deploy/ checks: the files, YAML loading, and external tools that CI must have."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import IN_CI, REPO

DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
MONITORING = DEPLOY / "monitoring"
SYSTEMD = DEPLOY / "systemd"


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document in `path`."""
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def require_tool(name: str, why: str) -> str:
    """Path of `name`; skipped locally when missing, a failure under CI (.ci/run installs it)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found ({why})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path
