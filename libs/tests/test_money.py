"""libs.money: google.type.Money <-> Decimal, never a float, refusals naming the field."""

from __future__ import annotations

from decimal import Decimal

import pytest
from google.type import money_pb2
from hypothesis import given
from hypothesis import strategies as st

from libs.errors import InvalidArgument
from libs.money import MAX_AMOUNT, NANOS_PER_CENT, from_money, rupiah, to_decimal, to_money


def money(units: int = 0, nanos: int = 0, currency: str = "IDR") -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def violation(exc: InvalidArgument) -> tuple[str, str]:
    assert len(exc.violations) == 1
    return exc.violations[0].field, exc.violations[0].description


@pytest.mark.parametrize(
    ("amount", "units", "nanos"),
    [
        ("1500", 1500, 0),
        ("1500.50", 1500, 500_000_000),
        ("0.01", 0, 10_000_000),
        ("0.99", 0, 990_000_000),
        ("12345.67", 12345, 670_000_000),
        ("-1.50", -1, -500_000_000),
        ("-0.25", 0, -250_000_000),
        ("9999999999999.99", 9_999_999_999_999, 990_000_000),
    ],
)
def test_to_money_splits_units_and_nanos_with_one_sign(amount: str, units: int, nanos: int) -> None:
    m = to_money(Decimal(amount))
    assert (m.currency_code, m.units, m.nanos) == ("IDR", units, nanos)
    assert from_money(m) == Decimal(amount)


def test_to_money_rounds_to_cents_and_keeps_currency() -> None:
    m = to_money(Decimal("10.005"), "IDR")
    assert from_money(m) in {Decimal("10.00"), Decimal("10.01")}
    assert from_money(m).as_tuple().exponent == -2


def test_to_decimal_round_trip_with_nanos() -> None:
    assert to_decimal(money(1500, 500_000_000), "amount") == Decimal("1500.50")
    assert to_decimal(money(0, 10_000_000), "amount") == Decimal("0.01")
    assert to_decimal(money(7), "amount") == Decimal("7.00")
    # Always two places, as NUMERIC(15,2) stores it.
    assert to_decimal(money(7), "amount").as_tuple().exponent == -2


def test_unset_currency_means_idr() -> None:
    assert to_decimal(money(5, currency=""), "amount") == Decimal("5.00")


def test_zero_is_allowed_only_when_not_positive() -> None:
    assert to_decimal(money(0), "final_amount", positive=False) == Decimal("0.00")
    with pytest.raises(InvalidArgument) as caught:
        to_decimal(money(0), "amount")
    assert violation(caught.value) == ("amount", "must be greater than zero")


@pytest.mark.parametrize("positive", [True, False])
def test_negative_is_refused(positive: bool) -> None:
    with pytest.raises(InvalidArgument) as caught:
        to_decimal(money(-5), "amount", positive=positive)
    field, _ = violation(caught.value)
    assert field == "amount"
    with pytest.raises(InvalidArgument):
        to_decimal(money(0, -10_000_000), "amount", positive=positive)


@pytest.mark.parametrize(
    ("units", "nanos"),
    [(1, 1), (1, 5_000_000), (1, 10_000_001), (0, 999_999_999), (-1, -1), (0, -5_000_000)],
)
def test_nanos_must_be_whole_cents(units: int, nanos: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        to_decimal(money(units, nanos), "amount", positive=False)
    field, description = violation(caught.value)
    assert field == "amount.nanos"
    assert "cents" in description


@pytest.mark.parametrize("nanos", [1_000_000_000, -1_000_000_000, 2_000_000_000])
def test_nanos_out_of_range(nanos: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        to_decimal(money(1 if nanos > 0 else -1, nanos), "price")
    assert violation(caught.value)[0] == "price.nanos"


@pytest.mark.parametrize(("units", "nanos"), [(1, -500_000_000), (-1, 500_000_000)])
def test_mixed_signs_are_refused(units: int, nanos: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        to_decimal(money(units, nanos), "amount", positive=False)
    field, description = violation(caught.value)
    assert field == "amount.nanos"
    assert "same sign" in description


@pytest.mark.parametrize("currency", ["USD", "idr", "XXX", "RUPIAH"])
def test_unsupported_currency(currency: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        to_decimal(money(10, currency=currency), "amount")
    field, description = violation(caught.value)
    assert field == "amount.currency_code"
    assert repr(currency) in description


def test_max_amount_is_the_limit() -> None:
    top = to_money(MAX_AMOUNT)
    assert to_decimal(top, "amount") == MAX_AMOUNT
    with pytest.raises(InvalidArgument) as caught:
        to_decimal(money(10_000_000_000_000), "amount")
    field, description = violation(caught.value)
    assert field == "amount"
    assert str(MAX_AMOUNT) in description
    with pytest.raises(InvalidArgument):
        to_decimal(money(2**63 - 1, 990_000_000), "amount")


def test_from_money_is_signed_and_unchecked() -> None:
    assert from_money(money(-3, -750_000_000)) == Decimal("-3.75")
    assert from_money(money(0, 0)) == Decimal("0.00")
    assert from_money(money(2, 500_000_000, currency="USD")) == Decimal("2.50")


cents = st.decimals(
    min_value=Decimal("0.01"), max_value=MAX_AMOUNT, places=2, allow_nan=False, allow_infinity=False
)


@given(cents)
def test_round_trip_property(amount: Decimal) -> None:
    m = to_money(amount)
    assert m.nanos % NANOS_PER_CENT == 0
    assert (m.units >= 0) and (m.nanos >= 0)
    assert to_decimal(m, "amount") == amount
    assert from_money(m) == amount


@given(cents)
def test_negative_round_trip_property(amount: Decimal) -> None:
    m = to_money(-amount)
    assert m.units <= 0 and m.nanos <= 0
    assert from_money(m) == -amount


@pytest.mark.parametrize(
    ("amount", "written"),
    [
        ("12000.00", "Rp 12.000"),
        ("138000", "Rp 138.000"),
        ("12000.50", "Rp 12.000,50"),
        ("1234567.05", "Rp 1.234.567,05"),
        ("0", "Rp 0"),
    ],
)
def test_rupiah_is_written_the_indonesian_way(amount: str, written: str) -> None:
    assert rupiah(Decimal(amount)) == written
