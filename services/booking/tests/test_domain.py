"""Rules of the booking domain, pure: who manages which clinic, what a reservation may
become, what a booking costs."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from libs.auth import Principal, Role
from libs.errors import FailedPrecondition, NotFound, PermissionDenied, found
from services.booking import domain, refunds
from services.booking.domain import (
    Actor,
    Clinic,
    ConfirmPath,
    Reservation,
    ReservationStatus,
    Slot,
    SlotStatus,
)
from services.booking.refunds import RefundPolicy

CLINIC = uuid.UUID("0b9e6a3c-5f1e-4c7a-9d3b-2a8f4e6c1d20")
OTHER = uuid.uuid4()
RIDER = uuid.uuid4()
NOW = datetime(2027, 1, 4, 9, tzinfo=UTC)


def operator(subject: str) -> Actor:
    return Actor.of(Principal(Role.OPERATOR, subject))


def test_an_operator_manages_only_the_clinic_its_subject_names() -> None:
    staff = operator(f"clinic:{CLINIC}:drh.sari")
    assert staff.clinic_id == CLINIC and staff.manages(CLINIC) and not staff.manages(OTHER)
    staff.require_clinic(CLINIC)
    with pytest.raises(PermissionDenied) as refused:
        staff.require_clinic(OTHER)
    assert refused.value.message == f"an operator token may not manage clinic {OTHER}"


@pytest.mark.parametrize(
    "subject",
    [
        "terminal:A:budi",  # terminal staff
        f"clinic:{str(CLINIC).upper()}:sari",  # not the canonical form
        f"clinic:{CLINIC}:",  # no staff handle
        f"clinic:{CLINIC}:sari:x",
        "",
    ],
)
def test_an_operator_subject_naming_no_clinic_this_way_manages_none(subject: str) -> None:
    staff = operator(subject)
    assert staff.clinic_id is None and not staff.manages(CLINIC)
    with pytest.raises(PermissionDenied, match="names no clinic"):
        staff.require_clinic(CLINIC)


def test_admins_manage_every_clinic_and_riders_none() -> None:
    assert Actor.of(Principal(Role.ADMIN, "ops")).manages(OTHER)
    rider = Actor.of(Principal(Role.USER, str(RIDER)))
    assert not rider.manages(CLINIC) and not rider.is_staff
    with pytest.raises(PermissionDenied) as refused:
        rider.require_clinic(CLINIC)
    assert refused.value.message == f"a user token may not manage clinic {CLINIC}"


RECORD = ("booking", uuid.UUID(int=7))


def test_a_rider_sees_only_their_own_records_and_another_riders_is_not_found() -> None:
    rider = Actor.of(Principal(Role.USER, str(RIDER)))
    rider.require_party(RECORD, RIDER, CLINIC, RIDER)
    with pytest.raises(NotFound) as hidden:
        rider.require_party(RECORD, uuid.uuid4(), CLINIC, None)
    with pytest.raises(NotFound) as missing:
        found(None, *RECORD)
    seen = [
        (e.value.message, e.value.resource_type, e.value.resource_name) for e in (hidden, missing)
    ]
    assert seen[0] == seen[1]  # nothing tells a hidden record from a missing one
    admin = Actor.of(Principal(Role.ADMIN, "ops"))
    with pytest.raises(NotFound):  # the request named another rider than the record's
        admin.require_party(RECORD, RIDER, CLINIC, uuid.uuid4())
    with pytest.raises(PermissionDenied):
        operator(f"clinic:{OTHER}:x").require_party(RECORD, RIDER, CLINIC, None)


def slot(**changes) -> Slot:
    base = Slot(
        id=uuid.uuid4(), clinic_id=CLINIC, service_id=uuid.uuid4(), staff_id=None,
        day=date(2027, 1, 5), start_time=NOW + timedelta(days=1),
        end_time=NOW + timedelta(days=1, minutes=30), status=SlotStatus.AVAILABLE, capacity=3,
        remaining=0, price=Decimal("150000.00"), version=4, created_at=NOW, updated_at=NOW,
    )  # fmt: skip
    return replace(base, **changes)


def refusal_reason(s: Slot, active: bool = True) -> str | None:
    clinic = Clinic(CLINIC, "Klinik", None, "Asia/Jakarta", active, NOW, NOW)
    refused = domain.reservation_refusal(s, clinic, NOW)
    return None if refused is None else refused.reason


def test_why_a_place_cannot_be_taken() -> None:
    assert refusal_reason(slot(remaining=1), active=False) == "CLINIC_INACTIVE"
    assert refusal_reason(slot(status=SlotStatus.BOOKED, remaining=0)) == "SLOT_FULL"
    assert refusal_reason(slot(status=SlotStatus.MAINTENANCE)) == "SLOT_NOT_AVAILABLE"
    assert refusal_reason(slot(start_time=NOW)) == "SLOT_NOT_AVAILABLE"
    # A place is free again (a release won the race): no refusal, the caller tries again.
    assert refusal_reason(slot(remaining=1)) is None


def reservation(status: ReservationStatus) -> Reservation:
    return Reservation(
        id=uuid.uuid4(), user_id=RIDER, pet_id=uuid.uuid4(), slot_id=uuid.uuid4(),
        clinic_id=CLINIC, service_id=uuid.uuid4(), status=status, request_id=None,
        lock_token=domain.new_lock_token(), expires_at=NOW, created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def test_how_a_reservation_becomes_a_booking() -> None:
    assert domain.confirm_path(reservation(ReservationStatus.PENDING)) is ConfirmPath.HELD
    assert domain.confirm_path(reservation(ReservationStatus.EXPIRED)) is ConfirmPath.RETAKE
    assert domain.confirm_path(reservation(ReservationStatus.CONFIRMED)) is ConfirmPath.DONE
    with pytest.raises(FailedPrecondition) as caught:
        domain.confirm_path(reservation(ReservationStatus.CANCELLED))
    assert caught.value.reason == "RESERVATION_RELEASED"


def test_the_lock_token_must_match() -> None:
    held = reservation(ReservationStatus.PENDING)
    domain.check_lock_token(held, held.lock_token)
    for wrong in ("", held.lock_token[:-1], held.lock_token + "x", "ä"):
        with pytest.raises(FailedPrecondition) as caught:
            domain.check_lock_token(held, wrong)
        assert caught.value.reason == "INVALID_LOCK_TOKEN"
    assert domain.new_lock_token() != domain.new_lock_token()


def test_final_amount_is_total_less_discount_and_never_negative() -> None:
    price = Decimal("150000.00")
    assert domain.booking_amounts(price, Decimal("0")) == (price, Decimal("0"), price)
    assert domain.booking_amounts(price, Decimal("25000.50"))[2] == Decimal("124999.50")
    assert domain.booking_amounts(price, price)[2] == Decimal("0")
    with pytest.raises(FailedPrecondition) as caught:
        domain.booking_amounts(price, Decimal("150000.01"))
    assert caught.value.reason == "DISCOUNT_EXCEEDS_PRICE"


def test_the_standard_policy_refunds_90_percent_until_the_start() -> None:
    policy = RefundPolicy.parse(refunds.STANDARD)
    start = NOW + timedelta(minutes=1)
    assert policy.percent(start, NOW, by_clinic=False) == 90
    assert policy.percent(NOW + timedelta(days=30), NOW, by_clinic=False) == 90
    assert policy.name == "standard_cancellation"
    with pytest.raises(FailedPrecondition) as caught:
        policy.percent(NOW, NOW, by_clinic=False)
    assert caught.value.reason == "BOOKING_STARTED"
    assert policy.percent(NOW - timedelta(hours=1), NOW, by_clinic=True) == 100


def test_a_tiered_policy_takes_the_tier_of_the_notice_given() -> None:
    policy = RefundPolicy.parse("0:50, 24:100")
    assert policy.percent(NOW + timedelta(hours=24), NOW, by_clinic=False) == 100
    assert policy.percent(NOW + timedelta(hours=23, minutes=59), NOW, by_clinic=False) == 50


@pytest.mark.parametrize("text", ["", "24", "24:101", "-1:50", "24:100", "0:50,0:60", "x:1"])
def test_a_policy_that_does_not_cover_every_notice_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        RefundPolicy.parse(text)


def test_refunds_are_cut_down_to_the_cent() -> None:
    assert refunds.refund_amount(Decimal("150000.00"), 90) == Decimal("135000.00")
    assert refunds.refund_amount(Decimal("0.15"), 90) == Decimal("0.13")
    assert refunds.refund_amount(Decimal("99.99"), 100) == Decimal("99.99")
    assert refunds.refund_amount(Decimal("99.99"), 0) == Decimal("0.00")
