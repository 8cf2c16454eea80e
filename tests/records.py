"""Records of the platform list, as the tests build them from JSON bodies."""

from __future__ import annotations

from sync.models import Record
from sync.parsing import parse_list
from sync.resources import PLATFORMS


def parse_platform_list(body: bytes) -> list[Record]:
    return parse_list(body, PLATFORMS)
