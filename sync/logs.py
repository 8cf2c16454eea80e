"""Log output: text or one JSON object per line, the cycle's run id on every line, secrets redacted.

The only module that attaches handlers; everything else uses `logging.getLogger(__name__)`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sync.redaction import Secrets

_UNICODE_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}
_run_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("run_id", default=None)
# The filter installed by configure(), so error text printed outside logging is redacted too.
_active_filter: RedactingFilter | None = None


@contextlib.contextmanager
def run_context(run_id: int | None) -> Iterator[None]:
    """Tag every log line emitted inside the block (in this thread/context) with `run_id`."""
    token = _run_id.set(run_id)
    try:
        yield
    finally:
        _run_id.reset(token)


def current_run_id() -> int | None:
    return _run_id.get()


class RedactingFilter(logging.Filter):
    """Masks the registry's secrets and secret-shaped strings in the rendered message."""

    def __init__(self, secrets: Secrets | None = None) -> None:
        super().__init__()
        self.secrets = secrets if secrets is not None else Secrets()

    def redact(self, text: str) -> str:
        return self.secrets.mask(text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        redacted = self.redact(message)
        record.msg, record.args = redacted, None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        record.run_id = _run_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(run)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # Milliseconds and an explicit Z: the line must say its time is UTC.
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        return stamp[:-3] + "Z"

    def format(self, record: logging.LogRecord) -> str:
        run_id = getattr(record, "run_id", None)
        record.run = f" [run {run_id}]" if run_id is not None else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """Exactly one JSON object per line; newlines inside messages stay escaped."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        run_id = getattr(record, "run_id", None)
        if run_id is not None:
            entry["run_id"] = run_id
        for key in (
            "event",
            "status",
            "resource",
            "partner_id",
            "counts",
            "duration_seconds",
            "exit_code",
        ):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        line = json.dumps(entry, ensure_ascii=False, default=str)
        # JSON allows these raw inside strings, but line readers that follow Unicode (Python's
        # splitlines, JavaScript) break lines on them; escaped, they only occur inside strings.
        return line.translate(_UNICODE_LINE_BREAKS)


def configure(
    *, fmt: str = "text", level: str = "INFO", secrets: Secrets | None = None
) -> RedactingFilter:
    """Send logs to stderr in `fmt`, masked with the `secrets` registry."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    global _active_filter
    _active_filter = redactor
    # Library chatter (Alembic's plugin set-up, urllib3's connection lines) only at WARNING.
    quiet = max(logging.getLevelNamesMapping()[level], logging.WARNING)
    for noisy in ("urllib3", "apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(quiet)
    return redactor


def redact(text: str) -> str:
    """Mask secrets in text that is printed rather than logged."""
    return (_active_filter or RedactingFilter()).redact(text)
