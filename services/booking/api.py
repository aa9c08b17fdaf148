"""tiket.booking.v1.BookingService: proto <-> domain, input validation. Errors raised here or
below are turned into status codes by the shared interceptor. RPCs of later increments of
issue 14 answer UNIMPLEMENTED."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from google.type import dayofweek_pb2
from grpc import aio
from psycopg_pool import AsyncConnectionPool
from tiket.booking.v1 import booking_pb2 as pb
from tiket.booking.v1 import booking_pb2_grpc

from libs import paging
from libs.auth import current_principal
from libs.errors import InvalidArgument
from libs.money import to_decimal
from libs.validation import (
    date_range_field,
    int_field,
    key_field,
    optional_uuid_field,
    page_size_field,
    required_text_field,
    text_field,
    time_id_token_field,
    time_of_day_field,
    time_zone_field,
    timestamp_field,
    uuid_field,
)
from services.booking import messages, schedule, stats
from services.booking.booking_store import BookingFilter
from services.booking.bookings import BookingApp
from services.booking.catalogue import CatalogueApp, Generation, SlotSpec
from services.booking.domain import Actor, BookingStatus, PaymentMethod, SlotStatus
from services.booking.payments import Payments
from services.booking.reservations import ReservationApp
from services.booking.schedule import Window
from services.booking.topups import TopUps

T = TypeVar("T")
DEFAULT_TIME_ZONE = "Asia/Jakarta"
SEARCH_MAX_DAYS = 31
# Slots are made at most this far ahead (a clinic's calendar, and no date near year 9999
# whose local time or end would overflow).
SLOTS_AHEAD = timedelta(days=731)
# GetBookingStats: at most a quarter per call.
STATS_MAX_DAYS = 92
MAX_CAPACITY = 1000
NAME_LENGTH = 255
NOTES_LENGTH = 2000
# What staff may set; BOOKED is the database's to decide (no place left).
SETTABLE_SLOT_STATUS = {
    pb.SLOT_STATUS_AVAILABLE: SlotStatus.AVAILABLE,
    pb.SLOT_STATUS_UNAVAILABLE: SlotStatus.UNAVAILABLE,
    pb.SLOT_STATUS_MAINTENANCE: SlotStatus.MAINTENANCE,
}
# UpdateClinic's mask paths: (column, the checked value of the request's clinic).
CLINIC_FIELDS = {
    "name": ("name", lambda c: required_text_field(c.name, "clinic.name", max_len=NAME_LENGTH)),
    "address": ("address", lambda c: text_field(c.address, "clinic.address", max_len=NOTES_LENGTH)),
    "time_zone": ("time_zone", lambda c: time_zone_field(c.time_zone, "clinic.time_zone").key),
    "active": ("is_active", lambda c: c.active),
}
PAY_METHODS = {
    pb.PAYMENT_METHOD_WALLET: PaymentMethod.WALLET,
    pb.PAYMENT_METHOD_GATEWAY: PaymentMethod.GATEWAY,
}
REASON = re.compile(r"[a-z]+(_[a-z]+)*")


def _actor() -> Actor:
    return Actor.of(current_principal())


def _request_id(value: str) -> str | None:
    return key_field(value, "request_id") if value else None


def _page(
    items: Sequence[T], limit: int, key: Callable[[T], tuple[datetime, object]]
) -> tuple[Sequence[T], str]:
    """The first `limit` of `items` (fetched limit + 1) and the token of the next page."""
    if len(items) <= limit:
        return items, ""
    items = items[:limit]
    at, row_id = key(items[-1])
    return items, paging.encode(at.isoformat(), str(row_id))


class BookingApi(booking_pb2_grpc.BookingServiceServicer):
    def __init__(
        self,
        catalogue: CatalogueApp,
        reservations: ReservationApp,
        bookings: BookingApp,
        payments: Payments,
        top_ups: TopUps,
        pool: AsyncConnectionPool,
    ) -> None:
        self.catalogue = catalogue
        self.reservations = reservations
        self.bookings = bookings
        self.payments = payments
        self.top_ups = top_ups
        self.pool = pool  # GetBookingStats reads the analytics view directly (stats.py)

    # --- catalogue ----------------------------------------------------------------------

    async def CreateClinic(self, request: pb.CreateClinicRequest, context: aio.ServicerContext):
        name = required_text_field(request.name, "name", max_len=NAME_LENGTH)
        address = text_field(request.address, "address", max_len=NOTES_LENGTH)
        zone = time_zone_field(request.time_zone or DEFAULT_TIME_ZONE)
        clinic = await self.catalogue.create_clinic(
            _actor(), name, address, zone.key, not request.inactive, _request_id(request.request_id)
        )
        return messages.clinic(clinic)

    async def GetClinic(self, request: pb.GetClinicRequest, context: aio.ServicerContext):
        clinic_id = uuid_field(request.clinic_id, "clinic_id")
        return messages.clinic(await self.catalogue.get_clinic(clinic_id))

    async def ListClinics(self, request: pb.ListClinicsRequest, context: aio.ServicerContext):
        limit = page_size_field(request.page_size)
        after = time_id_token_field(request.page_token)
        found = await self.catalogue.list_clinics(request.active_only, after, limit + 1)
        clinics, token = _page(found, limit, lambda c: (c.created_at, c.id))
        return pb.ListClinicsResponse(
            clinics=[messages.clinic(c) for c in clinics], next_page_token=token
        )

    async def UpdateClinic(self, request: pb.UpdateClinicRequest, context: aio.ServicerContext):
        clinic_id = uuid_field(request.clinic.clinic_id, "clinic.clinic_id")
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgument.field("update_mask", "name at least one field to change")
        fields: dict[str, object] = {}
        for path in paths:
            value = CLINIC_FIELDS.get(path)
            if value is None:
                raise InvalidArgument.field(
                    "update_mask", f"{path!r} cannot be changed; one of {', '.join(CLINIC_FIELDS)}"
                )
            column, read_field = value
            fields[column] = read_field(request.clinic)
        clinic = await self.catalogue.update_clinic(_actor(), clinic_id, fields)
        return messages.clinic(clinic)

    async def CreateClinicService(
        self, request: pb.CreateClinicServiceRequest, context: aio.ServicerContext
    ):
        clinic_id = uuid_field(request.clinic_id, "clinic_id")
        name = required_text_field(request.name, "name", max_len=NAME_LENGTH)
        duration = int_field(request.duration_minutes, "duration_minutes", 5, 480)
        if not request.HasField("price"):
            raise InvalidArgument.field("price", "is required (zero for a free service)")
        price = to_decimal(request.price, "price", positive=False)
        capacity = int_field(request.default_capacity or 1, "default_capacity", 1, MAX_CAPACITY)
        service = await self.catalogue.create_service(
            _actor(), clinic_id, name, duration, price, capacity, _request_id(request.request_id)
        )
        return messages.clinic_service(service)

    async def ListClinicServices(
        self, request: pb.ListClinicServicesRequest, context: aio.ServicerContext
    ):
        clinic_id = uuid_field(request.clinic_id, "clinic_id")
        limit = page_size_field(request.page_size)
        after = time_id_token_field(request.page_token)
        found = await self.catalogue.list_services(clinic_id, request.active_only, after, limit + 1)
        services, token = _page(found, limit, lambda s: (s.created_at, s.id))
        return pb.ListClinicServicesResponse(
            services=[messages.clinic_service(s) for s in services], next_page_token=token
        )

    async def CreateStaff(self, request: pb.CreateStaffRequest, context: aio.ServicerContext):
        clinic_id = uuid_field(request.clinic_id, "clinic_id")
        full_name = required_text_field(request.full_name, "full_name", max_len=NAME_LENGTH)
        title = text_field(request.title, "title", max_len=100)
        member = await self.catalogue.create_staff(
            _actor(), clinic_id, full_name, title, _request_id(request.request_id)
        )
        return messages.staff(member)

    async def ListStaff(self, request: pb.ListStaffRequest, context: aio.ServicerContext):
        clinic_id = uuid_field(request.clinic_id, "clinic_id")
        limit = page_size_field(request.page_size)
        after = time_id_token_field(request.page_token)
        found = await self.catalogue.list_staff(clinic_id, request.active_only, after, limit + 1)
        members, token = _page(found, limit, lambda s: (s.created_at, s.id))
        return pb.ListStaffResponse(
            staff=[messages.staff(s) for s in members], next_page_token=token
        )

    # --- slots --------------------------------------------------------------------------

    async def CreateSlot(self, request: pb.CreateSlotRequest, context: aio.ServicerContext):
        spec = _slot_spec(request, _request_id(request.request_id))
        start = timestamp_field(request, "start_time")
        if start is None:
            raise InvalidArgument.field("start_time", "is required")
        now = datetime.now(UTC)
        if start <= now:
            raise InvalidArgument.field("start_time", "must be in the future")
        if start > now + SLOTS_AHEAD:
            raise InvalidArgument.field("start_time", f"is more than {SLOTS_AHEAD.days} days ahead")
        end = timestamp_field(request, "end_time")
        if end is not None and end <= start:
            raise InvalidArgument.field("end_time", "must be after start_time")
        return messages.slot(await self.catalogue.create_slot(_actor(), spec, start, end))

    async def GenerateSlots(self, request: pb.GenerateSlotsRequest, context: aio.ServicerContext):
        spec = _slot_spec(request, key_field(request.request_id, "request_id"))
        first, last = date_range_field(
            request, "first_date", "last_date", max_days=schedule.MAX_DAYS
        )
        if last > (datetime.now(UTC) + SLOTS_AHEAD).date():
            raise InvalidArgument.field("last_date", f"is more than {SLOTS_AHEAD.days} days ahead")
        windows = tuple(_window(w, f"windows[{i}]") for i, w in enumerate(request.windows))
        schedule.check_windows(windows)
        minutes = int_field(request.slot_minutes, "slot_minutes", 0, 480)
        if 0 < minutes < 5:
            raise InvalidArgument.field("slot_minutes", "must be 0 (the service's) or 5-480")
        generation = Generation(spec, first, last, windows, minutes or None)
        slots, skipped = await self.catalogue.generate_slots(_actor(), generation)
        return pb.GenerateSlotsResponse(slots=[messages.slot(s) for s in slots], skipped=skipped)

    async def GetSlot(self, request: pb.GetSlotRequest, context: aio.ServicerContext):
        slot_id = uuid_field(request.slot_id, "slot_id")
        return messages.slot(await self.catalogue.get_slot(slot_id))

    async def UpdateSlotStatus(
        self, request: pb.UpdateSlotStatusRequest, context: aio.ServicerContext
    ):
        slot_id = uuid_field(request.slot_id, "slot_id")
        status = SETTABLE_SLOT_STATUS.get(request.status)
        if status is None:
            raise InvalidArgument.field("status", "must be AVAILABLE, UNAVAILABLE or MAINTENANCE")
        version = int_field(request.expected_version, "expected_version", 1, 2**31 - 1)
        reason = text_field(request.reason, "reason", max_len=255)
        slot = await self.catalogue.set_slot_status(_actor(), slot_id, status, version, reason)
        return messages.slot(slot)

    async def SearchAvailableSlots(
        self, request: pb.SearchAvailableSlotsRequest, context: aio.ServicerContext
    ):
        clinic_id = uuid_field(request.clinic_id, "clinic_id")
        service_id = uuid_field(request.service_id, "service_id")
        first, last = date_range_field(request, "first_date", "last_date", max_days=SEARCH_MAX_DAYS)
        staff_id = optional_uuid_field(request.staff_id, "staff_id")
        slots = await self.catalogue.search(clinic_id, service_id, first, last, staff_id)
        return pb.SearchAvailableSlotsResponse(slots=slots)

    # --- reservations -------------------------------------------------------------------

    async def ReserveSlot(self, request: pb.ReserveSlotRequest, context: aio.ServicerContext):
        slot_id = uuid_field(request.slot_id, "slot_id")
        user_id = uuid_field(request.user_id, "user_id")
        pet_id = uuid_field(request.pet_id, "pet_id")
        reservation = await self.reservations.reserve(
            _actor(), slot_id, user_id, pet_id, _request_id(request.request_id)
        )
        return messages.reservation(reservation)

    async def GetReservation(self, request: pb.GetReservationRequest, context: aio.ServicerContext):
        reservation_id = uuid_field(request.reservation_id, "reservation_id")
        user_id = optional_uuid_field(request.user_id, "user_id")
        return messages.reservation(await self.reservations.get(_actor(), reservation_id, user_id))

    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: aio.ServicerContext
    ):
        reservation_id = uuid_field(request.reservation_id, "reservation_id")
        user_id = optional_uuid_field(request.user_id, "user_id")
        token = key_field(request.lock_token, "lock_token", max_len=64)
        released = await self.reservations.release(_actor(), reservation_id, user_id, token)
        return messages.reservation(released)

    async def ConfirmReservation(
        self, request: pb.ConfirmReservationRequest, context: aio.ServicerContext
    ):
        reservation_id = uuid_field(request.reservation_id, "reservation_id")
        user_id = optional_uuid_field(request.user_id, "user_id")
        token = key_field(request.lock_token, "lock_token", max_len=64)
        notes = text_field(request.notes, "notes", max_len=NOTES_LENGTH)
        discount = Decimal("0.00")
        if request.HasField("discount"):
            discount = to_decimal(request.discount, "discount", positive=False)
        booking = await self.reservations.confirm(
            _actor(), reservation_id, user_id, token, notes, discount
        )
        return messages.booking(booking)

    # --- bookings -----------------------------------------------------------------------

    async def GetBooking(self, request: pb.GetBookingRequest, context: aio.ServicerContext):
        booking_id = uuid_field(request.booking_id, "booking_id")
        user_id = optional_uuid_field(request.user_id, "user_id")
        return messages.booking(await self.reservations.booking(_actor(), booking_id, user_id))

    async def PayBooking(self, request: pb.PayBookingRequest, context: aio.ServicerContext):
        booking_id = uuid_field(request.booking_id, "booking_id")
        user_id = optional_uuid_field(request.user_id, "user_id")
        key = (
            key_field(request.idempotency_key, "idempotency_key", max_len=60)
            if (request.idempotency_key)
            else None
        )
        method = PAY_METHODS.get(request.method)
        if method is None:
            raise InvalidArgument.field(
                "method", "must be PAYMENT_METHOD_WALLET or PAYMENT_METHOD_GATEWAY"
            )
        booking, payment = await self.payments.pay(_actor(), booking_id, user_id, method, key)
        return pb.PayBookingResponse(
            booking=messages.booking(booking), payment=messages.payment(payment)
        )

    async def ListBookings(self, request: pb.ListBookingsRequest, context: aio.ServicerContext):
        user_id = optional_uuid_field(request.user_id, "user_id")
        clinic_id = optional_uuid_field(request.clinic_id, "clinic_id")
        if (user_id is None) == (clinic_id is None):
            raise InvalidArgument.field("user_id", "set user_id or clinic_id (one of them)")
        days = None
        if request.HasField("first_date") or request.HasField("last_date"):
            days = date_range_field(request, "first_date", "last_date", max_days=366)
        status = None
        if request.status:
            status = messages.BOOKING_STATUS_OF.get(request.status)
            if status is None:
                raise InvalidArgument.field("status", f"{request.status} is not a booking status")
        limit = page_size_field(request.page_size)
        after = time_id_token_field(request.page_token)
        where = BookingFilter(user_id, clinic_id, days, status, after)
        found = await self.bookings.list_bookings(_actor(), where, limit + 1)
        bookings, token = _page(found, limit, lambda b: (b.created_at, b.id))
        return pb.ListBookingsResponse(
            bookings=[messages.booking(b) for b in bookings], next_page_token=token
        )

    async def CancelBooking(self, request: pb.CancelBookingRequest, context: aio.ServicerContext):
        booking_id = uuid_field(request.booking_id, "booking_id")
        user_id = optional_uuid_field(request.user_id, "user_id")
        actor = _actor()
        default = "clinic_request" if actor.is_staff else "customer_request"
        reason = text_field(request.reason, "reason", max_len=50) or default
        if not REASON.fullmatch(reason):
            raise InvalidArgument.field(
                "reason", "lower-case words joined by _, e.g. customer_request"
            )
        notes = text_field(request.notes, "notes", max_len=NOTES_LENGTH)
        booking, refund, percent = await self.bookings.cancel(
            actor, booking_id, user_id, reason, notes
        )
        return pb.CancelBookingResponse(
            booking=messages.booking(booking),
            refund=messages.payment(refund) if refund else None,
            refund_percent=percent,
        )

    async def RescheduleBooking(
        self, request: pb.RescheduleBookingRequest, context: aio.ServicerContext
    ):
        booking_id = uuid_field(request.booking_id, "booking_id")
        user_id = optional_uuid_field(request.user_id, "user_id")
        new_slot_id = uuid_field(request.new_slot_id, "new_slot_id")
        _request_id(request.request_id)  # checked; a retry is recognised by the slot moved to
        moved = await self.bookings.reschedule(_actor(), booking_id, user_id, new_slot_id)
        return messages.booking(moved)

    async def StartBooking(self, request: pb.StartBookingRequest, context: aio.ServicerContext):
        return await self._visit(request.booking_id, BookingStatus.IN_PROGRESS, "")

    async def CompleteBooking(
        self, request: pb.CompleteBookingRequest, context: aio.ServicerContext
    ):
        return await self._visit(request.booking_id, BookingStatus.COMPLETED, request.notes)

    async def MarkNoShow(self, request: pb.MarkNoShowRequest, context: aio.ServicerContext):
        return await self._visit(request.booking_id, BookingStatus.NO_SHOW, request.notes)

    async def _visit(self, booking_id: str, to: BookingStatus, notes: str) -> pb.Booking:
        checked = uuid_field(booking_id, "booking_id")
        note = text_field(notes, "notes", max_len=NOTES_LENGTH)
        return messages.booking(await self.bookings.visit(_actor(), checked, to, note))

    async def GetBookingHistory(
        self, request: pb.GetBookingHistoryRequest, context: aio.ServicerContext
    ):
        booking_id = uuid_field(request.booking_id, "booking_id")
        user_id = optional_uuid_field(request.user_id, "user_id")
        rows = await self.bookings.history(_actor(), booking_id, user_id)
        return pb.GetBookingHistoryResponse(entries=[messages.history_entry(r) for r in rows])

    async def GetBookingEvents(
        self, request: pb.GetBookingEventsRequest, context: aio.ServicerContext
    ):
        booking_id = uuid_field(request.booking_id, "booking_id")
        user_id = optional_uuid_field(request.user_id, "user_id")
        rows = await self.bookings.events(_actor(), booking_id, user_id)
        return pb.GetBookingEventsResponse(events=[messages.domain_event(r) for r in rows])

    async def GetBookingStats(
        self, request: pb.GetBookingStatsRequest, context: aio.ServicerContext
    ):
        clinic_id = uuid_field(request.clinic_id, "clinic_id")
        first, last = date_range_field(request, "first_date", "last_date", max_days=STATS_MAX_DAYS)
        service_id = optional_uuid_field(request.service_id, "service_id")
        rows = await stats.daily(self.pool, _actor(), clinic_id, first, last, service_id)
        return pb.GetBookingStatsResponse(days=[stats.message(row) for row in rows])

    async def CreateTopUp(self, request: pb.CreateTopUpRequest, context: aio.ServicerContext):
        user_id = uuid_field(request.user_id, "user_id")
        if not request.HasField("amount"):
            raise InvalidArgument.field("amount", "is required")
        amount = to_decimal(request.amount, "amount")
        key = key_field(request.idempotency_key, "idempotency_key")
        top_up = await self.top_ups.create(_actor(), user_id, amount, key)
        return messages.top_up(top_up)


def _slot_spec(
    request: pb.CreateSlotRequest | pb.GenerateSlotsRequest, request_id: str | None
) -> SlotSpec:
    """The clinic, service, staff, capacity and price fields both slot requests share."""
    price = (
        to_decimal(request.price, "price", positive=False) if request.HasField("price") else None
    )
    return SlotSpec(
        clinic_id=uuid_field(request.clinic_id, "clinic_id"),
        service_id=uuid_field(request.service_id, "service_id"),
        staff_id=optional_uuid_field(request.staff_id, "staff_id"),
        capacity=int_field(request.capacity, "capacity", 0, MAX_CAPACITY) or None,
        price=price,
        request_id=request_id,
    )


def _window(window: pb.ScheduleWindow, field: str) -> Window:
    """A weekly window: a day of the week and whole-minute times of day."""
    day = window.day_of_week
    if not dayofweek_pb2.MONDAY <= day <= dayofweek_pb2.SUNDAY:
        raise InvalidArgument.field(f"{field}.day_of_week", "must be MONDAY … SUNDAY")
    times = []
    for name in ("start", "end"):
        value = getattr(window, name)
        if value.seconds or value.nanos:
            raise InvalidArgument.field(f"{field}.{name}", "must be whole minutes")
        times.append(time_of_day_field(value, f"{field}.{name}"))
    return Window(weekday=day - 1, start=times[0], end=times[1])
