"""Events in, notifications out: through the real RabbitMQ exchange of the run, into the
notification database, and out by a real SMTP server and a local push/SMS provider."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import aio_pika
import grpc
import pytest
from tiket.events.v1 import booking_pb2, fare_pb2, journey_pb2, wallet_pb2
from tiket.notification.v1 import notification_pb2 as pb
from tiket.user.v1 import user_pb2

from libs.auth import Role
from libs.events import bus
from libs.events.topology import dead_letter_queue
from libs.money import to_money
from services.notification import consumers, store
from services.notification.domain import (
    Attempt,
    Channel,
    DeliveryStatus,
    Draft,
    NotificationType,
    Outcome,
)
from services.notification.tests.stack import Stack, event
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]
SEED_CHECKIN = (
    "Anda check-in di Terminal Utara pada 08:30. Saldo ditahan sementara Rp 12.000. "
    "Saldo akan disesuaikan saat check-out berdasarkan tujuan akhir."
)


def checked_in(user_id: str, at: datetime | None = None) -> journey_pb2.JourneyCheckedIn:
    data = journey_pb2.JourneyCheckedIn(
        journey_id=str(uuid.uuid4()),
        user_id=user_id,
        card_id="CARD0001",
        terminal_code="A",
        terminal_name="Terminal Utara",
        gate_code="A-ENTRY-01",
        held_amount=to_money(Decimal(12000)),
        available_balance=to_money(Decimal(138000)),
    )
    data.checkin_time.FromDatetime(at or datetime(2024, 12, 16, 1, 30, tzinfo=UTC))
    return data


def paid_visit(user_id: str) -> booking_pb2.BookingChanged:
    data = booking_pb2.BookingChanged(
        booking_id="BK-42",
        user_id=user_id,
        clinic_name="Klinik Hewan PetPro Denpasar",
        service_name="Vaksinasi",
        amount=to_money(Decimal(150000)),
        time_zone="Asia/Makassar",
    )
    data.slot_start.FromDatetime(datetime(2024, 12, 18, 1, 0, tzinfo=UTC))
    return data


async def listed(stack: Stack, user_id: str, **filters) -> list[pb.Notification]:
    request = pb.ListNotificationsRequest(user_id=user_id, **filters)
    response = await stack.call("ListNotifications", request, Role.USER, user_id)
    return list(response.notifications)


async def settled(stack: Stack, user_id: str, count: int = 1) -> list[pb.Notification]:
    """The rider's notifications once `count` exist and none is pending."""
    found: list[pb.Notification] = []

    async def done() -> bool:
        found[:] = await listed(stack, user_id)
        return len(found) == count and all(
            n.status != pb.NOTIFICATION_STATUS_PENDING for n in found
        )

    await wait_until(done, f"{count} settled notification(s) of {user_id}")
    return found


async def test_a_check_in_is_stored_with_the_seed_text_and_sent_on_every_channel(stack):
    rider = await stack.new_rider()
    user = await stack.contact(rider)
    await stack.publish(event("journey.checked_in", rider, checked_in(rider)))

    [notification] = await settled(stack, rider)
    assert notification.message == SEED_CHECKIN
    assert notification.type == pb.NOTIFICATION_TYPE_CHECKIN
    assert notification.status == pb.NOTIFICATION_STATUS_SENT
    assert notification.terminal_code == "A"
    assert notification.metadata["held"] == "12000.00"
    assert {d.channel: d.status for d in notification.deliveries} == {
        pb.CHANNEL_EMAIL: pb.DELIVERY_STATUS_SENT,
        pb.CHANNEL_PUSH: pb.DELIVERY_STATUS_SENT,
        pb.CHANNEL_SMS: pb.DELIVERY_STATUS_SENT,
    }
    [mail] = stack.smtp.to(user.email)
    assert mail.get_content().strip() == SEED_CHECKIN
    assert mail["Subject"] == "Notifikasi tiket: Check-in"
    [sms] = stack.webhook.to(user.phone)
    assert sms == {
        "channel": "sms",
        "to": user.phone,
        "message": SEED_CHECKIN,
        "notification_id": notification.id,
    }
    [push] = stack.webhook.to(rider)
    assert push["channel"] == "push"
    keys = {key for body, key in stack.webhook.calls if body["notification_id"] == notification.id}
    assert keys == {f"notification-{notification.id}-push", f"notification-{notification.id}-sms"}


async def test_the_same_event_twice_makes_one_notification_and_one_email(stack):
    rider = await stack.new_rider()
    user = await stack.contact(rider)
    duplicates = stack.consumer.duplicates
    twice = event("journey.checked_in", rider, checked_in(rider))
    await stack.publish(twice)
    await stack.publish(twice)

    async def second_copy_dropped() -> bool:  # else the asserts below could run before it
        return stack.consumer.duplicates > duplicates

    await wait_until(second_copy_dropped, "the second copy to be handled")
    await settled(stack, rider)
    await stack.publish(event("journey.checked_in", rider, checked_in(rider)))  # a later one
    await settled(stack, rider, count=2)
    assert len(stack.smtp.to(user.email)) == 2
    rows = await stack.rows("SELECT count(*) FROM inbox WHERE event_id = %s", twice.id)
    assert rows == [(1,)]


async def test_preferences_choose_language_time_zone_and_channels(stack):
    rider = await stack.new_rider()
    user = await stack.contact(rider)
    wanted = pb.SetPreferencesRequest(
        user_id=rider, language="en", time_zone="Asia/Jayapura", muted_channels=[pb.CHANNEL_SMS]
    )
    await stack.call("SetPreferences", wanted, Role.USER, rider)
    await stack.publish(event("journey.checked_in", rider, checked_in(rider)))

    [notification] = await settled(stack, rider)
    assert notification.message.startswith("You checked in at Terminal Utara at 10:30. Rp 12.000")
    assert [d.channel for d in notification.deliveries] == [pb.CHANNEL_EMAIL, pb.CHANNEL_PUSH]
    assert stack.webhook.to(user.phone) == []
    assert len(stack.smtp.to(user.email)) == 1


async def test_a_top_up_through_the_user_service_tells_the_rider(stack):
    rider = await stack.new_rider()
    top_up = user_pb2.TopUpRequest(
        user_id=rider, amount=to_money(Decimal("50000.50")), idempotency_key=str(uuid.uuid4())
    )
    await stack.users.TopUp(top_up, metadata=stack.metadata())
    [notification] = await settled(stack, rider)
    assert notification.message == (
        "Isi ulang saldo sebesar Rp 50.000,50 berhasil. Saldo Anda sekarang Rp 50.000,50."
    )
    assert notification.type == pb.NOTIFICATION_TYPE_WALLET


async def test_a_debt_from_offline_taps_and_its_repayment_tell_the_rider(stack):
    """user.status_changed of the debt rule, from the real user service over the bus."""
    rider = await stack.new_rider()
    ride = user_pb2.ChargeRequest(
        user_id=rider,
        amount=to_money(Decimal(9000)),
        idempotency_key="offline-ride",
        reference="journey-offline",
        allow_debt=True,
    )
    await stack.users.Charge(ride, metadata=stack.metadata(Role.SERVICE, "journey"))
    [suspended] = await settled(stack, rider)
    assert suspended.message == (
        "Kartu Anda ditangguhkan karena utang perjalanan offline sebesar Rp 9.000. "
        "Isi ulang saldo untuk melunasinya dan kartu akan aktif kembali."
    )
    assert suspended.type == pb.NOTIFICATION_TYPE_WALLET
    repay = user_pb2.TopUpRequest(
        user_id=rider, amount=to_money(Decimal(10000)), idempotency_key="repay"
    )
    await stack.users.TopUp(repay, metadata=stack.metadata())
    repaid: list[tuple] = []

    async def told() -> bool:  # from the database: ListNotifications is rate-limited
        repaid[:] = await stack.rows(
            "SELECT message FROM notifications WHERE user_id = %s AND event_type = %s",
            rider,
            "user.status_changed",
        )
        return len(repaid) == 2

    await wait_until(told, "the notification of the debt repaid")
    assert (
        "Utang perjalanan offline Anda telah lunas dan kartu Anda aktif kembali. "
        "Saldo Anda sekarang Rp 1.000.",
    ) in repaid


async def test_fare_updates_go_to_the_riders_who_asked_for_them(stack):
    fan, other = await stack.new_rider(), await stack.new_rider()
    await stack.call(
        "SetPreferences", pb.SetPreferencesRequest(user_id=fan, fare_updates=True), Role.USER, fan
    )
    data = fare_pb2.FareUpdated(
        fare_id=7,
        origin_code="B",
        origin_name="Terminal Barat",
        destination_code="E",
        destination_name="Terminal Pusat",
        new_price=to_money(Decimal(9500)),
    )
    data.effective_from.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    await stack.publish(event("fare.updated", "B-E", data))
    [notification] = await settled(stack, fan)
    assert notification.message == (
        "Informasi: Tarif perjalanan Terminal Barat ke Terminal Pusat telah diperbarui menjadi "
        "Rp 9.500 efektif besok."
    )
    assert await listed(stack, other) == []


async def test_events_riders_are_not_told_about_are_acknowledged_and_ignored(stack):
    rider = await stack.new_rider()
    released = wallet_pb2.WalletHoldChanged(
        user_id=rider, amount=to_money(Decimal(5000)), release_reason="released"
    )  # by its check-out: the rider hears of the journey instead
    ignored = [
        event("wallet.hold_released", rider, released),
        event("booking.confirmed", "no-user-here", journey_pb2.JourneyClosed()),
        # Announced with booking.paid, whose text says the booking is confirmed too: one
        # payment, one message (two SMS at once, before).
        event("booking.confirmed", rider, paid_visit(rider)),
        event("journey.something_new", rider, journey_pb2.JourneyClosed(user_id=rider)),
    ]
    for each in ignored:
        await stack.publish(each)
    await stack.publish(event("booking.paid", rider, paid_visit(rider)))
    [booking] = await settled(stack, rider)
    assert booking.message == (
        "Pembayaran Rp 150.000 untuk Vaksinasi di Klinik Hewan PetPro Denpasar pada"
        " 18 Desember 2024 pukul 09:00 WITA telah diterima; pemesanan Anda telah dikonfirmasi."
    )
    assert booking.transaction_reference == "BK-42"
    assert dict(booking.metadata) == {
        "service": "Vaksinasi",
        "clinic": "Klinik Hewan PetPro Denpasar",
        "start": "2024-12-18T09:00:00+08:00",
        "amount": "150000.00",
    }
    ids = [e.id for e in ignored]
    rows: list[tuple] = []

    async def all_acknowledged() -> bool:  # handled concurrently: in no particular order
        rows[:] = await stack.rows("SELECT event_type FROM inbox WHERE event_id = ANY(%s)", ids)
        return len(rows) == len(ignored)

    await wait_until(all_acknowledged, "the ignored events in the inbox")
    assert sorted(r[0] for r in rows) == sorted(e.type for e in ignored)
    assert await listed(stack, rider) == [booking]


async def test_an_unreadable_event_goes_to_the_dead_letter_queue(stack):
    poison = event("journey.checked_in", "x", checked_in("not-a-uuid"))
    await stack.publish(poison)
    dlq = dead_letter_queue(consumers.queue_name(stack.settings.events_exchange))
    connection = await bus.connect(stack.settings.amqp_url, robust=False)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(dlq, passive=True)
        letter: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def dead_lettered() -> bool:
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                letter.append(message)
            return bool(letter)

        await wait_until(dead_lettered, "the poison event in the DLQ")
    finally:
        await bus.close_quietly(connection)
    assert letter[0].message_id == poison.id
    assert "not a UUID" in str(letter[0].headers["x-tiket-error"])
    assert await stack.rows("SELECT 1 FROM inbox WHERE event_id = %s", poison.id) == []


async def test_smtp_down_fails_after_the_retries_and_an_operator_retry_sends_once(stack):
    rider = await stack.new_rider()
    user = await stack.contact(rider)
    stack.smtp_proxy.cut()
    try:
        await stack.publish(event("journey.checked_in", rider, checked_in(rider)))
        [failed] = await settled(stack, rider)
    finally:
        stack.smtp_proxy.restore()
    assert failed.status == pb.NOTIFICATION_STATUS_FAILED
    email = next(d for d in failed.deliveries if d.channel == pb.CHANNEL_EMAIL)
    assert (email.status, email.attempts) == (pb.DELIVERY_STATUS_FAILED, 3)
    assert email.last_error
    attempts = await stack.rows(
        "SELECT attempt, outcome::text FROM delivery_attempts"
        " WHERE notification_id = %s AND channel = 'email' ORDER BY id",
        failed.id,
    )
    assert attempts == [(1, "failed"), (2, "failed"), (3, "failed")]
    assert stack.smtp.to(user.email) == []

    retry = pb.RetryNotificationRequest(notification_id=failed.id)
    retried = await stack.call("RetryNotification", retry, Role.OPERATOR, "ops")
    assert retried.status == pb.NOTIFICATION_STATUS_PENDING
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stack.call("RetryNotification", retry, Role.OPERATOR, "ops")
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    [sent] = await settled(stack, rider)
    assert sent.status == pb.NOTIFICATION_STATUS_SENT
    assert len(stack.smtp.to(user.email)) == 1
    assert len(stack.webhook.to(rider)) == 1  # push was delivered the first time, not again


async def test_channels_without_an_address_are_skipped(stack):
    rider = await stack.new_rider(email_address=False)
    stranger = str(uuid.uuid4())  # the user service does not know them
    for user_id in (rider, stranger):
        await stack.publish(event("journey.checked_in", user_id, checked_in(user_id)))
    [mine] = await settled(stack, rider)
    assert mine.status == pb.NOTIFICATION_STATUS_SENT
    assert {d.channel: d.status for d in mine.deliveries} == {
        pb.CHANNEL_EMAIL: pb.DELIVERY_STATUS_SKIPPED,
        pb.CHANNEL_PUSH: pb.DELIVERY_STATUS_SENT,
        pb.CHANNEL_SMS: pb.DELIVERY_STATUS_SENT,
    }
    [theirs] = await settled(stack, stranger)
    statuses = {d.channel: (d.status, d.last_error) for d in theirs.deliveries}
    assert statuses[pb.CHANNEL_EMAIL] == (pb.DELIVERY_STATUS_SKIPPED, f"user {stranger} not found")
    assert statuses[pb.CHANNEL_PUSH][0] == pb.DELIVERY_STATUS_SENT


async def test_a_provider_refusal_fails_the_channel_without_retrying(stack):
    rider = await stack.new_rider()
    await stack.call(
        "SetPreferences",
        pb.SetPreferencesRequest(user_id=rider, muted_channels=[pb.CHANNEL_EMAIL, pb.CHANNEL_SMS]),
    )
    stack.webhook.status = 422
    try:
        await stack.publish(event("journey.checked_in", rider, checked_in(rider)))
        [refused] = await settled(stack, rider)
    finally:
        stack.webhook.status = 200
    assert refused.status == pb.NOTIFICATION_STATUS_FAILED
    [push] = refused.deliveries
    assert (push.status, push.attempts) == (pb.DELIVERY_STATUS_FAILED, 1)
    assert "HTTP 422" in push.last_error


async def test_two_replicas_send_every_delivery_exactly_once(stack):
    riders = [await stack.new_rider() for _ in range(4)]
    async with stack.replica():
        for _ in range(5):
            for rider in riders:
                await stack.publish(event("journey.checked_in", rider, checked_in(rider)))
        made = [n for rider in riders for n in await settled(stack, rider, count=5)]
    assert {n.status for n in made} == {pb.NOTIFICATION_STATUS_SENT}
    ids = {n.id for n in made}
    sent = [(b["notification_id"], b["channel"]) for b, _ in stack.webhook.calls]
    assert sorted(k for k in sent if k[0] in ids) == sorted(
        (i, channel) for i in ids for channel in ("push", "sms")
    )
    for rider in riders:
        assert len(stack.smtp.to((await stack.contact(rider)).email)) == 5
    attempts = await stack.rows(
        "SELECT count(*) FROM delivery_attempts WHERE notification_id = ANY(%s)", list(ids)
    )
    assert attempts == [(len(ids) * 3,)]


async def only_email(stack: Stack, rider: str) -> None:
    muted = [pb.CHANNEL_PUSH, pb.CHANNEL_SMS]
    await stack.call(
        "SetPreferences", pb.SetPreferencesRequest(user_id=rider, muted_channels=muted)
    )


async def test_a_recipient_refused_for_now_is_retried_and_one_refused_for_good_is_not(stack):
    later, never = await stack.new_rider(), await stack.new_rider()
    replies = {later: "450 4.2.0 Greylisted, try again", never: "550 5.1.1 No such mailbox"}
    for rider, reply in replies.items():
        await only_email(stack, rider)
        stack.smtp.refuse[(await stack.contact(rider)).email] = reply
    try:
        for rider in replies:
            await stack.publish(event("journey.checked_in", rider, checked_in(rider)))
        [[retried], [rejected]] = [await settled(stack, rider) for rider in replies]
    finally:
        stack.smtp.refuse.clear()
    for notification, attempts, code in ((retried, 3, "450"), (rejected, 1, "550")):
        assert notification.status == pb.NOTIFICATION_STATUS_FAILED
        [mail] = notification.deliveries
        assert (mail.status, mail.attempts) == (pb.DELIVERY_STATUS_FAILED, attempts)
        assert code in mail.last_error


def push_draft(user_id: str, event_id: uuid.UUID | None = None) -> Draft:
    return Draft(
        event_id=event_id or uuid.uuid4(),
        event_type="journey.checked_in",
        type=NotificationType.CHECKIN,
        user_id=uuid.UUID(user_id),
        message="Anda check-in.",
        language="id",
        terminal_code=None,
        reference=None,
        metadata={},
        channels=[Channel.PUSH],
    )


async def test_a_replayed_event_cannot_make_a_second_notification_or_delivery(stack):
    """Whatever gets past the inbox (a queue renamed, an event replayed into another
    consumer), the store keeps one notification, and one delivery per channel, per event and
    rider."""
    rider, other = await stack.new_rider(), await stack.new_rider()
    event_id = uuid.uuid4()
    async with stack.database() as conn:
        for drafts in ([push_draft(rider, event_id)], [push_draft(rider, event_id)] * 2):
            async with conn.transaction():
                await store.insert_notifications(conn, drafts)
        async with conn.transaction():
            await store.insert_notifications(conn, [push_draft(other, event_id)])
    [mine], [theirs] = await settled(stack, rider), await settled(stack, other)
    assert [len(mine.deliveries), len(theirs.deliveries)] == [1, 1]
    assert len(stack.webhook.to(rider)) == 1


async def test_a_claim_whose_worker_died_is_sent_once_its_lease_is_over(stack):
    """A worker claims a delivery and dies before recording it: the delivery is not lost (the
    running worker takes it once the lease is over, as attempt 2), and a late result of the
    dead claim changes nothing."""
    rider = await stack.new_rider()
    async with stack.database() as conn:
        async with conn.transaction():
            await store.insert_notifications(conn, [push_draft(rider)])
            claims = await store.claim_due(
                conn, 100, timedelta(milliseconds=300), stack.config.max_attempts
            )
        [dead] = [c for c in claims if str(c.user_id) == rider]
        [sent] = await settled(stack, rider)
        [push] = sent.deliveries
        assert (sent.status, push.status, push.attempts) == (
            pb.NOTIFICATION_STATUS_SENT,
            pb.DELIVERY_STATUS_SENT,
            2,
        )
        late = Attempt(Outcome.FAILED, error="late")
        async with conn.transaction():
            await store.record_results(
                conn, [store.Result(dead, late, DeliveryStatus.FAILED, None)]
            )
    assert await listed(stack, rider) == [sent]
    assert len(stack.webhook.to(rider)) == 1
    attempts = await stack.rows(
        "SELECT attempt, outcome::text FROM delivery_attempts WHERE notification_id = %s",
        sent.id,
    )
    assert attempts == [(2, "sent")]


async def test_a_delivery_whose_worker_dies_on_every_attempt_fails_after_the_last(stack):
    """Claimed `max_attempts` times by workers that all died before recording an outcome: the
    delivery is failed (and can be retried by an operator), never claimed forever."""
    rider = await stack.new_rider()
    async with stack.database() as conn, conn.transaction():
        await store.insert_notifications(conn, [push_draft(rider)])
        for _ in range(stack.config.max_attempts):  # each lease over at once
            claims = await store.claim_due(conn, 100, timedelta(0), stack.config.max_attempts)
            assert [c for c in claims if str(c.user_id) == rider]
    [failed] = await settled(stack, rider)
    [push] = failed.deliveries
    assert (failed.status, push.status, push.attempts) == (
        pb.NOTIFICATION_STATUS_FAILED,
        pb.DELIVERY_STATUS_FAILED,
        stack.config.max_attempts,
    )
    assert f"no outcome after {stack.config.max_attempts} attempts" in push.last_error
    assert stack.webhook.to(rider) == []
