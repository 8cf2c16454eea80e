"""The registry of secret values (password, tokens, the database password, the token-cache key)
and how they are masked in any text that leaves the process: logs, stored errors, `status`,
/healthz.

Settings feed it at start-up and the token provider adds each token it receives. A secret of
eight characters or more is masked wherever it occurs. A shorter one is masked only where it
stands as a word of its own (`password 'c' is wrong`), never inside other words: masking every
"c" would garble `connection refused` and, worse, spell the secret out between the stars.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

MASK = "***"
# At this length a value occurring by chance inside other text is no real risk.
MIN_ANYWHERE = 8
# Belt and braces for values we were never told about: bearer tokens, JWTs and form fields.
_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    # form fields (password=…) and JSON members ("password": "…")
    re.compile(r"(?i)((?:password|access_token|refresh_token)(?:=|[\"']\s*:\s*[\"']))[^&\s\"']+"),
    # passwords in URLs: scheme://user:password@host
    re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+(?=@)"),
)


class Secrets:
    """Secret values known to this process; thread-safe, add-only."""

    def __init__(self, values: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for value in values:
            self.add(value)

    def __repr__(self) -> str:
        return f"Secrets({len(self._values)} values)"

    def add(self, value: str | None) -> None:
        if not value or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            self._pattern = None

    def mask(self, text: str) -> str:
        """`text` with every known secret and every secret-shaped string replaced by ***."""
        pattern = self._compiled()
        if pattern is not None:
            text = pattern.sub(MASK, text)
        for shape in _SECRET_PATTERNS:
            text = shape.sub(lambda m: (m.group(1) if m.re.groups else "") + MASK, text)
        return text

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._values:
                # Longest first: a secret that contains another must not be left half-masked.
                alternatives = [
                    re.escape(value)
                    if len(value) >= MIN_ANYWHERE
                    else rf"(?<![^\W_]){re.escape(value)}(?![^\W_])"
                    for value in sorted(self._values, key=len, reverse=True)
                ]
                self._pattern = re.compile("|".join(alternatives))
            return self._pattern
