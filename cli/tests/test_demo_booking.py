"""`tiket demo booking` and the booking service's demo data, against the real user and
booking services in this process: the demo data loads twice without a change, and the
scripted visit prints each step, the 90 % refund, the wallet before and after and the
history, writes the QR code's PNG, and leaves the places and money audit clean."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2
from google.type import date_pb2
from tiket.booking.v1 import booking_pb2 as pb
from tiket.booking.v1 import facility_pb2 as fpb
from tiket.user.v1 import user_pb2

from cli import demo_booking
from cli.main import _parser
from libs.auth import Role
from libs.config import Settings
from services.booking import demo as booking_demo
from services.booking.facilities import demo as facility_demo
from services.booking.tests.facility_support import facilities
from services.booking.tests.stack import Stack, audit, row_counts, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

RIDERS = [str(uuid.uuid4()) for _ in range(3)]  # the user demo's riders, as `tiket seed` passes


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    async with running_stack(
        TIKET_SWEEP_INTERVAL_SECONDS="3600",
        TIKET_RATE_LIMIT_ADDRESS_PER_MINUTE="1000000",
        TIKET_RATE_LIMIT_USER_PER_MINUTE="1000000",
    ) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def loaded(stack: Stack) -> list[list[str]]:
    """What two loads of the demo data printed."""
    printed: list[list[str]] = []
    for _ in range(2):
        lines: list[str] = []
        await booking_demo.load(
            stack.channels["booking"], stack.metadata(Role.ADMIN), lines.append, RIDERS
        )
        printed.append(lines)
    return printed


def cli_settings(stack: Stack, state_dir: Path) -> Settings:
    """The settings `tiket demo booking` would read to reach this stack's services."""
    addresses = {
        **stack.settings.addresses,
        "user": f"127.0.0.1:{stack.runtimes['user'].port}",
        "booking": f"127.0.0.1:{stack.runtimes['booking'].port}",
    }
    return replace(stack.settings, addresses=addresses, state_dir=str(state_dir))


def scenario(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["demo", "booking", *argv])


async def test_loading_the_demo_data_twice_changes_nothing(stack, loaded):
    first, second = loaded
    url = stack.database_url()
    before = await row_counts(url)
    await booking_demo.load(
        stack.channels["booking"], stack.metadata(Role.ADMIN), lambda _: None, RIDERS
    )
    assert await row_counts(url) == before
    assert second == first
    assert before["clinics"] == len(booking_demo.DEMO_CLINICS) == 2
    assert before["clinic_services"] == before["staff"] == 4
    assert before["slots"] > 0 and before["reservations"] == before["bookings"] == 0
    assert before["facilities"] == 2 and before["facility_hours"] == 10
    assert before["facility_bookings"] == len(facility_demo.DEMO_BOOKINGS) == 4
    assert first[0].startswith("  clinic Klinik Hewan PetPro Sudirman (Asia/Jakarta)  id=")
    assert any("Vaksinasi" in line and "Rp 150.000" in line for line in first)


async def test_demo_slots_keep_the_clinics_hours_on_their_own_wall_clock(stack, loaded):
    admin = stack.metadata(Role.ADMIN)
    clinics = await stack.booking.ListClinics(pb.ListClinicsRequest(), metadata=admin)
    assert {c.name: c.time_zone for c in clinics.clinics} == {
        "Klinik Hewan PetPro Sudirman": "Asia/Jakarta",
        "Klinik Hewan PetPro Denpasar": "Asia/Makassar",
    }
    for clinic in clinics.clinics:
        zone = ZoneInfo(clinic.time_zone)
        offered = await stack.booking.ListClinicServices(
            pb.ListClinicServicesRequest(clinic_id=clinic.clinic_id), metadata=admin
        )
        for service in offered.services:
            found = await stack.booking.SearchAvailableSlots(
                pb.SearchAvailableSlotsRequest(
                    clinic_id=clinic.clinic_id,
                    service_id=service.service_id,
                    first_date=_today(zone),
                    last_date=_today(zone, days=14),
                ),
                metadata=admin,
            )
            assert found.slots, f"{clinic.name}: no {service.name} slot"
            for slot in found.slots:
                start = slot.start_time.ToDatetime(tzinfo=zone)
                end = slot.end_time.ToDatetime(tzinfo=zone)
                assert start.weekday() < 6, f"{service.name} on a Sunday: {start}"
                assert (end - start).total_seconds() == service.duration_minutes * 60
                assert any(
                    opens <= start.time() and end.time() <= closes
                    for opens, closes in booking_demo.WINDOWS
                ), f"{service.name} outside opening hours: {start:%H:%M}-{end:%H:%M}"
                assert not (time(12) <= start.time() < time(13))


async def test_demo_facilities_carry_seed_003s_sample_bookings_on_working_days(stack, loaded):
    admin = stack.metadata(Role.ADMIN)
    listed = await facilities(stack).ListFacilities(fpb.ListFacilitiesRequest(), metadata=admin)
    assert {f.name for f in listed.facilities} == {f.name for f in facility_demo.DEMO_FACILITIES}
    seen = []
    for rider in RIDERS:
        mine = await facilities(stack).ListMyFacilityBookings(
            fpb.ListMyFacilityBookingsRequest(user_id=rider), metadata=admin
        )
        for booking in mine.bookings:
            zone = ZoneInfo(booking.time_zone)
            start = booking.start_time.ToDatetime(UTC).astimezone(zone)
            end = booking.end_time.ToDatetime(UTC).astimezone(zone)
            assert start.isoweekday() <= 5 and start.date() > datetime.now(zone).date()
            seen.append(
                (
                    RIDERS.index(rider),
                    booking.title,
                    booking.attendee_count,
                    start.time(),
                    end.time(),
                )
            )
    assert sorted(seen) == sorted(
        (b.rider, b.title, b.attendees, b.start, b.end) for b in facility_demo.DEMO_BOOKINGS
    )


async def test_demo_booking_prints_each_step_the_refund_and_the_balances(stack, loaded, tmp_path):
    settings = cli_settings(stack, tmp_path)
    lines: list[str] = []
    await demo_booking.booking(scenario(), settings, out=lines.append)
    text = "\n".join(lines)

    assert lines[0] == "created  Putri Anggraini (CARD0100) with Rp 500.000 on the wallet (admin)"
    assert "rider    Putri Anggraini (CARD0100) with Mochi (kucing)" in lines
    assert "clinic   Klinik Hewan PetPro Sudirman (Asia/Jakarta): Vaksinasi Rp 150.000" in lines
    assert "wallet   available Rp 500.000" in lines
    steps = [line for line in lines if line.lstrip("\n")[:2] in {f"{n}." for n in range(1, 7)}]
    assert [step.lstrip("\n")[:2] for step in steps] == ["1.", "2.", "3.", "4.", "5.", "6."]
    assert "free slots" in steps[0] and " WIB" in steps[0]
    assert "held until" in steps[1] and "with drh. Ayu Lestari" in steps[1]
    assert ": pending_payment, to pay Rp 150.000" in steps[2]
    assert (
        "4. pay      Rp 150.000 from the wallet: booking confirmed, payment completed" in steps[3]
    )
    assert steps[3].endswith("available Rp 350.000")
    assert "5. booking  confirmed/paid" in steps[4]
    assert (
        "6. cancel   by the rider: 90 % refunded, Rp 135.000 back to the wallet; "
        "booking cancelled, payment partially_refunded"
    ) in steps[5]
    assert "\nwallet   before Rp 500.000  after Rp 485.000  difference -Rp 15.000" in lines

    history = [line for line in lines if line.startswith("history") or line.startswith(" " * 9)]
    assert len(history) == 3, text
    assert "(new) -> pending_payment" in history[0]
    assert "pending_payment -> confirmed" in history[1]
    assert "confirmed -> cancelled" in history[2] and "(customer_request)" in history[2]

    [png] = tmp_path.glob("booking-*.png")
    assert str(png) in steps[4]
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    assert await audit(stack.database_url(), stack.database_url("user")) == []


async def test_demo_booking_runs_again_with_the_same_rider(stack, loaded, tmp_path):
    settings = cli_settings(stack, tmp_path)
    lines: list[str] = []
    await demo_booking.booking(scenario("--card", "CARD0101"), settings, out=lines.append)
    assert lines[0] == "created  Putri Anggraini (CARD0101) with Rp 500.000 on the wallet (admin)"
    again: list[str] = []
    await demo_booking.booking(scenario("--card", "CARD0101"), settings, out=again.append)
    assert not any(line.startswith("created") for line in again)
    assert "\nwallet   before Rp 485.000  after Rp 470.000  difference -Rp 15.000" in again
    assert len(list(tmp_path.glob("booking-*.png"))) == 2
    assert await audit(stack.database_url(), stack.database_url("user")) == []


async def test_demo_booking_of_another_service(stack, loaded, tmp_path):
    settings = cli_settings(stack, tmp_path)
    lines: list[str] = []
    argv = ("--card", "CARD0102", "--service", "Pemeriksaan Umum")
    await demo_booking.booking(scenario(*argv), settings, out=lines.append)
    assert any("with drh. Bambang Pratama" in line for line in lines)
    assert any("90 % refunded, Rp 90.000 back to the wallet" in line for line in lines)
    assert "\nwallet   before Rp 500.000  after Rp 490.000  difference -Rp 10.000" in lines


async def test_demo_booking_of_a_name_not_there_lists_the_names_there_are(stack, loaded, tmp_path):
    """The demo data is loaded: a wrong --clinic or --service is not "load the demo data"."""
    settings = cli_settings(stack, tmp_path)
    with pytest.raises(SystemExit) as caught:
        await demo_booking._booking_or_exit(scenario("--clinic", "Klinik Lain"), settings)
    assert str(caught.value) == (
        "tiket demo booking: no active clinic named 'Klinik Lain'; the active clinics are "
        "'Klinik Hewan PetPro Denpasar', 'Klinik Hewan PetPro Sudirman'"
    )
    with pytest.raises(SystemExit) as caught:
        await demo_booking._booking_or_exit(scenario("--service", "Operasi"), settings)
    assert str(caught.value) == (
        "tiket demo booking: Klinik Hewan PetPro Sudirman offers no 'Operasi'; it offers "
        "'Grooming', 'Pemeriksaan Umum', 'Vaksinasi'"
    )


async def test_demo_booking_without_the_demo_data_says_what_to_do(stack, loaded, tmp_path):
    """No demo clinic is active (here: both deactivated): load the demo data first."""
    settings = cli_settings(stack, tmp_path)
    admin = stack.metadata(Role.ADMIN)
    listed = await stack.booking.ListClinics(pb.ListClinicsRequest(), metadata=admin)
    demo = [c for c in listed.clinics if c.active]

    async def set_active(active: bool) -> None:
        for clinic in demo:
            await stack.booking.UpdateClinic(
                pb.UpdateClinicRequest(
                    clinic=pb.Clinic(clinic_id=clinic.clinic_id, active=active),
                    update_mask=field_mask_pb2.FieldMask(paths=["active"]),
                ),
                metadata=admin,
            )

    await set_active(False)
    try:
        with pytest.raises(SystemExit) as caught:
            await demo_booking._booking_or_exit(scenario(), settings)
    finally:
        await set_active(True)
    assert str(caught.value) == (
        "tiket demo booking: no active clinic named 'Klinik Hewan PetPro Sudirman'; "
        "load the demo data first (`tiket seed`)"
    )


async def test_demo_booking_of_a_blocked_card_says_so_and_books_nothing(stack, loaded, tmp_path):
    admin = stack.metadata(Role.ADMIN)
    rider = await stack.users.CreateUser(
        user_pb2.CreateUserRequest(card_id="CARD0199", full_name="Rina"), metadata=admin
    )
    await stack.users.ChangeUserStatus(
        user_pb2.ChangeUserStatusRequest(
            user_id=rider.id, status=user_pb2.USER_STATUS_BLOCKED, reason="lost card"
        ),
        metadata=admin,
    )
    settings = cli_settings(stack, tmp_path)
    with pytest.raises(SystemExit, match="card CARD0199 is blocked: it cannot pay"):
        await demo_booking._booking_or_exit(scenario("--card", "CARD0199"), settings)
    wallet = await stack.users.GetWallet(
        user_pb2.GetWalletRequest(user_id=rider.id), metadata=admin
    )
    assert wallet.balance.units == 0  # no top-up
    booked = await stack.booking.ListBookings(
        pb.ListBookingsRequest(user_id=rider.id), metadata=admin
    )
    assert list(booked.bookings) == []  # no place left held for 30 minutes


async def test_the_demo_data_loads_again_after_staff_changed_a_demo_clinic(stack, loaded):
    """`make run` loads the demo data at every start: a demo clinic an admin deactivated or
    renamed since must not stop it (ALREADY_EXISTS of the clinic's request_id did)."""
    admin = stack.metadata(Role.ADMIN)
    clinics = await stack.booking.ListClinics(pb.ListClinicsRequest(), metadata=admin)
    [denpasar] = [c for c in clinics.clinics if c.name == "Klinik Hewan PetPro Denpasar"]

    async def set_active(active: bool) -> None:
        await stack.booking.UpdateClinic(
            pb.UpdateClinicRequest(
                clinic=pb.Clinic(clinic_id=denpasar.clinic_id, active=active),
                update_mask=field_mask_pb2.FieldMask(paths=["active"]),
            ),
            metadata=admin,
        )

    await set_active(False)
    try:
        lines: list[str] = []
        await booking_demo.load(stack.channels["booking"], admin, lines.append, RIDERS)
    finally:
        await set_active(True)
    assert (
        "  clinic Klinik Hewan PetPro Denpasar: changed since it was loaded; left as it is, "
        "no slots added"
    ) in lines
    assert any(line.startswith("  clinic Klinik Hewan PetPro Sudirman (") for line in lines)
    assert any(line.startswith("  facility ") for line in lines)  # the rest loaded


def _today(zone: ZoneInfo, days: int = 0) -> date_pb2.Date:
    day = datetime.now(zone).date() + timedelta(days=days)
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


async def test_the_demo_data_loads_again_after_staff_changed_a_demo_rooms_hours(stack, loaded):
    """`make run` loads the demo data at every start: the hours staff set for a demo room
    (SetFacilityHours) are theirs, not put back to the demo's Mon-Fri 08:00-18:00."""
    admin = stack.metadata(Role.ADMIN)
    rooms = facilities(stack)
    listed = await rooms.ListFacilities(fpb.ListFacilitiesRequest(), metadata=admin)
    [merapi] = [f for f in listed.facilities if f.name == facility_demo.DEMO_FACILITIES[0].name]
    longer = [
        fpb.OpeningWindow(
            day_of_week=day,
            open=facility_demo._time_of_day(time(7)),
            close=facility_demo._time_of_day(time(20)),
        )
        for day in range(1, 7)
    ]
    await rooms.SetFacilityHours(
        fpb.SetFacilityHoursRequest(facility_id=merapi.facility_id, hours=longer), metadata=admin
    )
    try:
        await booking_demo.load(stack.channels["booking"], admin, lambda _: None, RIDERS)
        after = await rooms.GetFacility(
            fpb.GetFacilityRequest(facility_id=merapi.facility_id), metadata=admin
        )
        assert list(after.hours) == longer
    finally:
        await rooms.SetFacilityHours(
            fpb.SetFacilityHoursRequest(facility_id=merapi.facility_id, hours=merapi.hours),
            metadata=admin,
        )


async def test_the_demo_data_loads_again_after_staff_moved_a_demo_room_booking(stack, loaded):
    """A demo room booking staff moved since (UpdateFacilityBooking) is theirs: loading the
    demo data again the same day leaves it where it is."""
    admin = stack.metadata(Role.ADMIN)
    rooms = facilities(stack)
    mine = await rooms.ListMyFacilityBookings(
        fpb.ListMyFacilityBookingsRequest(user_id=RIDERS[0]), metadata=admin
    )
    [standup] = [b for b in mine.bookings if b.title == "Team Standup"]
    hour = timedelta(hours=1)
    start, end = standup.start_time.ToDatetime(UTC), standup.end_time.ToDatetime(UTC)
    moved = fpb.UpdateFacilityBookingRequest(booking_id=standup.booking_id)
    moved.start_time.FromDatetime(start - hour)
    moved.end_time.FromDatetime(end - hour)
    await rooms.UpdateFacilityBooking(moved, metadata=admin)
    try:
        lines: list[str] = []
        await booking_demo.load(stack.channels["booking"], admin, lines.append, RIDERS)
        [said] = [line for line in lines if "Team Standup" in line]
        assert said.endswith(": changed since it was loaded; left as it is")
        after = await rooms.GetFacilityBooking(
            fpb.GetFacilityBookingRequest(booking_id=standup.booking_id), metadata=admin
        )
        assert after.start_time.ToDatetime(UTC) == start - hour
    finally:
        back = fpb.UpdateFacilityBookingRequest(
            booking_id=standup.booking_id, start_time=standup.start_time, end_time=standup.end_time
        )
        await rooms.UpdateFacilityBooking(back, metadata=admin)


async def test_demo_room_bookings_a_room_refuses_are_left_out(stack, loaded):
    """Other riders (the user service's demo data made again) for the same demo times: the
    rooms are taken then, so each booking is left out with the reason, and the load ends."""
    others = [str(uuid.uuid4()) for _ in RIDERS]
    lines: list[str] = []
    admin = stack.metadata(Role.ADMIN)
    await booking_demo.load(stack.channels["booking"], admin, lines.append, others)
    refused = [line for line in lines if ": not booked: " in line]
    assert len(refused) == len(facility_demo.DEMO_BOOKINGS)
    assert all(line.endswith("which overlaps the time asked for") for line in refused), refused


async def test_a_demo_day_whose_slots_overlap_staffs_own_is_left_out(stack, loaded, monkeypatch):
    """Staff gave a demo doctor a slot of their own on a day the demo has not reached yet: when
    it does (a later `make run`), that day of theirs is left out, saying why, and the rest
    loads (SLOT_OVERLAP stopped the whole start)."""
    admin = stack.metadata(Role.ADMIN)
    zone = ZoneInfo(booking_demo.DEMO_CLINIC.time_zone)
    ahead = booking_demo.DAYS_AHEAD + 1
    day = datetime.now(zone).date() + timedelta(days=ahead)
    if day.weekday() not in booking_demo.OPEN_DAYS:
        ahead, day = ahead + 1, day + timedelta(days=1)
    clinics = await stack.booking.ListClinics(pb.ListClinicsRequest(), metadata=admin)
    [clinic] = [c for c in clinics.clinics if c.name == booking_demo.DEMO_CLINIC.name]
    offered = await stack.booking.ListClinicServices(
        pb.ListClinicServicesRequest(clinic_id=clinic.clinic_id), metadata=admin
    )
    [service] = [s for s in offered.services if s.name == booking_demo.DEMO_SERVICE.name]
    staff = await stack.booking.ListStaff(
        pb.ListStaffRequest(clinic_id=clinic.clinic_id), metadata=admin
    )
    [doctor] = [m for m in staff.staff if m.full_name == booking_demo.DEMO_SERVICE.staff]
    own = pb.CreateSlotRequest(
        clinic_id=clinic.clinic_id, service_id=service.service_id, staff_id=doctor.staff_id,
        capacity=1,
    )  # fmt: skip
    own.start_time.FromDatetime(datetime.combine(day, time(10, 15), tzinfo=zone))
    await stack.booking.CreateSlot(own, metadata=admin)

    monkeypatch.setattr(booking_demo, "DAYS_AHEAD", ahead)
    lines: list[str] = []
    await booking_demo.load(stack.channels["booking"], admin, lines.append, RIDERS)
    [said] = [line for line in lines if line.strip().startswith(f"{day}:")]
    assert "no Vaksinasi slots made: staff member" in said and "overlaps" in said, said
    assert any(line.startswith("  clinic Klinik Hewan PetPro Denpasar (") for line in lines)
    assert any(line.startswith("  facility ") for line in lines)  # the rest loaded
