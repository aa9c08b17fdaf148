"""google.type.Money <-> Decimal. Money is never a float: amounts are Decimal with two
decimal places, as stored in NUMERIC(15,2)."""

from __future__ import annotations

from decimal import Decimal

from google.type import money_pb2

from libs.errors import InvalidArgument

DEFAULT_CURRENCY = "IDR"
SUPPORTED_CURRENCIES = frozenset({"IDR"})
CENT = Decimal("0.01")
NANOS_PER_CENT = 10_000_000
# NUMERIC(15,2) holds up to 13 integer digits.
MAX_AMOUNT = Decimal("9999999999999.99")


def to_decimal(money: money_pb2.Money, field: str, *, positive: bool = True) -> Decimal:
    """Validate `money` and return its amount. Unset currency means IDR."""
    currency = money.currency_code or DEFAULT_CURRENCY
    if currency not in SUPPORTED_CURRENCIES:
        raise InvalidArgument.field(
            f"{field}.currency_code", f"unsupported currency {currency!r}; use IDR"
        )
    if not -999_999_999 <= money.nanos <= 999_999_999:
        raise InvalidArgument.field(f"{field}.nanos", "must be within ±999,999,999")
    if money.units and money.nanos and (money.units > 0) != (money.nanos > 0):
        raise InvalidArgument.field(f"{field}.nanos", "must have the same sign as units")
    if money.nanos % NANOS_PER_CENT:
        raise InvalidArgument.field(f"{field}.nanos", "at most two decimal places (whole cents)")
    amount = Decimal(money.units) + Decimal(money.nanos // NANOS_PER_CENT) * CENT
    if positive and amount <= 0:
        raise InvalidArgument.field(field, "must be greater than zero")
    if amount < 0:
        raise InvalidArgument.field(field, "must not be negative")
    if amount > MAX_AMOUNT:
        raise InvalidArgument.field(field, f"must not exceed {MAX_AMOUNT}")
    return amount.quantize(CENT)


def to_money(amount: Decimal, currency: str = DEFAULT_CURRENCY) -> money_pb2.Money:
    """Return `amount` as Money; units and nanos carry the same sign."""
    amount = amount.quantize(CENT)
    units = int(amount)
    nanos = int((amount - units) * 100) * NANOS_PER_CENT
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def from_money(money: money_pb2.Money) -> Decimal:
    """The signed amount of a Money a tiket service produced (no input checks)."""
    return (Decimal(money.units) + Decimal(money.nanos) / Decimal(1_000_000_000)).quantize(CENT)


def rupiah(amount: Decimal) -> str:
    """`amount` as Indonesians write it: Rp 12.000, Rp 1.234.567,50 (seed 004's texts)."""
    grouped = f"{amount:,.2f}".replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return "Rp " + grouped.removesuffix(",00")
