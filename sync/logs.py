"""Log output: text or one JSON object per line, the cycle's run id on every line, secrets redacted.

The only module that attaches handlers; everything else uses `logging.getLogger(__name__)`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

REDACTED = "***"
# Belt and braces for values we were never told about: bearer tokens, JWTs and form fields.
_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    # form fields (password=…) and JSON members ("password": "…")
    re.compile(r"(?i)((?:password|access_token|refresh_token)(?:=|[\"']\s*:\s*[\"']))[^&\s\"']+"),
)
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
    """Masks known secret values and secret-shaped strings in the rendered message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = {s for s in secrets if s}

    def add(self, secret: str) -> None:
        if secret:
            self._secrets.add(secret)

    def redact(self, text: str) -> str:
        # Longest first: a secret that contains another must not be left half-masked.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + REDACTED, text)
        return text

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
        for key in ("event", "status", "counts", "duration_seconds", "exit_code"):
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
    *, fmt: str = "text", level: str = "INFO", secrets: Iterable[str] = ()
) -> RedactingFilter:
    """Send logs to stderr in `fmt`; returns the redaction filter so callers can add secrets."""
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
