"""End to end, the event fan-out: real `tiket serve` processes of all five services, a ride
tapped through the real grpcurl binary, and what it becomes downstream — the rider's two
notifications (stored, emailed to a real SMTP server, sent to a local push/SMS webhook) and
the analytics figures — then a poison event dead-lettered, listed by `tiket dlq list` and
re-delivered by `tiket dlq replay` once its cause is fixed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import psycopg
import pytest
from aiosmtpd.controller import Controller
from tiket.events.v1 import wallet_pb2

from libs.config import Settings, load
from libs.events import bus
from libs.events.envelope import new_event
from tests.support.cleanup import remove_run
from tests.support.processes import free_port, grpcurl, service_process, tiket
from tests.support.settings import MeshEnv, isolated_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
SERVICES = ["user", "fare", "journey", "notification", "analytics"]
USER = "tiket.user.v1.UserService"
JOURNEY = "tiket.journey.v1.JourneyService"
NOTIFICATION = "tiket.notification.v1.NotificationService"
ANALYTICS = "tiket.analytics.v1.AnalyticsService"
RIDER_EMAIL = "siti.rahayu@example.com"  # CARD0002 of the demo data


class SmtpInbox:
    """What a real SMTP server (aiosmtpd) accepted."""

    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


class WebhookCalls(list):
    """The JSON bodies a local HTTP server received as the push/SMS provider."""

    def server(self) -> ThreadingHTTPServer:
        calls = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                calls.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@dataclass
class Mesh(MeshEnv):
    inbox: SmtpInbox
    webhook: WebhookCalls


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    inbox, webhook = SmtpInbox(), WebhookCalls()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    http = webhook.server()
    env = isolated_env(
        TIKET_NOTIFICATION_SMTP_HOST="127.0.0.1",
        TIKET_NOTIFICATION_SMTP_PORT=str(smtp.port),
        TIKET_NOTIFICATION_WEBHOOK_URL=f"http://127.0.0.1:{http.server_port}/notify",
        TIKET_ANALYTICS_RETRY_BACKOFF_SECONDS="0.05",
    )
    settings = load(env)
    smtp.start()
    threading.Thread(target=http.serve_forever, daemon=True).start()
    with contextlib.ExitStack() as stack:
        for name in SERVICES:
            child = stack.enter_context(service_process(name, env))
            env[f"TIKET_{name.upper()}_ADDR"] = child.address
        seeded = tiket("seed", env=env)
        assert "CARD0002" in seeded.stdout, seeded.stdout + seeded.stderr
        try:
            yield Mesh(env, load(env), inbox, webhook)
        finally:
            stack.close()
            smtp.stop()
            http.shutdown()
            asyncio.run(remove_run(settings, SERVICES))


def eventually(check: Callable[[], object], what: str, within: float = 30.0):
    """The first truthy result of `check`, polled; the test fails after `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out after {within:.0f} s waiting for {what}")


def today_in_jakarta() -> dict[str, int]:
    today = datetime.now(ZoneInfo("Asia/Jakarta")).date()
    return {"year": today.year, "month": today.month, "day": today.day}


@pytest.fixture(scope="module")
def ride(mesh) -> dict:
    """CARD0002 taps in at A and out at E through grpcurl; the rider as GetUser shows it."""
    rider = grpcurl(
        mesh.address("user"),
        f"{USER}/GetUser",
        token=mesh.token("admin", "e2e"),
        data={"card_id": "CARD0002"},
    )
    for method, terminal, gate in (("CheckIn", "A", "A-ENTRY-01"), ("CheckOut", "E", "E-EXIT-01")):
        grpcurl(
            mesh.address("journey"),
            f"{JOURNEY}/{method}",
            token=mesh.token("gate", f"{terminal}/{gate}"),
            data={
                "card_id": "CARD0002",
                "terminal_code": terminal,
                "gate_code": gate,
                "tap_id": str(uuid.uuid4()),
            },
        )
    return rider


def test_a_ride_becomes_two_stored_notifications_with_the_seed_texts(mesh, ride):
    token = mesh.token("user", ride["id"])  # the rider reads their own

    def journey_notifications() -> list[dict]:
        found = grpcurl(
            mesh.address("notification"),
            f"{NOTIFICATION}/ListNotifications",
            token=token,
            data={"user_id": ride["id"]},
        ).get("notifications", [])
        return [n for n in found if n["event_type"].startswith("journey.")]

    listed = eventually(lambda: len(journey_notifications()) == 2 and journey_notifications(), "2")
    texts = {n["event_type"]: n["message"] for n in listed}
    checked_in, checked_out = texts["journey.checked_in"], texts["journey.checked_out"]
    assert "Anda check-in di Terminal Utara pada" in checked_in
    assert "Saldo ditahan sementara Rp 12.000." in checked_in
    assert checked_out == (
        "Perjalanan selesai dari Terminal Utara ke Terminal Pusat. Tarif: Rp 12.000. "
        "Sisa saldo: Rp 88.000."  # CARD0002 starts with Rp 100.000
    )


def test_the_checkout_is_emailed_and_sent_to_the_push_and_sms_webhook(mesh, ride):
    def checkout_emails() -> list:
        return [
            m
            for m in mesh.inbox.messages
            if m["To"] == RIDER_EMAIL and "Perjalanan selesai" in m.get_content()
        ]

    [mail] = eventually(checkout_emails, "the check-out email")
    assert "Tarif: Rp 12.000. Sisa saldo: Rp 88.000." in mail.get_content()
    calls = eventually(
        lambda: [c for c in mesh.webhook if "Perjalanan selesai" in c.get("message", "")],
        "the check-out webhook calls",
    )
    assert {c["channel"] for c in calls} <= {"push", "sms"} and calls


def terminal_day(mesh, token: str, terminal: str, day: dict[str, int]) -> dict:
    """GetTerminalDailyMetrics of one terminal and day, through grpcurl."""
    [found] = grpcurl(
        mesh.address("analytics"),
        f"{ANALYTICS}/GetTerminalDailyMetrics",
        token=token,
        data={"terminal_code": terminal, "start_date": day, "end_date": day},
    )["days"]
    return found


def test_analytics_counts_the_check_in_the_check_out_and_the_trip(mesh, ride):
    operator = mesh.token("operator", "e2e")
    day = today_in_jakarta()

    def metrics(terminal: str) -> dict:
        return terminal_day(mesh, operator, terminal, day)

    eventually(lambda: metrics("E").get("checkouts") == "1", "the check-out at E")
    assert metrics("A").get("checkins") == "1"
    assert metrics("A").get("unique_users") == "1"
    routes = grpcurl(
        mesh.address("analytics"),
        f"{ANALYTICS}/GetRouteMatrix",
        token=operator,
        data={"start_date": day, "end_date": day},
    )["routes"]
    [trip] = [r for r in routes if (r["origin_code"], r["destination_code"]) == ("A", "E")]
    assert trip["trips"] == "1"
    assert trip["revenue"]["units"] == "12000"


def test_analytics_follows_a_journey_offline_taps_revise(mesh, ride):
    """CARD0003 taps out at E with no entry (incomplete, the penalty); B's offline gate then
    uploads the entry before it: the journey becomes B→E. E's figures count one exit tap for
    it, no incomplete journey and no penalty, and the route matrix the trip."""
    operator = mesh.token("operator", "e2e")
    day = today_in_jakarta()

    def metrics(terminal: str) -> dict:
        return terminal_day(mesh, operator, terminal, day)

    def tap(method: str, terminal: str, gate: str, data: dict) -> dict:
        return grpcurl(
            mesh.address("journey"),
            f"{JOURNEY}/{method}",
            token=mesh.token("gate", f"{terminal}/{gate}"),
            data={"terminal_code": terminal, "gate_code": gate, **data},
        )

    entered = datetime.now().astimezone() - timedelta(seconds=1)  # fares began with the mesh
    tap("CheckOut", "E", "E-EXIT-01", {"card_id": "CARD0003", "tap_id": str(uuid.uuid4())})
    eventually(lambda: metrics("E").get("incomplete_journeys") == "1", "the exit without entry")
    entry = {
        "tap_id": str(uuid.uuid4()),
        "card_id": "CARD0003",
        "direction": "TAP_DIRECTION_CHECK_IN",
        "tapped_at": entered.isoformat(),
    }
    [placed] = tap("SyncOfflineTaps", "B", "B-ENTRY-01", {"taps": [entry]})["results"]
    assert placed["outcome"] == "TAP_OUTCOME_ADJUSTED", placed  # the penalty refunded

    def revised() -> dict | None:
        found = metrics("E")
        return found if found.get("incomplete_journeys", "0") == "0" else None

    e = eventually(revised, "the exit without entry taken back")
    assert e.get("checkouts") == "2"  # the ride's and CARD0003's
    assert e.get("unfinished_fares", {}).get("units", "0") == "0"
    routes = grpcurl(
        mesh.address("analytics"),
        f"{ANALYTICS}/GetRouteMatrix",
        token=operator,
        data={"start_date": day, "end_date": day, "origin_code": "B"},
    )["routes"]
    assert [(r["destination_code"], r["trips"]) for r in routes] == [("E", "1")]


def test_a_poison_event_is_dead_lettered_listed_and_replayed_once_fixed(mesh):
    """The 'cause': a faulty trigger in the analytics database refuses one event. It fails
    every retry and waits in the DLQ; `tiket dlq list` shows it and why; the trigger is
    dropped and `tiket dlq replay analytics` delivers it, stored exactly once."""
    event = new_event("tiket.e2e", "user.created", "u-poison", wallet_pb2.UserCreated())
    analytics_db = mesh.settings.database_url("analytics")
    with psycopg.connect(analytics_db, autocommit=True) as conn:
        conn.execute(
            f"""CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                  IF NEW.event_id = '{event.id}' THEN
                    RAISE EXCEPTION 'disk quota exceeded (injected)';
                  END IF;
                  RETURN NEW;
                END $$;
                CREATE TRIGGER refuse_poison BEFORE INSERT ON analytics_events
                  FOR EACH ROW EXECUTE FUNCTION refuse_poison();"""
        )
    asyncio.run(publish(mesh.settings, event.id, event.type, event.to_json()))

    def listing() -> str | None:
        out = tiket("dlq", "list", "analytics", env=mesh.env).stdout
        return out if event.id in out else None

    shown = eventually(listing, "the poison event in the analytics DLQ")
    assert "disk quota exceeded (injected)" in shown
    assert "user.created" in shown
    # --full: the whole error (a table cuts it) and the event as it waits, to read its data
    body = f'"id":"{event.id}"'
    full = tiket("dlq", "list", "analytics", "--full", env=mesh.env).stdout
    assert body in full.replace(" ", "") and body not in shown.replace(" ", "")

    with psycopg.connect(analytics_db, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse_poison ON analytics_events")
    replayed = tiket("dlq", "replay", "analytics", env=mesh.env)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 event(s)" in replayed.stdout

    def stored() -> int:
        with psycopg.connect(analytics_db) as conn:
            row = conn.execute(
                "SELECT count(*) FROM analytics_events WHERE event_id = %s", (event.id,)
            ).fetchone()
        return row[0] if row else 0

    assert eventually(stored, "the replayed event stored") == 1
    assert event.id not in tiket("dlq", "list", "analytics", env=mesh.env).stdout


def test_dlq_commands_explain_an_unknown_target(mesh):
    done = tiket("dlq", "replay", "nosuchservice", env=mesh.env)
    assert done.returncode != 0
    assert "no consumer queue matches 'nosuchservice'" in done.stderr
    assert "analytics" in done.stderr


def test_a_body_no_fix_makes_right_is_discarded_by_its_id(mesh):
    """A message that is no event at all (dead-lettered at once) cannot be replayed into
    anything but the DLQ again: `tiket dlq discard` removes just it, after which TiketDeadLetters
    can clear; it names what it did not find and refuses to guess without ids or --all."""
    garbage = f"garbage-{uuid.uuid4()}"
    asyncio.run(publish(mesh.settings, garbage, "journey.checked_in", b"{not json"))

    def listed() -> str | None:
        out = tiket("dlq", "list", "notification", env=mesh.env).stdout
        return out if garbage in out else None

    eventually(listed, "the garbage in the notification DLQ")
    refused = tiket("dlq", "discard", "notification", env=mesh.env)
    assert refused.returncode != 0 and "or --all" in refused.stderr
    done = tiket("dlq", "discard", "notification", garbage, env=mesh.env)
    assert done.returncode == 0, done.stderr
    assert "discarded 1 event(s)" in done.stdout
    assert garbage not in tiket("dlq", "list", "notification", env=mesh.env).stdout
    again = tiket("dlq", "discard", "notification", garbage, env=mesh.env)
    assert again.returncode != 0 and f"not in the dead letters of 'notification': {garbage}" in (
        again.stderr
    )


async def publish(settings: Settings, event_id: str, event_type: str, body: bytes) -> None:
    connection = await bus.connect(settings.amqp_url, robust=False)
    try:
        channel = await bus.open_channel(connection)
        exchange = await bus.declare_events_exchange(channel, settings.events_exchange)
        message = bus.event_message(body, event_id=event_id, event_type=event_type)
        await exchange.publish(message, event_type, mandatory=True)
    finally:
        await bus.close_quietly(connection)
