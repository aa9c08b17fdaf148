"""`tiket demo booking`: a pet owner books a clinic visit with their own `user` token —
search, reserve, confirm, pay from the wallet, the booking and its QR code (a PNG under the
state dir), then cancels it under the refund policy — with the wallet before and after and
the booking's history, each step one line."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2
from tiket.booking.v1 import booking_pb2, booking_pb2_grpc
from tiket.user.v1 import user_pb2, user_pb2_grpc

from cli.scenario import available, metadata, rp
from libs import auth, tls
from libs.config import Settings
from libs.money import from_money, to_money
from services.booking import qr
from services.booking.demo import DEMO_CLINIC, DEMO_CLINICS, DEMO_SERVICE


def register(scenarios: argparse._SubParsersAction) -> None:
    """Add `booking` to `tiket demo`'s scenarios."""
    visit = scenarios.add_parser(
        "booking", help="book a clinic visit, pay it from the wallet, then cancel it"
    )
    visit.add_argument(
        "--card", default=PET_OWNER[0], help=f"the pet owner's card id (default {PET_OWNER[0]})"
    )
    visit.add_argument("--clinic", default=DEMO_CLINIC.name, help="default: %(default)s")
    visit.add_argument("--service", default=DEMO_SERVICE.name, help="default: %(default)s")
    visit.set_defaults(run=lambda args, settings: asyncio.run(_booking_or_exit(args, settings)))


# The pet owner `demo booking` books for when no --card is given: made (idempotently) with a
# cat and Rp 500.000 on the wallet the first time; topped up again whenever the wallet could
# not pay the visit (each run keeps the policy's 10 % of the price).
PET_OWNER = ("CARD0100", "Putri Anggraini", "putri.anggraini@example.com", "+6281100000100")
PET = ("Mochi", "kucing", "Persia")
OWNER_TOP_UP = Decimal(500_000)
WEEKDAYS = ("Senin", "Selasa", "Rabu", "Kamis", "Jumat", "Sabtu", "Minggu")
SEARCH_DAYS = 7  # tomorrow, or the first day of the week after it with a place free


class DemoDataMissing(LookupError):
    pass


class NoSuchName(LookupError):
    """--clinic or --service names none of those there are (the message lists them)."""


class RiderCannotPay(Exception):
    """The card is blocked or suspended: the wallet would refuse the payment."""


async def _booking_or_exit(args: argparse.Namespace, settings: Settings) -> None:
    try:
        await booking(args, settings)
    except DemoDataMissing as exc:
        sys.exit(f"tiket demo booking: {exc}; load the demo data first (`tiket seed`)")
    except (NoSuchName, RiderCannotPay) as exc:
        sys.exit(f"tiket demo booking: {exc}")
    except grpc.RpcError as exc:
        sys.exit(f"tiket demo booking: {exc.code().name}: {exc.details()}")


async def booking(args: argparse.Namespace, settings: Settings, out=print) -> None:
    admin = metadata(settings, auth.Role.ADMIN, "tiket-demo")
    credentials = tls.channel_credentials(settings)  # TLS when TIKET_TLS_CA is set
    async with (
        tls.open_channel(settings.addresses["user"], credentials) as user_channel,
        tls.open_channel(settings.addresses["booking"], credentials) as booking_channel,
    ):
        users = user_pb2_grpc.UserServiceStub(user_channel)
        bookings = booking_pb2_grpc.BookingServiceStub(booking_channel)
        clinic = await _clinic(bookings, args.clinic, admin)
        offered = await _service(bookings, clinic, args.service, admin)
        price = from_money(offered.price)
        zone = ZoneInfo(clinic.time_zone)
        rider, pet = await _pet_owner(users, args.card, admin, out)
        before = await available(users, rider.id, admin)
        if before < price:
            await users.TopUp(
                user_pb2.TopUpRequest(
                    user_id=rider.id,
                    amount=to_money(OWNER_TOP_UP),
                    idempotency_key=f"demo-booking-{uuid.uuid4()}",
                    description="Demo balance",
                ),
                metadata=admin,
            )
            out(f"top-up   {rp(OWNER_TOP_UP)} (admin): {rp(before)} would not pay {rp(price)}")
            before = await available(users, rider.id, admin)
        out(f"rider    {rider.full_name} ({rider.card_id}) with {pet.name} ({pet.species})")
        out(f"clinic   {clinic.name} ({clinic.time_zone}): {offered.name} {rp(price)}")
        out(f"wallet   available {rp(before)}")

        # Everything below is the rider's own doing: a `user` token naming them.
        own = metadata(settings, auth.Role.USER, rider.id)
        tomorrow = datetime.now(zone).date() + timedelta(days=1)
        day, free = await _free_slots(bookings, clinic, offered, tomorrow, own)
        first, last = free[0], free[-1]
        when = "tomorrow" if day == tomorrow else "first open day"
        out(
            f"\n1. search   {offered.name} on {_day(day)} ({when}): {len(free)} free slots, "
            f"{_clock(first.start_time, zone)} … {_clock(last.start_time, zone, label=True)}"
        )

        staff = await _staff_names(bookings, clinic, admin)
        reservation = await bookings.ReserveSlot(
            booking_pb2.ReserveSlotRequest(
                slot_id=first.slot_id,
                user_id=rider.id,
                pet_id=pet.id,
                request_id=str(uuid.uuid4()),
            ),
            metadata=own,
        )
        span = f"{_clock(first.start_time, zone)}–{_clock(first.end_time, zone, label=True)}"
        out(
            f"2. reserve  {span} with {staff.get(first.staff_id, 'any staff')}: held until "
            f"{_clock(reservation.expires_at, zone, seconds=True, label=True)}, "
            f"lock token {reservation.lock_token[:8]}…"
        )

        made = await bookings.ConfirmReservation(
            booking_pb2.ConfirmReservationRequest(
                reservation_id=reservation.reservation_id,
                user_id=rider.id,
                lock_token=reservation.lock_token,
                notes=f"{offered.name} untuk {pet.name}",
            ),
            metadata=own,
        )
        out(
            f"3. confirm  booking {made.booking_id}: {_status(made.status)}, "
            f"to pay {rp(from_money(made.final_amount))}"
        )

        paid = await bookings.PayBooking(
            booking_pb2.PayBookingRequest(
                booking_id=made.booking_id,
                user_id=rider.id,
                method=booking_pb2.PAYMENT_METHOD_WALLET,
                idempotency_key=f"demo-{made.booking_id}",
            ),
            metadata=own,
        )
        after_pay = await available(users, rider.id, own)
        out(
            f"4. pay      {rp(from_money(paid.payment.amount))} from the wallet: booking "
            f"{_status(paid.booking.status)}, payment {paid.payment.status}; "
            f"available {rp(after_pay)}"
        )

        shown = await bookings.GetBooking(
            booking_pb2.GetBookingRequest(booking_id=made.booking_id, user_id=rider.id),
            metadata=own,
        )
        png = Path(settings.state_dir) / f"booking-{shown.booking_id}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(qr.png(shown.qr_payload))
        out(
            f"5. booking  {_status(shown.status)}/{_payment(shown.payment_status)}, "
            f"{_day(day)} {span}; signed QR written to {png}"
        )

        cancelled = await bookings.CancelBooking(
            booking_pb2.CancelBookingRequest(
                booking_id=made.booking_id,
                user_id=rider.id,
                reason="customer_request",
                notes="Jadwal bentrok",
            ),
            metadata=own,
        )
        back = from_money(cancelled.refund.amount) if cancelled.HasField("refund") else Decimal(0)
        out(
            f"6. cancel   by the rider: {cancelled.refund_percent} % refunded, {rp(back)} "
            f"back to the wallet; booking {_status(cancelled.booking.status)}, "
            f"payment {_payment(cancelled.booking.payment_status)}"
        )

        after = await available(users, rider.id, own)
        out(f"\nwallet   before {rp(before)}  after {rp(after)}  difference {rp(after - before)}")
        history = await bookings.GetBookingHistory(
            booking_pb2.GetBookingHistoryRequest(booking_id=made.booking_id, user_id=rider.id),
            metadata=own,
        )
        for n, entry in enumerate(history.entries):
            previous = _status(entry.previous_status) if entry.previous_status else "(new)"
            out(
                f"{'history' if n == 0 else '':<8} {_clock(entry.changed_at, zone, seconds=True)}"
                f"  {previous:>15} -> {_status(entry.new_status):<15} by {entry.changed_by}"
                + (f" ({entry.change_reason})" if entry.change_reason else "")
            )


async def _clinic(bookings: booking_pb2_grpc.BookingServiceStub, name: str, metadata):
    """The active clinic named `name`. Not there: DemoDataMissing when no demo clinic is
    active either, else NoSuchName listing the active clinics."""
    token = ""
    names: list[str] = []
    while True:
        page = await bookings.ListClinics(
            booking_pb2.ListClinicsRequest(active_only=True, page_size=100, page_token=token),
            metadata=metadata,
        )
        for clinic in page.clinics:
            if clinic.name == name:
                return clinic
        names += [clinic.name for clinic in page.clinics]
        if not (token := page.next_page_token):
            break
    missing = f"no active clinic named {name!r}"
    if not {demo.name for demo in DEMO_CLINICS} & set(names):
        raise DemoDataMissing(missing)
    raise NoSuchName(f"{missing}; the active clinics are {_listed(names)}")


async def _service(bookings: booking_pb2_grpc.BookingServiceStub, clinic, name: str, metadata):
    listed = await bookings.ListClinicServices(
        booking_pb2.ListClinicServicesRequest(
            clinic_id=clinic.clinic_id, active_only=True, page_size=100
        ),
        metadata=metadata,
    )
    for offered in listed.services:
        if offered.name == name:
            return offered
    if not listed.services:
        raise DemoDataMissing(f"{clinic.name} offers no {name!r}")
    names = [offered.name for offered in listed.services]
    raise NoSuchName(f"{clinic.name} offers no {name!r}; it offers {_listed(names)}")


def _listed(names: list[str]) -> str:
    """The names quoted, in order: 'A', 'B'."""
    return ", ".join(repr(name) for name in sorted(names))


async def _staff_names(bookings: booking_pb2_grpc.BookingServiceStub, clinic, metadata):
    listed = await bookings.ListStaff(
        booking_pb2.ListStaffRequest(clinic_id=clinic.clinic_id, page_size=100), metadata=metadata
    )
    return {member.staff_id: member.full_name for member in listed.staff}


async def _pet_owner(users: user_pb2_grpc.UserServiceStub, card: str, admin, out):
    """The rider with `card` and their first pet, made (as admin) when missing; a card that
    cannot pay is refused before anything is written (no top-up, no place held)."""
    try:
        rider = await users.GetUser(user_pb2.GetUserRequest(card_id=card), metadata=admin)
        if rider.status != user_pb2.USER_STATUS_ACTIVE:
            status = user_pb2.UserStatus.Name(rider.status).removeprefix("USER_STATUS_").lower()
            raise RiderCannotPay(f"card {card} is {status}: it cannot pay; pick another --card")
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        _, name, email, phone = PET_OWNER
        if card != PET_OWNER[0]:
            email = phone = ""
        rider = await users.CreateUser(
            user_pb2.CreateUserRequest(
                card_id=card,
                full_name=name,
                email=email,
                phone=phone,
                request_id=f"demo-booking-{card}",
            ),
            metadata=admin,
        )
        await users.TopUp(
            user_pb2.TopUpRequest(
                user_id=rider.id,
                amount=to_money(OWNER_TOP_UP),
                idempotency_key=f"demo-booking-{card}-initial",
                description="Demo balance",
            ),
            metadata=admin,
        )
        out(f"created  {name} ({card}) with {rp(OWNER_TOP_UP)} on the wallet (admin)")
    pets = await users.ListPets(user_pb2.ListPetsRequest(user_id=rider.id), metadata=admin)
    if pets.pets:
        return rider, pets.pets[0]
    name, species, breed = PET
    pet = await users.AddPet(
        user_pb2.AddPetRequest(
            user_id=rider.id,
            name=name,
            species=species,
            breed=breed,
            request_id=f"demo-booking-pet-{card}",
        ),
        metadata=admin,
    )
    return rider, pet


async def _free_slots(bookings: booking_pb2_grpc.BookingServiceStub, clinic, offered, day, own):
    """The first day from `day` on (within SEARCH_DAYS: the clinic closes on Sundays) with
    a place free, and its free slots."""
    found = await bookings.SearchAvailableSlots(
        booking_pb2.SearchAvailableSlotsRequest(
            clinic_id=clinic.clinic_id,
            service_id=offered.service_id,
            first_date=_date(day),
            last_date=_date(day + timedelta(days=SEARCH_DAYS - 1)),
        ),
        metadata=own,
    )
    if not found.slots:
        raise DemoDataMissing(
            f"{clinic.name} has no free {offered.name} slot in the {SEARCH_DAYS} days from {day}"
        )
    first = found.slots[0].date
    free = [slot for slot in found.slots if slot.date == first]
    return date(first.year, first.month, first.day), free


def _date(day: date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def _day(day: date) -> str:
    return f"{WEEKDAYS[day.weekday()]} {day:%d-%m-%Y}"


def _clock(stamp: Timestamp, zone: ZoneInfo, *, seconds: bool = False, label: bool = False) -> str:
    """`stamp` on the clinic's wall clock: 09:00, 09:00:05, 09:00 WIB."""
    local = stamp.ToDatetime(tzinfo=zone)
    return local.strftime("%H:%M" + (":%S" if seconds else "") + (" %Z" if label else ""))


def _status(status: int) -> str:
    return booking_pb2.BookingStatus.Name(status).removeprefix("BOOKING_STATUS_").lower()


def _payment(status: int) -> str:
    return booking_pb2.PaymentStatus.Name(status).removeprefix("PAYMENT_STATUS_").lower()
