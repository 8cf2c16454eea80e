"""`comm100-sync emulator`: run an Emulator in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

from sync.emulator.app import Emulator
from sync.emulator.lists import document_lists


def load_platforms(path: str) -> list[dict[str, object]]:
    """Read an initial platform list: a JSON array of objects."""
    platforms = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(platforms, list) or not all(isinstance(p, dict) for p in platforms):
        raise ValueError(f"{path}: expected a JSON array of objects")
    return platforms


def load_data(path: str) -> dict[str, object]:
    """Read an initial data set: {"platforms": [...], "agents": {"10001": [...]}, ...}."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object of list names")
    try:
        document_lists(document)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return document


def main(
    host: str = "127.0.0.1",
    port: int = 8100,
    *,
    platforms_file: str | None = None,
    data_file: str | None = None,
) -> None:
    """Serve the emulator with the demo credentials until SIGINT or SIGTERM, then return.

    Prints one line with the URL and the demo credentials (meant to be shown: they open
    nothing but this emulator).

    Args:
        platforms_file: a JSON array of platforms, served instead of the default ones (or of
            the data file's).
        data_file: a JSON data set, served instead of the default account; lists it leaves
            out are empty.

    Raises:
        OSError: the port cannot be bound, or a file cannot be read.
        ValueError: a file is not JSON of the expected shape.
    """
    platforms = None if platforms_file is None else load_platforms(platforms_file)
    data = None if data_file is None else load_data(data_file)
    emulator = Emulator(host=host, port=port, platforms=platforms, data=data)
    in_main_thread = threading.current_thread() is threading.main_thread()
    # SIGTERM takes SIGINT's path (KeyboardInterrupt), so a service manager's stop is clean.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main_thread else None
    try:
        emulator.start()
        print(
            f"emulator listening on {emulator.url} (client_id={emulator.client_id} "
            f"email={emulator.email} password={emulator.password})",
            flush=True,
        )
        emulator.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
