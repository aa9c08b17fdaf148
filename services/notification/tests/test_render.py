"""Events -> plans -> texts, without servers: seed 004's texts, amounts as Rp 12.000, times in
the rider's zone, "besok" / "hari ini", every template in every language, what is ignored and
what is poison."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from google.protobuf.message import Message
from tiket.events.v1 import booking_pb2, facility_pb2, fare_pb2, journey_pb2, wallet_pb2

from libs.events.envelope import BadEvent, CloudEvent, new_event
from libs.money import to_money
from services.notification import intake, render
from services.notification.domain import LANGUAGES, NotificationType
from services.notification.intake import Plan

JAKARTA = ZoneInfo("Asia/Jakarta")
RIDER = str(uuid.uuid4())
NOW = datetime(2024, 12, 16, 3, 0, tzinfo=UTC)  # 10:00 in Jakarta


def idr(amount: str | int):
    return to_money(Decimal(amount))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def make(event_type: str, data: Message, subject: str = RIDER) -> CloudEvent:
    return new_event("/tests", event_type, subject, data)


def text(event: CloudEvent, language: str = "id", zone: ZoneInfo = JAKARTA) -> str:
    plan = intake.plan(event)
    assert plan is not None
    return render.render(plan.template, language, plan.values, zone, NOW)


def checked_in(**fields) -> journey_pb2.JourneyCheckedIn:
    data = journey_pb2.JourneyCheckedIn(
        journey_id=str(uuid.uuid4()),
        user_id=RIDER,
        terminal_code="A",
        terminal_name="Terminal Utara",
        **{"held_amount": idr(12000), **fields},
    )
    data.checkin_time.FromDatetime(at("2024-12-16T01:30:00"))
    return data


def closed(status: str, **fields) -> journey_pb2.JourneyClosed:
    data = journey_pb2.JourneyClosed(
        journey_id=str(uuid.uuid4()),
        user_id=RIDER,
        status=status,
        origin_code="A",
        origin_name="Terminal Utara",
        destination_code="E",
        destination_name="Terminal Pusat",
        fare=idr(12000),
        remaining_balance=idr(138000),
        **fields,
    )
    data.checkin_time.FromDatetime(at("2024-12-16T01:30:00"))
    data.checkout_time.FromDatetime(at("2024-12-16T02:05:00"))
    return data


def fare_updated(effective: datetime) -> fare_pb2.FareUpdated:
    data = fare_pb2.FareUpdated(
        fare_id=3,
        origin_code="B",
        origin_name="Terminal Barat",
        destination_code="E",
        destination_name="Terminal Pusat",
        new_price=idr(9500),
    )
    data.effective_from.FromDatetime(effective)
    return data


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("12000", "Rp 12.000"),
        ("138000.00", "Rp 138.000"),
        ("12000.50", "Rp 12.000,50"),
        ("1234567.05", "Rp 1.234.567,05"),
        ("500", "Rp 500"),
        ("0", "Rp 0"),
    ],
)
def test_amounts_are_written_the_indonesian_way(amount: str, shown: str) -> None:
    assert render.format_value(Decimal(amount), "id", JAKARTA, NOW) == shown
    assert render.format_value(Decimal(amount), "en", JAKARTA, NOW) == shown


@pytest.mark.parametrize(
    ("zone", "shown"),
    [("Asia/Jakarta", "08:30"), ("Asia/Makassar", "09:30"), ("Asia/Jayapura", "10:30")],
)
def test_times_are_shown_in_the_riders_zone(zone: str, shown: str) -> None:
    assert render.format_value(at("2024-12-16T01:30:00"), "id", ZoneInfo(zone), NOW) == shown


@pytest.mark.parametrize(
    ("day", "language", "shown"),
    [
        (date(2024, 12, 16), "id", "hari ini"),
        (date(2024, 12, 17), "id", "besok"),
        (date(2024, 12, 18), "id", "18 Desember 2024"),
        (date(2025, 1, 2), "id", "2 Januari 2025"),
        (date(2024, 12, 15), "id", "15 Desember 2024"),
        (date(2024, 12, 16), "en", "today"),
        (date(2024, 12, 17), "en", "tomorrow"),
        (date(2025, 8, 17), "en", "17 August 2025"),
    ],
)
def test_effective_days(day: date, language: str, shown: str) -> None:
    assert render.day_phrase(day, date(2024, 12, 16), language) == shown


def test_tomorrow_is_the_riders_tomorrow() -> None:
    # At 16:30 UTC on the 16th it is 23:30 in Jakarta, and 17:00 UTC is midnight there.
    effective = make("fare.updated", fare_updated(at("2024-12-16T17:00:00")))
    evening = datetime(2024, 12, 16, 16, 30, tzinfo=UTC)
    plan = intake.plan(effective)
    assert plan is not None
    assert render.render(plan.template, "id", plan.values, JAKARTA, evening).endswith(
        "efektif besok."
    )
    assert render.render(plan.template, "id", plan.values, ZoneInfo("UTC"), evening).endswith(
        "efektif hari ini."
    )


# --- seed 004's texts ----------------------------------------------------------------------


def test_seed_check_in_text() -> None:
    assert text(make("journey.checked_in", checked_in())) == (
        "Anda check-in di Terminal Utara pada 08:30. Saldo ditahan sementara Rp 12.000. "
        "Saldo akan disesuaikan saat check-out berdasarkan tujuan akhir."
    )


def test_seed_check_out_text() -> None:
    assert text(make("journey.checked_out", closed("completed"))) == (
        "Perjalanan selesai dari Terminal Utara ke Terminal Pusat. Tarif: Rp 12.000. "
        "Sisa saldo: Rp 138.000."
    )


def test_seed_fare_update_text() -> None:
    assert text(make("fare.updated", fare_updated(at("2024-12-17T00:00:00")))) == (
        "Informasi: Tarif perjalanan Terminal Barat ke Terminal Pusat telah diperbarui menjadi "
        "Rp 9.500 efektif besok."
    )


def test_english_variants() -> None:
    assert text(make("journey.checked_out", closed("completed")), "en") == (
        "Trip completed from Terminal Utara to Terminal Pusat. Fare: Rp 12.000. "
        "Remaining balance: Rp 138.000."
    )
    assert text(make("fare.updated", fare_updated(at("2024-12-20T00:00:00"))), "en") == (
        "Notice: the fare from Terminal Barat to Terminal Pusat has been updated to Rp 9.500, "
        "effective 20 December 2024."
    )


def test_abandoned_incomplete_and_unpaid_journeys() -> None:
    assert text(make("journey.abandoned", closed("abandoned"))) == (
        "Perjalanan dari Terminal Utara (check-in pukul 08:30) ditutup otomatis karena tidak "
        "ada check-out. Dikenakan tarif maksimum: Rp 12.000. Sisa saldo: Rp 138.000."
    )
    incomplete = closed("incomplete", unpaid=True)
    assert text(make("journey.incomplete", incomplete)) == (
        "Anda check-out di Terminal Pusat pada 09:05 tanpa check-in. Denda Rp 12.000 belum "
        "terbayar karena saldo tidak mencukupi. Silakan isi ulang saldo Anda."
    )
    plan = intake.plan(make("journey.checked_out", closed("completed", unpaid=True)))
    assert plan is not None and plan.template == "journey.checked_out.unpaid"
    assert plan.terminal_code == "E"


def test_wallet_texts() -> None:
    moved = wallet_pb2.WalletMoneyMoved(
        user_id=RIDER, amount=idr("25000.50"), balance_after=idr(175000), reference="r-1"
    )
    assert text(make("wallet.refunded", moved)) == (
        "Pengembalian dana sebesar Rp 25.000,50 telah masuk ke saldo Anda. Saldo Anda sekarang "
        "Rp 175.000."
    )
    expired = wallet_pb2.WalletHoldChanged(
        user_id=RIDER, amount=idr(12000), available_after=idr(50000), release_reason="expired"
    )
    assert "Rp 12.000" in text(make("wallet.hold_released", expired), "en")


def debt_change(new_status: str, available: int, debt: bool = True) -> CloudEvent:
    data = wallet_pb2.UserStatusChanged(
        user_id=RIDER, old_status="active", new_status=new_status, debt=debt
    )
    data.available.CopyFrom(idr(available))
    return make("user.status_changed", data)


def test_debt_texts() -> None:
    assert text(debt_change("suspended", -9000), "en") == (
        "Your card is suspended for a debt of Rp 9.000 from offline trips. Top up to repay it"
        " and your card will be active again."
    )
    assert text(debt_change("active", 1000)) == (
        "Utang perjalanan offline Anda telah lunas dan kartu Anda aktif kembali. Saldo Anda"
        " sekarang Rp 1.000."
    )


def visit(**fields) -> booking_pb2.BookingChanged:
    """A Vaksinasi at the Denpasar clinic, 09:00 on its own clock (WITA, an hour ahead of the
    rider's Jakarta), paid Rp 150.000."""
    data = booking_pb2.BookingChanged(
        booking_id="BK-42",
        user_id=RIDER,
        clinic_name="Klinik Hewan PetPro Denpasar",
        service_name="Vaksinasi",
        amount=idr(150000),
        time_zone="Asia/Makassar",
        **fields,
    )
    data.slot_start.FromDatetime(at("2024-12-18T01:00:00"))
    return data


def test_clinic_booking_texts_say_what_where_when_on_the_clinics_clock_and_the_money() -> None:
    where = "Vaksinasi di Klinik Hewan PetPro Denpasar pada 18 Desember 2024 pukul 09:00 WITA"
    assert text(make("booking.paid", visit())) == (
        f"Pembayaran Rp 150.000 untuk {where} telah diterima; pemesanan Anda telah dikonfirmasi."
    )
    assert text(make("booking.paid", visit()), "en") == (
        "Payment of Rp 150.000 for Vaksinasi at Klinik Hewan PetPro Denpasar on 18 December"
        " 2024 at 09:00 WITA has been received; your booking is confirmed."
    )
    assert intake.plan(make("booking.confirmed", visit())) is None  # booking.paid said it
    assert text(make("booking.reminder", visit())) == (
        f"Pengingat: kunjungan Anda untuk {where}. Sampai jumpa di klinik!"
    )
    assert text(make("booking.no_show", visit())) == (
        f"Anda tercatat tidak hadir pada pemesanan {where}."
    )
    refunded = visit(refund_amount=idr(135000), refund_percent=90)
    assert text(make("booking.cancelled", refunded)) == (
        f"Pemesanan Anda untuk {where} telah dibatalkan. Pengembalian dana: Rp 135.000."
    )
    unpaid = visit(refund_amount=idr(0))  # nothing was paid: nothing comes back
    assert text(make("booking.cancelled", unpaid)) == (
        f"Pemesanan Anda untuk {where} telah dibatalkan."
    )
    unpaid_in_time = visit(refund_amount=idr(0), reason="payment_timeout")
    assert text(make("booking.cancelled", unpaid_in_time)) == (
        f"Pemesanan Anda untuk {where} dibatalkan karena pembayaran Rp 150.000 tidak diterima"
        " tepat waktu. Silakan pesan kembali jika masih dibutuhkan."
    )
    moved = visit(refund_amount=idr(20000))
    moved.previous_slot_start.FromDatetime(at("2024-12-17T06:30:00"))
    assert text(make("booking.rescheduled", moved)) == (
        "Jadwal pemesanan Anda untuk Vaksinasi di Klinik Hewan PetPro Denpasar telah diubah dari"
        " 17 Desember 2024 pukul 14:30 WITA menjadi 18 Desember 2024 pukul 09:00 WITA."
        " Pengembalian selisih harga: Rp 20.000."
    )
    plan = intake.plan(make("booking.paid", visit()))
    assert plan is not None and plan.reference == "BK-42"
    assert render.stored(plan.values) == {
        "service": "Vaksinasi",
        "clinic": "Klinik Hewan PetPro Denpasar",
        "start": "2024-12-18T09:00:00+08:00",
        "amount": "150000.00",
    }


def test_an_expired_reservation_says_which_visit_it_held() -> None:
    data = booking_pb2.ReservationChanged(
        reservation_id="R-1",
        user_id=RIDER,
        clinic_name="Klinik Hewan PetPro Sudirman",
        service_name="Grooming",
        time_zone="Asia/Jakarta",
    )
    data.slot_start.FromDatetime(at("2024-12-16T06:00:00"))
    assert text(make("booking.reservation_expired", data), zone=ZoneInfo("Asia/Tokyo")) == (
        "Reservasi Anda untuk Grooming di Klinik Hewan PetPro Sudirman pada 16 Desember 2024"
        " pukul 13:00 WIB telah kedaluwarsa karena tidak dikonfirmasi tepat waktu."
    )


def test_booking_events_without_what_their_text_needs_name_the_booking() -> None:
    def booking(event_type: str, data: dict, subject: str = "") -> CloudEvent:
        return CloudEvent(str(uuid.uuid4()), "/booking", event_type, "", subject, data)

    bare = booking("booking.paid", {"userId": RIDER, "bookingId": "BK-42"})
    assert text(bare) == "Ada pembaruan untuk pemesanan Anda BK-42."
    assert text(bare, "en") == "There is an update to your booking BK-42."
    plan = intake.plan(bare)
    assert plan is not None and render.stored(plan.values) == {"reference": "BK-42"}
    new_kind = make("booking.waitlisted", visit())
    assert text(new_kind) == "Ada pembaruan untuk pemesanan Anda BK-42."
    by_subject = intake.plan(booking("booking.cancelled", {"bookingId": "BK-1"}, subject=RIDER))
    assert by_subject is not None and str(by_subject.user_id) == RIDER
    assert intake.plan(booking("booking.cancelled", {"bookingId": "BK-1"})) is None
    assert intake.plan(booking("booking.cancelled", {"userId": RIDER})) is None


def room(status: str = "confirmed", **fields) -> facility_pb2.FacilityBookingChanged:
    """Rapat tim in Ruang Rapat Merapi, 13:00-14:00 on the room's clock (WIB)."""
    data = facility_pb2.FacilityBookingChanged(
        booking_id="FB-7",
        user_id=RIDER,
        facility_name="Ruang Rapat Merapi",
        facility_location="Menara Tiket lt. 5",
        title="Rapat tim",
        time_zone="Asia/Jakarta",
        status=status,
        **fields,
    )
    data.start_time.FromDatetime(at("2024-12-18T06:00:00"))
    data.end_time.FromDatetime(at("2024-12-18T07:00:00"))
    return data


def test_facility_booking_texts_name_the_room_and_its_time_range() -> None:
    what = 'Ruang Rapat Merapi (Menara Tiket lt. 5) untuk "Rapat tim"'
    when = "18 Desember 2024 pukul 13:00–14:00 WIB"
    tokyo = ZoneInfo("Asia/Tokyo")  # the room's clock, wherever the rider is
    assert text(make("facility.booking_created", room()), zone=tokyo) == (
        f"Pemesanan {what} pada {when} telah dibuat."
    )
    assert text(make("facility.booking_created", room("pending"))) == (
        f"Pemesanan {what} pada {when} telah dibuat dan menunggu persetujuan pengelola."
    )
    assert text(make("facility.booking_approved", room())) == (
        f"Pemesanan {what} pada {when} telah disetujui."
    )
    assert text(make("facility.booking_cancelled", room("cancelled")), "en") == (
        'Your booking of Ruang Rapat Merapi (Menara Tiket lt. 5) for "Rapat tim" on'
        " 18 December 2024 at 13:00–14:00 WIB has been cancelled."
    )
    assert text(make("facility.booking_rejected", room("rejected"))) == (
        f"Pemesanan {what} pada {when} ditolak. Silakan pilih waktu lain atau hubungi pengelola."
    )
    # Staff's reason, when they gave one: the rider learns why, not just that.
    assert text(make("facility.booking_rejected", room("rejected", reason="aula direnovasi"))) == (
        f"Pemesanan {what} pada {when} ditolak: aula direnovasi. Silakan pilih waktu lain atau"
        " hubungi pengelola."
    )
    assert text(make("facility.booking_cancelled", room("cancelled", reason="listrik padam"))) == (
        f"Pemesanan {what} pada {when} telah dibatalkan: listrik padam."
    )
    assert text(make("facility.booking_cancelled", room("cancelled", reason="x")), "en") == (
        'Your booking of Ruang Rapat Merapi (Menara Tiket lt. 5) for "Rapat tim" on'
        " 18 December 2024 at 13:00–14:00 WIB has been cancelled: x."
    )
    overnight = room()
    overnight.previous_start_time.FromDatetime(at("2024-12-17T14:00:00"))
    overnight.previous_end_time.FromDatetime(at("2024-12-17T18:00:00"))
    assert text(make("facility.booking_updated", overnight)) == (
        f"Jadwal pemesanan {what} telah diubah dari 17 Desember 2024 pukul 21:00 – 18 Desember"
        f" 2024 pukul 01:00 WIB menjadi {when}."
    )
    resized_crowd = room()  # more attendees, the same range: not "moved from … to the same"
    resized_crowd.previous_start_time.CopyFrom(resized_crowd.start_time)
    resized_crowd.previous_end_time.CopyFrom(resized_crowd.end_time)
    assert text(make("facility.booking_updated", resized_crowd)) == (
        f"Pemesanan {what} pada {when} telah diubah."
    )
    plan = intake.plan(make("facility.booking_created", room()))
    assert plan is not None and plan.reference == "FB-7" and str(plan.user_id) == RIDER
    assert render.stored(plan.values)["time"] == (
        "2024-12-18T13:00:00+07:00/2024-12-18T14:00:00+07:00"
    )


# --- every template, ignored and poison events ---------------------------------------------


BOOKING_KINDS = ("paid", "cancelled", "no_show", "reminder")
FACILITY_KINDS = ("created", "approved", "rejected", "cancelled", "updated")


def every_plan() -> list[Plan]:
    moved = wallet_pb2.WalletMoneyMoved(user_id=RIDER, amount=idr(1), balance_after=idr(2))
    expired = wallet_pb2.WalletHoldChanged(user_id=RIDER, release_reason="expired")
    events = [
        make("journey.checked_in", checked_in()),
        make("fare.updated", fare_updated(NOW)),
        make("wallet.topped_up", moved),
        make("wallet.refunded", moved),
        make("wallet.hold_released", expired),
        debt_change("suspended", -1),
        debt_change("active", 0),
    ]
    for kind, status in (("checked_out", "completed"), ("abandoned", ""), ("incomplete", "")):
        for unpaid in (False, True):
            events.append(make(f"journey.{kind}", closed(status, unpaid=unpaid)))
    moved_visit = visit()
    moved_visit.previous_slot_start.FromDatetime(NOW)
    refunded_visit = visit(refund_amount=idr(1))
    refunded_visit.previous_slot_start.FromDatetime(NOW)
    moved_room = room()
    moved_room.previous_start_time.FromDatetime(NOW)
    moved_room.previous_end_time.FromDatetime(NOW)
    expired = booking_pb2.ReservationChanged(
        reservation_id="R-1", user_id=RIDER, clinic_name="K", service_name="S"
    )
    expired.slot_start.FromDatetime(NOW)
    events += [
        make("booking.reservation_expired", expired),
        make("booking.other", visit()),
        *(make(f"booking.{kind}", visit()) for kind in BOOKING_KINDS),
        make("booking.rescheduled", moved_visit),
        make("booking.cancelled", visit(reason="payment_timeout")),
        *(make(f"booking.{kind}", refunded_visit) for kind in ("cancelled", "rescheduled")),
        *(make(f"facility.booking_{kind}", room()) for kind in FACILITY_KINDS),
        make("facility.booking_created", room("pending")),
        make("facility.booking_updated", moved_room),
        make("facility.booking_rejected", room("rejected", reason="r")),
        make("facility.booking_cancelled", room("cancelled", reason="r")),
    ]
    plans = [intake.plan(e) for e in events]
    assert all(p is not None for p in plans)
    return [p for p in plans if p is not None]


def test_every_template_exists_in_every_language_and_renders() -> None:
    assert render.names("en") == render.names("id")
    plans = every_plan()
    assert {p.template for p in plans} == render.names("id")
    assert {p.type for p in plans} == set(NotificationType)
    for language in LANGUAGES:
        for plan in plans:
            message = render.render(plan.template, language, plan.values, JAKARTA, NOW)
            assert message and "$" not in message, (plan.template, language)
        for kind in NotificationType:
            assert render.subject(language, kind)


@pytest.mark.parametrize(
    "event",
    [
        make("wallet.hold_placed", wallet_pb2.WalletHoldChanged(user_id=RIDER)),
        make("wallet.hold_captured", wallet_pb2.WalletHoldChanged(user_id=RIDER)),
        make("wallet.charged", wallet_pb2.WalletMoneyMoved(user_id=RIDER)),
        make("wallet.hold_released", wallet_pb2.WalletHoldChanged(release_reason="released")),
        make("user.created", wallet_pb2.UserCreated(user_id=RIDER)),
        debt_change("suspended", 0, debt=False),  # an operator's: not the rider's news here
        debt_change("blocked", -1),
        make("journey.teleported", checked_in()),
        # an entry a gate decided offline, uploaded later: it held nothing, the rider hears
        # of the journey it started
        make("journey.checked_in", checked_in(offline=True, held_amount=None)),
    ],
    ids=lambda e: e.type,
)
def test_events_riders_are_not_told_about(event: CloudEvent) -> None:
    assert intake.plan(event) is None


def test_unreadable_payloads_are_poison() -> None:
    bad_user = make("journey.checked_in", checked_in())
    bad_user.data["userId"] = "42"
    bad_money = make("journey.checked_in", checked_in())
    bad_money.data["heldAmount"] = {"units": "lots"}
    no_time = make("journey.checked_in", journey_pb2.JourneyCheckedIn(user_id=RIDER))
    no_effective = make("fare.updated", fare_pb2.FareUpdated(fare_id=1))
    for event in (bad_user, bad_money, no_time, no_effective):
        with pytest.raises(BadEvent):
            intake.plan(event)
