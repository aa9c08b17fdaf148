"""Domain records -> tiket.booking.v1 messages."""

from __future__ import annotations

from datetime import date

from google.type import date_pb2
from tiket.booking.v1 import booking_pb2 as pb

from libs.money import to_money
from libs.timestamps import to_timestamp
from services.booking.domain import (
    Booking,
    BookingStatus,
    Clinic,
    ClinicService,
    PaymentStatus,
    Reservation,
    ReservationStatus,
    Slot,
    SlotStatus,
    Staff,
)

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
    )


def calendar_date(day: date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)
