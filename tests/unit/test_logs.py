"""Log output: text or one JSON object per line, the run id on every line, secrets never shown."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest

from sync import logs
from sync.redaction import MASK, Secrets

CANARY = "canary-secret-5d1e"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJwYXJ0bmVySWQiOiI0MiJ9.c2lnbmF0dXJlLXBhcnQ"
NOISY = ("urllib3", "apscheduler", "alembic")

Configure = Callable[..., io.StringIO]


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Configure]:
    """logs.configure() writing to a buffer; the root logger is put back as it was afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_noisy = {name: logging.getLogger(name).level for name in NOISY}
    monkeypatch.setattr(logs, "_active_filter", None)

    def configure_to_buffer(**kwargs: object) -> io.StringIO:
        logs.configure(**kwargs)  # type: ignore[arg-type]
        (handler,) = root.handlers
        assert isinstance(handler, logging.StreamHandler)
        buffer = io.StringIO()
        handler.setStream(buffer)
        return buffer

    yield configure_to_buffer

    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)
    for name, level in saved_noisy.items():
        logging.getLogger(name).setLevel(level)


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def json_lines(buffer: io.StringIO) -> list[dict[str, object]]:
    """Every line parsed on its own: a line that is not one JSON object fails the test."""
    entries = [json.loads(line) for line in lines(buffer)]
    assert all(isinstance(entry, dict) for entry in entries)
    return entries


log = logging.getLogger("sync.test")


# --------------------------------------------------------------------------- text


def test_text_line_has_utc_time_level_logger_and_message(configure: Configure) -> None:
    out = configure(fmt="text")

    log.info("fetched %d platforms", 3)

    (line,) = lines(out)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO    sync\.test: fetched 3 platforms", line
    )


def test_text_line_carries_the_run_id_inside_run_context(configure: Configure) -> None:
    out = configure(fmt="text")

    with logs.run_context(42):
        log.info("inside")
    log.info("outside")

    inside, outside = lines(out)
    assert inside.endswith("sync.test [run 42]: inside")
    assert "[run" not in outside


def test_run_context_restores_the_outer_run_id() -> None:
    with logs.run_context(1):
        with logs.run_context(2):
            assert logs.current_run_id() == 2
        assert logs.current_run_id() == 1
    assert logs.current_run_id() is None


def test_level_filters_lower_messages(configure: Configure) -> None:
    out = configure(fmt="text", level="WARNING")

    log.info("hidden")
    log.warning("shown")

    assert [line.split(": ", 1)[1] for line in lines(out)] == ["shown"]


def test_configuring_twice_does_not_duplicate_lines(configure: Configure) -> None:
    configure(fmt="json")
    out = configure(fmt="text")

    log.info("once")

    assert len(lines(out)) == 1


def test_library_chatter_is_kept_at_warning(configure: Configure) -> None:
    out = configure(fmt="text", level="DEBUG")

    logging.getLogger("urllib3.connectionpool").info("Starting new HTTPS connection")
    log.debug("ours")

    assert [line.split(": ", 1)[1] for line in lines(out)] == ["ours"]


# --------------------------------------------------------------------------- JSON


def test_json_line_is_one_object_with_the_standard_fields(configure: Configure) -> None:
    out = configure(fmt="json")

    log.warning("retry %d of %d", 1, 3)

    (entry,) = json_lines(out)
    assert entry["level"] == "warning"
    assert entry["logger"] == "sync.test"
    assert entry["message"] == "retry 1 of 3"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", str(entry["ts"]))
    assert "run_id" not in entry


def test_json_message_with_newlines_stays_on_one_line(configure: Configure) -> None:
    out = configure(fmt="json")

    log.info("first\nsecond\r\nthird \u2028 fourth \u2029 fifth \x85 sixth")
    log.info("next")

    first, second = json_lines(out)
    assert first["message"] == "first\nsecond\r\nthird \u2028 fourth \u2029 fifth \x85 sixth"
    assert second["message"] == "next"


def test_json_line_carries_the_run_id_inside_run_context(configure: Configure) -> None:
    out = configure(fmt="json")

    with logs.run_context(7):
        log.info("cycle")

    (entry,) = json_lines(out)
    assert entry["run_id"] == 7


def test_json_line_carries_structured_extras(configure: Configure) -> None:
    out = configure(fmt="json")

    log.info("done", extra={"event": "cycle_end", "status": "success", "counts": {"inserted": 2}})

    (entry,) = json_lines(out)
    assert (entry["event"], entry["status"], entry["counts"]) == (
        "cycle_end",
        "success",
        {"inserted": 2},
    )


def test_json_exception_is_a_field_of_the_same_line(configure: Configure) -> None:
    out = configure(fmt="json")

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("cycle failed")

    (entry,) = json_lines(out)
    assert entry["message"] == "cycle failed"
    assert "RuntimeError: boom" in str(entry["exception"])


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_registered_secrets_are_redacted(configure: Configure, fmt: str) -> None:
    out = configure(fmt=fmt, secrets=Secrets([CANARY]))

    log.info("password is %s", CANARY)
    already_formatted = f"inline {CANARY}!"
    log.info(already_formatted)

    assert CANARY not in out.getvalue()
    assert out.getvalue().count(MASK) == 2


def test_secrets_added_after_configure_are_redacted(configure: Configure) -> None:
    out = configure(fmt="text")
    (handler,) = logging.getLogger().handlers
    (redactor,) = [f for f in handler.filters if isinstance(f, logs.RedactingFilter)]

    redactor.secrets.add(CANARY)
    log.info("token %s", CANARY)

    assert CANARY not in out.getvalue()


def test_a_secret_containing_another_secret_is_masked_whole(configure: Configure) -> None:
    """Replacing the shorter secret first would leave the rest of the longer one visible."""
    short, long = "abc123", "abc123-and-the-rest-of-the-token"
    for secrets in ([short, long], [long, short]):
        out = configure(fmt="text", secrets=Secrets(secrets))
        log.info("value %s", long)
        assert "the-rest-of-the-token" not in out.getvalue()


@pytest.mark.parametrize(
    ("message", "leak", "kept"),
    [
        ("Authorization: Bearer abc.DEF-123_xyz", "abc.DEF-123_xyz", "Authorization: Bearer ***"),
        ("header bearer  s3cr3t-token", "s3cr3t-token", "bearer  ***"),
        (f"got token {JWT} back", JWT.split(".")[1], "got token *** back"),
        ("form: grant_type=password&password=hunter2&x=1", "hunter2", "password=***&x=1"),
        ('body {"password": "hunter2", "a": 1}', "hunter2", '"password": "***"'),
        ("SYNC_PASSWORD=hunter2", "hunter2", "SYNC_PASSWORD=***"),
        ("refresh_token=rt-123456 ok", "rt-123456", "refresh_token=*** ok"),
        ('{"access_token":"at-123456"}', "at-123456", '"access_token":"***"'),
    ],
)
def test_secret_shaped_text_is_redacted_even_when_not_registered(
    configure: Configure, message: str, leak: str, kept: str
) -> None:
    out = configure(fmt="text")

    log.info("%s", message)

    assert leak not in out.getvalue()
    assert kept in out.getvalue()


@pytest.mark.parametrize(
    "message",
    [
        "fetched 3 platforms from /v4/global/platforms in 0.2s",
        "invalid settings: SYNC_PASSWORD: is required",
        "token endpoint refused the password grant: invalid_grant",
    ],
)
def test_ordinary_text_is_left_alone(configure: Configure, message: str) -> None:
    out = configure(fmt="text")

    log.info("%s", message)

    assert out.getvalue().rstrip().endswith(f": {message}")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_exception_text_is_redacted(configure: Configure, fmt: str) -> None:
    out = configure(fmt=fmt, secrets=Secrets([CANARY]))

    try:
        raise ValueError(f"login failed for {CANARY}; header Bearer tok-987654 password=pw-4242")
    except ValueError:
        log.exception("cycle failed")

    text = out.getvalue()
    assert "ValueError: login failed" in (text if fmt == "text" else json.loads(text)["exception"])
    for leak in (CANARY, "tok-987654", "pw-4242"):
        assert leak not in text


def test_redact_uses_the_configured_secrets(configure: Configure) -> None:
    configure(fmt="text", secrets=Secrets([CANARY]))

    assert logs.redact(f"comm100-sync: {CANARY}") == "comm100-sync: ***"


def test_redact_masks_secret_shapes_before_logging_is_configured() -> None:
    assert logs.redact("Bearer abcdef") == "Bearer ***"
