"""Domain records -> tiket.booking.v1 messages."""

from __future__ import annotations

from datetime import date
from typing import Any

from google.type import date_pb2
from tiket.booking.v1 import booking_pb2 as pb

from libs.money import to_money
from libs.timestamps import to_timestamp
from services.booking import topups
from services.booking.domain import (
    Booking,
    BookingStatus,
    Clinic,
    ClinicService,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Reservation,
    ReservationStatus,
    Slot,
    SlotStatus,
    Staff,
)
from services.booking.topup_store import TopUp

SLOT_STATUS = {
    SlotStatus.AVAILABLE: pb.SLOT_STATUS_AVAILABLE,
    SlotStatus.BOOKED: pb.SLOT_STATUS_BOOKED,
    SlotStatus.UNAVAILABLE: pb.SLOT_STATUS_UNAVAILABLE,
    SlotStatus.MAINTENANCE: pb.SLOT_STATUS_MAINTENANCE,
}
RESERVATION_STATUS = {
    ReservationStatus.PENDING: pb.RESERVATION_STATUS_PENDING,
    ReservationStatus.CONFIRMED: pb.RESERVATION_STATUS_CONFIRMED,
    ReservationStatus.EXPIRED: pb.RESERVATION_STATUS_EXPIRED,
    ReservationStatus.CANCELLED: pb.RESERVATION_STATUS_CANCELLED,
}
BOOKING_STATUS = {
    BookingStatus.PENDING_PAYMENT: pb.BOOKING_STATUS_PENDING_PAYMENT,
    BookingStatus.CONFIRMED: pb.BOOKING_STATUS_CONFIRMED,
    BookingStatus.IN_PROGRESS: pb.BOOKING_STATUS_IN_PROGRESS,
    BookingStatus.COMPLETED: pb.BOOKING_STATUS_COMPLETED,
    BookingStatus.CANCELLED: pb.BOOKING_STATUS_CANCELLED,
    BookingStatus.RESCHEDULED: pb.BOOKING_STATUS_RESCHEDULED,
    BookingStatus.NO_SHOW: pb.BOOKING_STATUS_NO_SHOW,
}
BOOKING_STATUS_OF = {value: status for status, value in BOOKING_STATUS.items()}
PAYMENT_METHOD = {
    PaymentMethod.WALLET: pb.PAYMENT_METHOD_WALLET,
    PaymentMethod.GATEWAY: pb.PAYMENT_METHOD_GATEWAY,
    PaymentMethod.REFUND: pb.PAYMENT_METHOD_REFUND,
}
PAYMENT_STATUS = {
    PaymentStatus.PENDING: pb.PAYMENT_STATUS_PENDING,
    PaymentStatus.PAID: pb.PAYMENT_STATUS_PAID,
    PaymentStatus.REFUNDED: pb.PAYMENT_STATUS_REFUNDED,
    PaymentStatus.PARTIALLY_REFUNDED: pb.PAYMENT_STATUS_PARTIALLY_REFUNDED,
    PaymentStatus.FAILED: pb.PAYMENT_STATUS_FAILED,
}


def clinic(c: Clinic) -> pb.Clinic:
    return pb.Clinic(
        clinic_id=str(c.id),
        name=c.name,
        address=c.address or "",
        time_zone=c.time_zone,
        active=c.is_active,
        created_at=to_timestamp(c.created_at),
        updated_at=to_timestamp(c.updated_at),
    )


def clinic_service(s: ClinicService) -> pb.ClinicService:
    return pb.ClinicService(
        service_id=str(s.id),
        clinic_id=str(s.clinic_id),
        name=s.name,
        duration_minutes=s.duration_minutes,
        price=to_money(s.price),
        default_capacity=s.default_capacity,
        active=s.is_active,
        created_at=to_timestamp(s.created_at),
    )


def staff(s: Staff) -> pb.Staff:
    return pb.Staff(
        staff_id=str(s.id),
        clinic_id=str(s.clinic_id),
        full_name=s.full_name,
        title=s.title or "",
        active=s.is_active,
        created_at=to_timestamp(s.created_at),
    )


def slot(s: Slot) -> pb.Slot:
    return pb.Slot(
        slot_id=str(s.id),
        clinic_id=str(s.clinic_id),
        service_id=str(s.service_id),
        staff_id=str(s.staff_id) if s.staff_id else "",
        date=calendar_date(s.day),
        start_time=to_timestamp(s.start_time),
        end_time=to_timestamp(s.end_time),
        status=SLOT_STATUS[s.status],
        capacity=s.capacity,
        remaining=s.remaining,
        price=to_money(s.price),
        version=s.version,
        created_at=to_timestamp(s.created_at),
        updated_at=to_timestamp(s.updated_at),
    )


def reservation(r: Reservation) -> pb.Reservation:
    return pb.Reservation(
        reservation_id=str(r.id),
        user_id=str(r.user_id),
        pet_id=str(r.pet_id),
        slot_id=str(r.slot_id),
        clinic_id=str(r.clinic_id),
        service_id=str(r.service_id),
        status=RESERVATION_STATUS[r.status],
        lock_token=r.lock_token,
        expires_at=to_timestamp(r.expires_at),
        created_at=to_timestamp(r.created_at),
        updated_at=to_timestamp(r.updated_at),
        booking_id=str(r.booking_id) if r.booking_id else "",
    )


def booking(b: Booking) -> pb.Booking:
    return pb.Booking(
        booking_id=str(b.id),
        reservation_id=str(b.reservation_id) if b.reservation_id else "",
        user_id=str(b.user_id),
        pet_id=str(b.pet_id),
        clinic_id=str(b.clinic_id),
        service_id=str(b.service_id),
        slot_id=str(b.slot_id),
        staff_id=str(b.staff_id) if b.staff_id else "",
        status=BOOKING_STATUS[b.status],
        payment_status=PAYMENT_STATUS[b.payment_status],
        total_amount=to_money(b.total_amount),
        discount_amount=to_money(b.discount_amount),
        final_amount=to_money(b.final_amount),
        notes=b.notes or "",
        slot_start=to_timestamp(b.slot_start),
        slot_end=to_timestamp(b.slot_end),
        created_at=to_timestamp(b.created_at),
        updated_at=to_timestamp(b.updated_at),
        version=b.version,
        cancelled_at=to_timestamp(b.cancelled_at) if b.cancelled_at else None,
        completed_at=to_timestamp(b.completed_at) if b.completed_at else None,
        cancellation_reason=b.cancellation_reason or "",
        cancellation_notes=b.cancellation_notes or "",
        payment_id=str(b.payment_id) if b.payment_id else "",
        qr_payload=b.qr_payload or "",
    )


def payment(p: Payment) -> pb.Payment:
    return pb.Payment(
        payment_id=str(p.id),
        booking_id=str(p.booking_id),
        amount=to_money(p.amount),
        method=PAYMENT_METHOD[p.method],
        provider=p.provider,
        provider_payment_id=p.provider_payment_id or "",
        status=p.status,
        payment_url=p.payment_url or "",
        expiry_time=to_timestamp(p.expiry_time) if p.expiry_time else None,
        paid_at=to_timestamp(p.paid_at) if p.paid_at else None,
        refunded_at=to_timestamp(p.refunded_at) if p.refunded_at else None,
        refund_amount=to_money(p.refund_amount) if p.refund_amount is not None else None,
        fee=to_money(p.fee) if p.fee is not None else None,
        created_at=to_timestamp(p.created_at),
    )


def history_entry(row: dict[str, Any]) -> pb.BookingHistoryEntry:
    previous = row["previous_status"]
    return pb.BookingHistoryEntry(
        previous_status=BOOKING_STATUS[BookingStatus(previous)] if previous else 0,
        new_status=BOOKING_STATUS[BookingStatus(row["new_status"])],
        changed_at=to_timestamp(row["changed_at"]),
        changed_by=row["changed_by"] or "",
        change_reason=row["change_reason"] or "",
    )


def domain_event(row: dict[str, Any]) -> pb.DomainEvent:
    event = pb.DomainEvent(
        event_id=str(row["event_id"]),
        aggregate_id=str(row["aggregate_id"]),
        event_type=row["event_type"],
        created_at=to_timestamp(row["created_at"]),
    )
    event.payload.update(row["payload"])
    event.metadata.update(row["metadata"])
    return event


def calendar_date(day: date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def top_up(t: TopUp) -> pb.TopUpIntent:
    return pb.TopUpIntent(
        intent_id=str(t.id),
        user_id=str(t.user_id),
        amount=to_money(t.amount),
        order_id=topups.order_id(t),
        payment_url=t.payment_url or "",
        status=t.status,
        expires_at=to_timestamp(t.expires_at),
        created_at=to_timestamp(t.created_at),
    )
