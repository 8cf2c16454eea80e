"""The secrets registry: every known secret masked where it appears as a value, nothing else
touched, whatever the secret's length."""

from __future__ import annotations

import pytest

from sync.redaction import MASK, Secrets

UNREACHABLE = (
    "reading the schema revision: database error (OperationalError): connection to server at "
    '"127.0.0.1", port 1 failed: Connection refused'
)


@pytest.mark.parametrize("secret", ["c", "cab", "a-forty-character-secret-0123456789abcdef"])
def test_text_that_merely_contains_the_letters_of_a_secret_is_left_alone(secret: str) -> None:
    """SYNC_PASSWORD=c used to turn this line into `s***hema … ***onne***tion`."""
    assert Secrets([secret]).mask(UNREACHABLE) == UNREACHABLE


@pytest.mark.parametrize(
    ("secret", "echoed", "masked"),
    [
        ("c", "password 'c' is wrong", f"password '{MASK}' is wrong"),
        ("c", "user=ops password c", f"user=ops password {MASK}"),
        ("c9!", "got c9! for the password", f"got {MASK} for the password"),
        ("a-forty-character-secret-0123456789abcdef",
         "token a-forty-character-secret-0123456789abcdefXYZ",
         f"token {MASK}XYZ"),
    ],
)  # fmt: skip
def test_a_secret_standing_as_a_value_is_masked_whatever_its_length(
    secret: str, echoed: str, masked: str
) -> None:
    assert Secrets([secret]).mask(echoed) == masked


def test_a_long_secret_is_masked_even_inside_other_text() -> None:
    secret = "Zq8-long-enough-to-never-occur-by-chance"
    assert Secrets([secret]).mask(f"x{secret}y") == f"x{MASK}y"


def test_a_secret_containing_another_is_masked_whole() -> None:
    short, long = "abc123xy", "abc123xy-and-the-rest-of-the-token"
    for order in ([short, long], [long, short]):
        assert Secrets(order).mask(f"value {long}") == f"value {MASK}"


def test_the_password_of_a_database_url_is_masked_even_unregistered() -> None:
    text = "could not connect to postgresql://sync:s3cret-pw@db.example/bi"
    assert Secrets().mask(text) == f"could not connect to postgresql://sync:{MASK}@db.example/bi"


def test_secrets_added_later_are_masked_and_empty_ones_ignored() -> None:
    secrets = Secrets([None, ""])
    assert secrets.mask("nothing to hide") == "nothing to hide"
    secrets.add("late-token-123456")
    assert secrets.mask("use late-token-123456") == f"use {MASK}"


def test_the_registry_never_shows_its_values() -> None:
    assert "hunter2" not in repr(Secrets(["hunter2"]))
