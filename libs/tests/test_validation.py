"""libs.validation: each check returns the clean value or raises InvalidArgument naming the
field."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest
from tiket.journey.v1 import journey_pb2

from libs.errors import InvalidArgument
from libs.validation import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    TERMINAL_CODE,
    card_id_field,
    gate_code_field,
    key_field,
    page_size_field,
    pattern_field,
    required_text_field,
    terminal_code_field,
    text_field,
    timestamp_field,
    uuid_field,
)


def refusal(call) -> tuple[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        call()
    (violation,) = caught.value.violations
    return violation.field, violation.description


# --- card ids ------------------------------------------------------------------------


@pytest.mark.parametrize("card", ["ABCDEFGH", "12345678", "A1B2C3D4E5", "Z" * 20, "0" * 8])
def test_valid_card_ids(card: str) -> None:
    assert card_id_field(card) == card


@pytest.mark.parametrize(
    "card",
    [
        "A" * 7,  # too short
        "A" * 21,  # too long
        "abcdefgh",  # lower case
        "ABCDEFGh",
        "ABCD-EFGH",
        "ABCD EFGH",
        " ABCDEFGH",
        "ABCDEFGH\n",
        "ÄBCDEFGH",
        "ABCDEFGH1234567890123456789",
    ],
)
def test_invalid_card_ids(card: str) -> None:
    field, description = refusal(lambda: card_id_field(card))
    assert field == "card_id"
    assert "^[A-Z0-9]{8,20}$" in description


def test_card_id_required_and_field_name() -> None:
    assert refusal(lambda: card_id_field("")) == ("card_id", "is required")
    assert refusal(lambda: card_id_field("x", "card.id"))[0] == "card.id"


def test_long_values_are_clipped_in_messages() -> None:
    _, description = refusal(lambda: card_id_field("a" * 1000))
    assert len(description) < 120
    assert "…" in description


def test_terminal_code_pattern() -> None:
    assert pattern_field("ABC", "origin", TERMINAL_CODE, "^[A-Z]{1,3}$") == "ABC"
    for bad in ["ABCD", "ab", "A1"]:
        assert refusal(lambda bad=bad: pattern_field(bad, "origin", TERMINAL_CODE, "x"))[0] == (
            "origin"
        )


# --- uuids ---------------------------------------------------------------------------


def test_uuid_field_accepts_uuids() -> None:
    value = uuid.uuid4()
    assert uuid_field(str(value), "user_id") == value
    assert uuid_field(str(value).upper(), "user_id") == value


@pytest.mark.parametrize(
    "bad", ["nope", "1234", "b741ac64-7546-45ad-aa37-6391def0af8", "g" * 32, "💥"]
)
def test_uuid_field_refuses_other_text(bad: str) -> None:
    field, description = refusal(lambda: uuid_field(bad, "user_id"))
    assert field == "user_id"
    assert "is not a UUID" in description


def test_uuid_field_required() -> None:
    assert refusal(lambda: uuid_field("", "hold.hold_id")) == ("hold.hold_id", "is required")


# --- free text -----------------------------------------------------------------------


def test_text_field_strips_and_returns_none_when_empty() -> None:
    assert text_field("  Ana  ", "full_name", max_len=10) == "Ana"
    assert text_field("   ", "email", max_len=10) is None
    assert text_field("", "email", max_len=10) is None


def test_text_field_required() -> None:
    assert refusal(lambda: text_field("  ", "full_name", max_len=10, required=True)) == (
        "full_name",
        "is required",
    )


def test_text_field_max_length_is_inclusive() -> None:
    assert text_field("x" * 255, "full_name", max_len=255) == "x" * 255
    field, description = refusal(lambda: text_field("x" * 256, "full_name", max_len=255))
    assert field == "full_name"
    assert "256" in description and "255" in description


@pytest.mark.parametrize("control", ["\x00", "\x07", "\n", "\t", "\x1b", "\x1f"])
def test_text_field_refuses_control_characters(control: str) -> None:
    field, description = refusal(lambda: text_field(f"An{control}a", "full_name", max_len=50))
    assert field == "full_name"
    assert "control characters" in description


def test_text_field_allows_unicode() -> None:
    assert text_field("Siti Nurhaliza – 日本", "full_name", max_len=50) == "Siti Nurhaliza – 日本"


def test_key_field_is_required_and_bounded() -> None:
    assert key_field(" k-1 ", "idempotency_key") == "k-1"
    assert refusal(lambda: key_field("", "idempotency_key")) == ("idempotency_key", "is required")
    assert refusal(lambda: key_field("k" * 101, "idempotency_key"))[0] == "idempotency_key"
    assert key_field("k" * 100, "idempotency_key") == "k" * 100


# --- page sizes ----------------------------------------------------------------------


def test_page_size_zero_means_default() -> None:
    assert page_size_field(0) == DEFAULT_PAGE_SIZE


@pytest.mark.parametrize("size", [1, 50, MAX_PAGE_SIZE])
def test_page_size_in_bounds(size: int) -> None:
    assert page_size_field(size) == size


@pytest.mark.parametrize("size", [-1, MAX_PAGE_SIZE + 1, 2**31 - 1, -(2**31)])
def test_page_size_out_of_bounds(size: int) -> None:
    field, description = refusal(lambda: page_size_field(size))
    assert field == "page_size"
    assert re.search(rf"\b{MAX_PAGE_SIZE}\b", description)


# --- one rule per field, for every service (issue 13) ------------------------------------


@pytest.mark.parametrize("value", ["A", "XYZ"])
def test_terminal_codes(value: str) -> None:
    assert terminal_code_field(value) == value


@pytest.mark.parametrize(
    ("value", "words"),
    [("", "is required"), ("ABCD", "does not match"), ("a", "does not match"), (7, "token")],
)
def test_bad_terminal_codes_name_the_field(value: object, words: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        terminal_code_field(value, "origin_code")
    assert caught.value.violations[0].field == "origin_code"
    assert words in caught.value.violations[0].description


@pytest.mark.parametrize("value", ["A-ENTRY-01", "G1", "9" * 20])
def test_gate_codes(value: str) -> None:
    assert gate_code_field(value) == value


@pytest.mark.parametrize("value", ["", "-A", "a-entry", "A" * 21, "A/B", None])
def test_bad_gate_codes(value: object) -> None:
    with pytest.raises(InvalidArgument, match="gate_code"):
        gate_code_field(value)


def test_required_text_field() -> None:
    assert required_text_field("  Budi ", "full_name", max_len=10) == "Budi"
    with pytest.raises(InvalidArgument, match="full_name: is required"):
        required_text_field("   ", "full_name", max_len=10)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-62_135_596_801, 0), (253_402_300_800, 0), (0, -1), (0, 1_000_000_000)],
)
def test_timestamps_outside_what_a_timestamp_may_hold_are_refused(seconds, nanos) -> None:
    # Years 1-9999 and nanos 0-999,999,999 (google.protobuf.Timestamp); fare's stricter
    # check, now every service's.
    request = journey_pb2.ListJourneysRequest()
    request.started_from.seconds, request.started_from.nanos = seconds, nanos
    with pytest.raises(InvalidArgument, match="started_from: is not a valid timestamp"):
        timestamp_field(request, "started_from")


def test_a_valid_timestamp_and_an_unset_one() -> None:
    request = journey_pb2.ListJourneysRequest()
    assert timestamp_field(request, "started_from") is None
    request.started_from.FromDatetime(datetime(2026, 12, 4, 12, 0, tzinfo=UTC))
    assert timestamp_field(request, "started_from") == datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
