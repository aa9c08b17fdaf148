"""A booking's life after it is made, against the real user and booking services: paid from
the wallet, cancelled with the refund policy, moved to another slot, the visit — every
transition in the history and the event store, and the money audit after the module."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import jwt
import psycopg
import pytest
from grpc import aio
from tiket.booking.v1 import booking_pb2 as pb
from tiket.user.v1 import user_pb2

from libs.auth.service_identity import ServiceIdentity
from libs.money import from_money
from services.booking import qr
from services.booking.config import BookingConfig
from services.booking.tests.stack import (
    Clinic,
    Stack,
    future_hour,
    idr,
    new_clinic,
    new_rider,
    new_slot,
    replica,
    stamp,
)
from tests.support.grpc_errors import error_reason

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def booked(
    stack: Stack, clinic: Clinic, *, balance: int = 500_000, capacity: int = 1, slot=None
) -> tuple[pb.Booking, str]:
    """(a PENDING_PAYMENT booking of a new rider with `balance`, that rider's id)."""
    slot = slot or await new_slot(stack, clinic, capacity=capacity)
    user, pet = await new_rider(stack, balance=balance)
    md = stack.as_rider(user)
    held = await stack.booking.ReserveSlot(
        pb.ReserveSlotRequest(slot_id=slot.slot_id, user_id=user, pet_id=pet), metadata=md
    )
    booking = await stack.booking.ConfirmReservation(
        pb.ConfirmReservationRequest(
            reservation_id=held.reservation_id, user_id=user, lock_token=held.lock_token
        ),
        metadata=md,
    )
    return booking, user


async def pay(stack: Stack, booking: pb.Booking, key: str = "pay-1") -> pb.PayBookingResponse:
    return await stack.booking.PayBooking(
        pb.PayBookingRequest(
            booking_id=booking.booking_id,
            user_id=booking.user_id,
            method=pb.PAYMENT_METHOD_WALLET,
            idempotency_key=key,
        ),
        metadata=stack.as_rider(booking.user_id),
    )


async def cancel(stack: Stack, booking: pb.Booking, metadata=None) -> pb.CancelBookingResponse:
    return await stack.booking.CancelBooking(
        pb.CancelBookingRequest(booking_id=booking.booking_id, user_id=booking.user_id),
        metadata=metadata or stack.as_rider(booking.user_id),
    )


async def balance(stack: Stack, user_id: str) -> Decimal:
    wallet = await stack.users.GetWallet(
        user_pb2.GetWalletRequest(user_id=user_id), metadata=stack.metadata()
    )
    return from_money(wallet.balance)


async def slot_remaining(stack: Stack, slot_id: str) -> int:
    slot = await stack.booking.GetSlot(
        pb.GetSlotRequest(slot_id=slot_id), metadata=stack.metadata()
    )
    return slot.remaining


async def history(stack: Stack, booking: pb.Booking) -> list[tuple[str, str, str]]:
    answer = await stack.booking.GetBookingHistory(
        pb.GetBookingHistoryRequest(booking_id=booking.booking_id, user_id=booking.user_id),
        metadata=stack.as_rider(booking.user_id),
    )
    name = pb.BookingStatus.Name
    return [(name(e.previous_status), name(e.new_status), e.change_reason) for e in answer.entries]


async def event_types(stack: Stack, booking: pb.Booking) -> list[str]:
    answer = await stack.booking.GetBookingEvents(
        pb.GetBookingEventsRequest(booking_id=booking.booking_id), metadata=stack.metadata()
    )
    return [e.event_type for e in answer.events]


async def test_the_full_life_pay_from_the_wallet_then_cancel_for_90_percent(
    stack: Stack,
) -> None:
    clinic = await new_clinic(stack, price=150_000)
    booking, user = await booked(stack, clinic)
    paid = await pay(stack, booking)
    assert paid.booking.status == pb.BOOKING_STATUS_CONFIRMED
    assert paid.booking.payment_status == pb.PAYMENT_STATUS_PAID
    assert (paid.payment.status, paid.payment.provider) == ("completed", "wallet")
    assert paid.booking.payment_id == paid.payment.payment_id
    assert await balance(stack, user) == Decimal("350000.00")
    # A retry answers the first payment and charges nothing more.
    again = await pay(stack, booking)
    assert again.payment.payment_id == paid.payment.payment_id
    assert await balance(stack, user) == Decimal("350000.00")

    cancelled = await cancel(stack, booking)
    assert cancelled.booking.status == pb.BOOKING_STATUS_CANCELLED
    assert cancelled.booking.payment_status == pb.PAYMENT_STATUS_PARTIALLY_REFUNDED
    assert cancelled.refund_percent == 90
    assert (cancelled.refund.amount.units, cancelled.refund.status) == (135_000, "completed")
    assert cancelled.refund.method == pb.PAYMENT_METHOD_REFUND
    assert await balance(stack, user) == Decimal("485000.00")
    assert await slot_remaining(stack, booking.slot_id) == 1
    # A retried cancel answers it again, refunding nothing more.
    assert (await cancel(stack, booking)).refund.payment_id == cancelled.refund.payment_id
    assert await balance(stack, user) == Decimal("485000.00")

    assert await history(stack, booking) == [
        ("BOOKING_STATUS_UNSPECIFIED", "BOOKING_STATUS_PENDING_PAYMENT", "reservation_confirmed"),
        ("BOOKING_STATUS_PENDING_PAYMENT", "BOOKING_STATUS_CONFIRMED", "payment_received"),
        ("BOOKING_STATUS_CONFIRMED", "BOOKING_STATUS_CANCELLED", "customer_request"),
    ]
    assert await event_types(stack, booking) == [
        "ReservationCreated", "ReservationConfirmed", "BookingCreated", "BookingPaid",
        "BookingConfirmed", "BookingCancelled", "BookingRefunded",
    ]  # fmt: skip


async def test_the_qr_payload_is_signed_by_the_booking_service(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    booking, _ = await booked(stack, clinic)
    confirmed = (await pay(stack, booking)).booking
    identity = ServiceIdentity.load("booking", stack.settings)
    public = identity.signer().key.public_key()
    claims = jwt.decode(confirmed.qr_payload, public, algorithms=["ES256"], audience=qr.AUDIENCE)
    assert (claims["sub"], claims["clinic"]) == (booking.booking_id, clinic.id)
    header, _, signature = confirmed.qr_payload.split(".")
    forged = jwt.encode({**claims, "sub": str(uuid.uuid4())}, "k" * 32, algorithm="HS256")
    for tampered in (f"{header}.{forged.split('.')[1]}.{signature}", forged):
        with pytest.raises(jwt.InvalidTokenError):
            jwt.decode(tampered, public, algorithms=["ES256"], audience=qr.AUDIENCE)
    assert qr.png(confirmed.qr_payload).startswith(b"\x89PNG")


async def test_a_short_wallet_refuses_the_payment_and_a_new_key_pays_later(
    stack: Stack,
) -> None:
    clinic = await new_clinic(stack, price=150_000)
    booking, user = await booked(stack, clinic, balance=100_000)
    with pytest.raises(aio.AioRpcError) as caught:
        await pay(stack, booking, "first")
    assert error_reason(caught.value) == "INSUFFICIENT_BALANCE"
    with pytest.raises(aio.AioRpcError) as caught:
        await pay(stack, booking, "first")  # that key's payment was refused
    assert error_reason(caught.value) == "PAYMENT_FAILED"
    seen = await stack.booking.GetBooking(
        pb.GetBookingRequest(booking_id=booking.booking_id), metadata=stack.metadata()
    )
    assert seen.status == pb.BOOKING_STATUS_PENDING_PAYMENT
    await stack.users.TopUp(
        user_pb2.TopUpRequest(user_id=user, amount=idr(50_000), idempotency_key="more"),
        metadata=stack.metadata(),
    )
    paid = await pay(stack, booking, "second")
    assert paid.booking.status == pb.BOOKING_STATUS_CONFIRMED
    assert await balance(stack, user) == Decimal("0.00")
    with pytest.raises(aio.AioRpcError) as caught:
        await pay(stack, booking, "third")
    assert error_reason(caught.value) == "ALREADY_PAID"


async def test_concurrent_payments_of_one_booking_charge_once(stack: Stack) -> None:
    clinic = await new_clinic(stack, price=100_000)
    booking, user = await booked(stack, clinic)
    results = await asyncio.gather(
        *(pay(stack, booking, f"k-{i % 3}") for i in range(12)), return_exceptions=True
    )
    answers = [r for r in results if isinstance(r, pb.PayBookingResponse)]
    assert answers and len({a.payment.payment_id for a in answers}) == 1
    for error in results:
        if not isinstance(error, pb.PayBookingResponse):
            assert isinstance(error, aio.AioRpcError), error
            assert error_reason(error) in {"PAYMENT_IN_PROGRESS", "ALREADY_PAID"}
    assert await balance(stack, user) == Decimal("400000.00")


async def test_the_clinic_cancels_with_everything_back(stack: Stack) -> None:
    clinic = await new_clinic(stack, price=80_000)
    booking, user = await booked(stack, clinic)
    await pay(stack, booking)
    cancelled = await cancel(stack, booking, stack.as_operator(clinic.id))
    assert cancelled.refund_percent == 100
    assert cancelled.booking.payment_status == pb.PAYMENT_STATUS_REFUNDED
    assert cancelled.booking.cancellation_reason == "clinic_request"
    assert await balance(stack, user) == Decimal("500000.00")


async def test_an_unpaid_cancellation_refunds_nothing_and_frees_the_place(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    booking, user = await booked(stack, clinic)
    cancelled = await cancel(stack, booking)
    assert (cancelled.refund_percent, cancelled.HasField("refund")) == (0, False)
    assert cancelled.booking.payment_status == pb.PAYMENT_STATUS_FAILED
    assert await slot_remaining(stack, booking.slot_id) == 1
    with pytest.raises(aio.AioRpcError) as caught:
        await pay(stack, booking, "late")
    assert error_reason(caught.value) == "BOOKING_CANCELLED"
    assert await balance(stack, user) == Decimal("500000.00")


async def test_two_riders_moving_into_the_last_place_one_wins_the_other_keeps_theirs(
    stack: Stack,
) -> None:
    clinic = await new_clinic(stack)
    last = await new_slot(stack, clinic, capacity=1)
    first, _ = await booked(stack, clinic)
    second, _ = await booked(stack, clinic)
    for b in (first, second):
        await pay(stack, b)
    results = await asyncio.gather(
        *(
            stack.booking.RescheduleBooking(
                pb.RescheduleBookingRequest(
                    booking_id=b.booking_id, user_id=b.user_id, new_slot_id=last.slot_id
                ),
                metadata=stack.as_rider(b.user_id),
            )
            for b in (first, second)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, pb.Booking)]
    lost = [r for r in results if not isinstance(r, pb.Booking)]
    assert len(won) == 1 and len(lost) == 1
    assert isinstance(lost[0], aio.AioRpcError) and error_reason(lost[0]) == "SLOT_FULL"
    assert won[0].slot_id == last.slot_id and won[0].status == pb.BOOKING_STATUS_CONFIRMED
    loser = first if won[0].booking_id == second.booking_id else second
    kept = await stack.booking.GetBooking(
        pb.GetBookingRequest(booking_id=loser.booking_id), metadata=stack.metadata()
    )
    assert (kept.slot_id, kept.status) == (loser.slot_id, pb.BOOKING_STATUS_CONFIRMED)
    winner = first if loser is second else second
    assert await slot_remaining(stack, winner.slot_id) == 1  # its old place is back
    assert await slot_remaining(stack, last.slot_id) == 0
    assert ("BOOKING_STATUS_CONFIRMED", "BOOKING_STATUS_CONFIRMED", "rescheduled") in (
        await history(stack, won[0])
    )
    assert (await event_types(stack, won[0]))[-1] == "BookingRescheduled"


async def test_a_cheaper_slot_refunds_the_difference_a_dearer_one_is_refused(
    stack: Stack,
) -> None:
    clinic = await new_clinic(stack, price=100_000)
    booking, user = await booked(stack, clinic)
    await pay(stack, booking)
    cheap = await stack.booking.CreateSlot(
        pb.CreateSlotRequest(
            clinic_id=clinic.id, service_id=clinic.service.service_id,
            start_time=stamp(future_hour()), price=idr(70_000),
        ),
        metadata=stack.metadata(),
    )  # fmt: skip
    dear = await stack.booking.CreateSlot(
        pb.CreateSlotRequest(
            clinic_id=clinic.id, service_id=clinic.service.service_id,
            start_time=stamp(future_hour()), price=idr(120_000),
        ),
        metadata=stack.metadata(),
    )  # fmt: skip
    move = pb.RescheduleBookingRequest(
        booking_id=booking.booking_id, user_id=user, new_slot_id=dear.slot_id
    )
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.RescheduleBooking(move, metadata=stack.as_rider(user))
    assert error_reason(caught.value) == "RESCHEDULE_COSTS_MORE"
    assert await slot_remaining(stack, dear.slot_id) == 1
    move.new_slot_id = cheap.slot_id
    moved = await stack.booking.RescheduleBooking(move, metadata=stack.as_rider(user))
    assert (moved.final_amount.units, moved.slot_id) == (70_000, cheap.slot_id)
    assert await balance(stack, user) == Decimal("430000.00")  # 500,000 - 100,000 + 30,000
    # A retry answers the moved booking and refunds nothing more.
    again = await stack.booking.RescheduleBooking(move, metadata=stack.as_rider(user))
    assert again.version == moved.version
    assert await balance(stack, user) == Decimal("430000.00")
    # Cancelling now refunds 90 % of what is left paid (70,000).
    cancelled = await cancel(stack, booking)
    assert cancelled.refund.amount.units == 63_000
    assert await balance(stack, user) == Decimal("493000.00")


async def test_the_visit_starts_completes_or_is_a_no_show(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    booking, _ = await booked(stack, clinic)
    await pay(stack, booking)
    staff = stack.as_operator(clinic.id)
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.CompleteBooking(
            pb.CompleteBookingRequest(booking_id=booking.booking_id), metadata=staff
        )
    assert error_reason(caught.value) == "INVALID_VISIT_STEP"
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.MarkNoShow(
            pb.MarkNoShowRequest(booking_id=booking.booking_id), metadata=staff
        )
    assert error_reason(caught.value) == "SLOT_NOT_STARTED"
    started = await stack.booking.StartBooking(
        pb.StartBookingRequest(booking_id=booking.booking_id), metadata=staff
    )
    assert started.status == pb.BOOKING_STATUS_IN_PROGRESS
    done = await stack.booking.CompleteBooking(
        pb.CompleteBookingRequest(booking_id=booking.booking_id, notes="Vaksin rabies"),
        metadata=staff,
    )
    assert done.status == pb.BOOKING_STATUS_COMPLETED and done.HasField("completed_at")
    other_clinic = await new_clinic(stack)
    with pytest.raises(aio.AioRpcError) as caught:
        await stack.booking.StartBooking(
            pb.StartBookingRequest(booking_id=booking.booking_id),
            metadata=stack.as_operator(other_clinic.id),
        )
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(aio.AioRpcError) as caught:
        await cancel(stack, booking)
    assert error_reason(caught.value) == "BOOKING_NOT_CANCELLABLE"


async def test_a_rider_lists_their_bookings_newest_first(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    slot = await new_slot(stack, clinic, capacity=3)
    user, pet = await new_rider(stack)
    made = []
    for i in range(3):
        other = slot if i == 0 else await new_slot(stack, clinic)
        held = await stack.booking.ReserveSlot(
            pb.ReserveSlotRequest(slot_id=other.slot_id, user_id=user, pet_id=pet),
            metadata=stack.as_rider(user),
        )
        made.append(
            await stack.booking.ConfirmReservation(
                pb.ConfirmReservationRequest(
                    reservation_id=held.reservation_id, user_id=user, lock_token=held.lock_token
                ),
                metadata=stack.as_rider(user),
            )
        )
    seen, token = [], ""
    while True:
        page = await stack.booking.ListBookings(
            pb.ListBookingsRequest(user_id=user, page_size=2, page_token=token),
            metadata=stack.as_rider(user),
        )
        seen += [b.booking_id for b in page.bookings]
        if not (token := page.next_page_token):
            break
    assert seen == [b.booking_id for b in reversed(made)]
    by_clinic = await stack.booking.ListBookings(
        pb.ListBookingsRequest(clinic_id=clinic.id, status=pb.BOOKING_STATUS_PENDING_PAYMENT),
        metadata=stack.as_operator(clinic.id),
    )
    assert {b.booking_id for b in by_clinic.bookings} == {b.booking_id for b in made}


async def test_an_unpaid_booking_past_the_window_is_cancelled_by_the_sweeper(
    stack: Stack,
) -> None:
    clinic = await new_clinic(stack)
    booking, _ = await booked(stack, clinic)
    async with await psycopg.AsyncConnection.connect(stack.database_url(), autocommit=True) as c:
        await c.execute(
            "UPDATE bookings SET created_at = %s WHERE booking_id = %s",
            (datetime.now(UTC) - timedelta(hours=1), booking.booking_id),
        )
    async with replica(stack) as sweeper:
        assert await sweeper.bookings.expire_unpaid() >= 1
    seen = await stack.booking.GetBooking(
        pb.GetBookingRequest(booking_id=booking.booking_id), metadata=stack.metadata()
    )
    assert (seen.status, seen.cancellation_reason) == (
        pb.BOOKING_STATUS_CANCELLED,
        "payment_timeout",
    )
    assert await slot_remaining(stack, booking.slot_id) == 1


async def test_a_visit_moved_after_its_reminder_is_reminded_again(stack: Stack) -> None:
    clinic = await new_clinic(stack)
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
    booking, user = await booked(stack, clinic, slot=await new_slot(stack, clinic, start=soon))
    await pay(stack, booking)
    later = await new_slot(stack, clinic, start=soon + timedelta(days=2))
    four_days = BookingConfig(reminder_before=timedelta(days=4))  # both visits are due
    async with replica(stack, four_days) as sweeper:
        assert await sweeper.bookings.remind_due() >= 1
        await stack.booking.RescheduleBooking(
            pb.RescheduleBookingRequest(
                booking_id=booking.booking_id, user_id=user, new_slot_id=later.slot_id
            ),
            metadata=stack.as_rider(user),
        )
        assert await sweeper.bookings.remind_due() >= 1  # of the new time
        assert await sweeper.bookings.remind_due() == 0
    assert (await event_types(stack, booking)).count("BookingReminder") == 2
