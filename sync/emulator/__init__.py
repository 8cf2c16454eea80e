"""Local emulator of the Comm100 Partner API (token endpoint, every list, faults, gates)."""

from sync.emulator.app import (
    DEFAULT_CLIENT_ID,
    DEFAULT_EMAIL,
    DEFAULT_PASSWORD,
    STAT_KEYS,
    Emulator,
)
from sync.emulator.data import (
    DEFAULT_PARTNER_ID,
    DEFAULT_PLANS,
    DEFAULT_PLATFORMS,
    DEFAULT_PRODUCTS,
    DEFAULT_SITE_LISTS,
    DEFAULT_SITES,
)
from sync.emulator.faults import FAULT_KINDS, Fault
from sync.emulator.gates import Gate
from sync.emulator.lists import LIST_NAMES, PARTNER_LISTS, SITE_LISTS
from sync.emulator.records import RequestRecord
from sync.emulator.runner import main

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_EMAIL",
    "DEFAULT_PARTNER_ID",
    "DEFAULT_PASSWORD",
    "DEFAULT_PLANS",
    "DEFAULT_PLATFORMS",
    "DEFAULT_PRODUCTS",
    "DEFAULT_SITES",
    "DEFAULT_SITE_LISTS",
    "FAULT_KINDS",
    "LIST_NAMES",
    "PARTNER_LISTS",
    "SITE_LISTS",
    "STAT_KEYS",
    "Emulator",
    "Fault",
    "Gate",
    "RequestRecord",
    "main",
]
