"""Local emulator of the Comm100 Partner API (token endpoint, platform list, scripted faults)."""

from sync.emulator.app import (
    DEFAULT_CLIENT_ID,
    DEFAULT_EMAIL,
    DEFAULT_PARTNER_ID,
    DEFAULT_PASSWORD,
    DEFAULT_PLATFORMS,
    STAT_KEYS,
    Emulator,
    RequestRecord,
)
from sync.emulator.faults import FAULT_KINDS, Fault
from sync.emulator.runner import main

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_EMAIL",
    "DEFAULT_PARTNER_ID",
    "DEFAULT_PASSWORD",
    "DEFAULT_PLATFORMS",
    "FAULT_KINDS",
    "STAT_KEYS",
    "Emulator",
    "Fault",
    "RequestRecord",
    "main",
]
