"""The gate agent: decides each tap online within the deadline, else offline from SQLite,
and keeps the snapshot fresh, the offline taps uploaded and the fare service told how the
gate is (heartbeat), in the background."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tiket.fare.v1 import fare_pb2

from gate import clock, messages, offline_db, snapshot, sync
from gate.config import GateConfig
from gate.decide import Direction
from gate.local_taps import Tap, decide_offline, record_online
from gate.mesh import UNREACHABLE, Mesh
from gate.offline_db import OfflineDb, now, set_time, set_value, to_cents
from gate.online import NoAnswer, OnlineAnswer, tap_online
from libs.config import ConfigError, Settings
from libs.periodic import Periodic

log = logging.getLogger(__name__)
CARD = re.compile(r"^[A-Z0-9]{8,20}$")
JOURNEY_SERVICE = "tiket.journey.v1.JourneyService"
# Of the deadline, what the offline path keeps for itself when the server does not answer.
OFFLINE_RESERVE = 0.05
# A given token this close to its expiry is warned of (heartbeats come every 15 s).
TOKEN_WARNING = timedelta(hours=1)
ASKED = {"in": Direction.CHECK_IN, "out": Direction.CHECK_OUT}
REGISTERED_DIRECTIONS = {
    fare_pb2.GATE_TYPE_ENTRY: "entry",
    fare_pb2.GATE_TYPE_EXIT: "exit",
    fare_pb2.GATE_TYPE_BIDIRECTIONAL: "both",
}


@dataclass(frozen=True)
class Decision:
    open: bool
    card_id: str
    direction: Direction | None
    # online: the journey service decided; offline: the snapshot did; gate: refused before
    # asking anyone (a malformed card, a wrong direction)
    mode: str
    reason: str = ""
    # held at a check-in, charged at an online check-out
    amount: Decimal | None = None
    tap_id: str = ""

    def render(self, lang: str) -> str:
        """One line for the screen and the log: OPEN/CLOSED, the card, which way, how it was
        decided, then the rider's words (and the reason code, for staff)."""
        way = {Direction.CHECK_IN: "in", Direction.CHECK_OUT: "out", None: "-"}[self.direction]
        if self.open:
            text = messages.welcome(self.direction is Direction.CHECK_IN, self.amount, lang)
        else:
            text = f"{messages.refusal(self.reason, lang)} ({self.reason})"
        head = "OPEN" if self.open else "CLOSED"
        return f"{head:<6} {self.card_id} {way:<3} [{self.mode}] {text}"


class GateAgent:
    def __init__(self, config: GateConfig, settings: Settings) -> None:
        self.config = config
        self.db = OfflineDb(config.sqlite_path(settings.state_dir))
        self.mesh = Mesh(config, settings)
        # Optimistic: the first tap asks the server; one without an answer makes it False.
        self.online = True
        # An online answer this process has written down for `tiket gate status`.
        self._online_noted = False
        self._told: set[str] = set()  # reasons staff were warned of (once a run)
        # A fault that is not the network (our token refused, a broken answer): heartbeat ERROR.
        self.problem = ""
        self._jobs: list[Periodic] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.sync_job = Periodic("gate-sync", self._guarded("sync", self.sync), config.sync_seconds)
        self.refresh_job = Periodic(
            "gate-users", self._guarded("users", self.refresh_users), config.refresh_seconds
        )

    @property
    def online_timeout(self) -> float:
        return max(self.config.deadline - OFFLINE_RESERVE, self.config.deadline / 2)

    async def start(self, background: bool = True) -> None:
        """Open the SQLite file (its rules from the config), learn the gate's direction when
        none is configured; with `background`, start keeping it fresh, uploading and
        reporting."""
        self.mesh.credential.token()  # no usable token stops the agent now, not at a tap
        await self.db.open(self.config.rules)
        if not self.config.direction:
            self.config = replace(self.config, direction=await self._registered_direction())
        if not background:
            return
        c = self.config
        fares = Periodic(
            "gate-fares", self._guarded("fares", self.refresh_fares), c.fare_refresh_seconds
        )
        heartbeat = Periodic(
            "gate-heartbeat", self._guarded("heartbeat", self.heartbeat), c.heartbeat_seconds
        )
        probe = Periodic("gate-probe", self.probe, c.probe_seconds)
        self._jobs = [self.refresh_job, fares, self.sync_job, heartbeat, probe]
        for job in self._jobs:
            await job.start()

    async def stop(self) -> None:
        for job in self._jobs:
            await job.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.mesh.close()
        await self.db.close()

    # --- taps ------------------------------------------------------------------------

    async def tap(
        self, card_id: str, asked: str | None = None, tapped_at: datetime | None = None
    ) -> Decision:
        """Decide a tap of `card_id`; `asked` is "in" or "out" (needed at a gate that goes
        both ways, checked against the gate's direction otherwise). `tapped_at`: when the
        reader read the card (default now; tests and benchmarks replay scripted times)."""
        tapped_at = tapped_at or now()
        direction, refusal = self._direction(asked)
        if not refusal and not CARD.fullmatch(card_id):
            refusal = "UNKNOWN_CARD"
        if refusal:
            return Decision(False, card_id, direction, "gate", refusal)
        assert direction is not None
        c = self.config
        tap = Tap(str(uuid.uuid4()), card_id, direction, tapped_at, c.terminal_code, c.gate_code)
        if self.online:
            decided = await self._decide_online(tap)
            if decided is not None:
                return decided
        return await self._decide_offline(tap)

    async def _decide_online(self, tap: Tap) -> Decision | None:
        """The journey service's decision; None when it gave none in time (then offline)."""
        try:
            answer = await tap_online(self.mesh, tap, self.online_timeout)
        except NoAnswer as no_answer:
            self._went_offline(str(no_answer))
            return None
        self._came_online()
        self._tell_staff(answer)
        if answer.open:
            held = answer.amount if tap.direction is Direction.CHECK_IN else Decimal(0)
            try:
                await self.db.run(record_online, tap, to_cents(held or Decimal(0)), now())
            except sqlite3.Error as exc:  # the server decided and keeps the tap: it stands
                self._storage_failed(exc)
            else:
                self._storage_works()
        return Decision(
            answer.open,
            tap.card_id,
            tap.direction,
            "online",
            answer.reason,
            answer.amount,
            tap.tap_id,
        )

    async def _decide_offline(self, tap: Tap) -> Decision:
        """From the SQLite file; CLOSED (GATE_ERROR) when the file fails: a tap that cannot
        be recorded for upload must not open the gate."""
        try:
            verdict = await self.db.run(decide_offline, tap)
        except sqlite3.Error as exc:
            self._storage_failed(exc)
            return Decision(False, tap.card_id, tap.direction, "offline", "GATE_ERROR", None)
        self._storage_works()
        if verdict.reason == "NO_SNAPSHOT":
            self._warn_once(
                verdict.reason,
                "no snapshot of cards and fares yet, so offline taps are refused; "
                "`tiket gate serve` loads one while the network answers",
            )
        # Offline, the rider sees what was held at an entry; an exit's fare is the server's.
        shown = verdict.offline_amount if tap.direction is Direction.CHECK_IN else None
        return Decision(
            verdict.open, tap.card_id, tap.direction, "offline", verdict.reason, shown, tap.tap_id
        )

    def _tell_staff(self, answer: OnlineAnswer) -> None:
        """Faults of the gate's own that an online answer reveals, warned of once."""
        if answer.clock_refused:
            self._warn_once(
                "CLOCK",
                f"the journey service refuses this gate's clock ({answer.clock_refused})"
                ": online taps are timed by the server's clock meanwhile, but offline ones "
                "by this wrong one (their fares and order); set the clock right (NTP)",
            )
        if answer.reason == "GATE_NOT_REGISTERED":
            self._warn_once(
                answer.reason,
                f"the journey service does not know this gate ({answer.detail}): "
                "register it (FareService/RegisterGate) or correct "
                "TIKET_GATE_TERMINAL and TIKET_GATE_CODE",
            )

    def _storage_failed(self, exc: sqlite3.Error) -> None:
        """The SQLite file failed a tap (disk full, permissions, a damaged file): an ERROR
        heartbeat until it works again, and a line for staff at each failure."""
        self.problem = f"storage: {exc}"
        log.error(
            "gate: the SQLite file %s failed (%s): offline taps are refused until it works; "
            "check its disk and permissions",
            *(self.db.path, exc),
        )

    def _storage_works(self) -> None:
        if self.problem.startswith("storage:"):
            self.problem = ""

    def _warn_once(self, reason: str, message: str) -> None:
        """Tell staff of a fault behind `reason` once a run, not at every rider's tap."""
        if reason not in self._told:
            self._told.add(reason)
            log.warning("gate: %s", message)

    def _direction(self, asked: str | None) -> tuple[Direction | None, str]:
        gate = self.config.direction
        if asked is None:
            if gate == "both":
                return None, "DIRECTION_REQUIRED"
            return (Direction.CHECK_IN if gate == "entry" else Direction.CHECK_OUT), ""
        direction = ASKED[asked]
        allowed = {"entry": Direction.CHECK_IN, "exit": Direction.CHECK_OUT}.get(gate)
        if allowed is not None and direction is not allowed:
            return direction, "WRONG_GATE_TYPE"
        return direction, ""

    # --- link state ------------------------------------------------------------------

    def _went_offline(self, why: str) -> None:
        if self.online:
            log.warning("gate: the journey service gave no answer (%s): deciding offline", why)
            self.online = False
            self._remember_mode()

    def _came_online(self) -> None:
        if not self.online:
            log.warning("gate: the journey service answers again: deciding online")
            self.online = True
            self._remember_mode()
            self.sync_job.wake()
            self.refresh_job.wake()
        elif not self._online_noted:  # the first answer (`tiket gate tap` has only that one)
            self._remember_mode()
        self._online_noted = True

    def _remember_mode(self) -> None:
        """For `tiket gate status`; off the tap's path (queued after its own SQLite work)."""
        task = asyncio.create_task(self.db.run(_write_mode, self.online))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def probe(self) -> int:
        """While offline: does the journey service answer within the deadline again?"""
        if self.online:
            return 0
        health = health_pb2_grpc.HealthStub(self.mesh.journey_channel)
        try:
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service=JOURNEY_SERVICE),
                timeout=self.config.deadline,
            )
        except aio.AioRpcError:
            return 0
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            self._came_online()
        return 0

    # --- background work -------------------------------------------------------------

    async def sync(self) -> int:
        """Upload a batch of offline taps (while online); the number answered."""
        if not self.online:
            return 0
        try:
            done = await sync.upload_batch(
                self.db, self.mesh, self.config.terminal_code, self.config.gate_code
            )
        except sync.UploadDeferred as deferred:
            if deferred.code in UNREACHABLE:
                self._went_offline(f"SyncOfflineTaps: {deferred.code.name}")
            return 0
        if done:
            self.refresh_job.wake()  # the snapshot catches up with what was applied
        return done if done >= sync.BATCH else 0

    async def refresh_users(self) -> int:
        await snapshot.refresh_users(self.db, self.mesh)
        return 0

    async def refresh_fares(self) -> int:
        await snapshot.refresh_fares(self.db, self.mesh, self.config.terminal_code)
        return 0

    async def heartbeat(self) -> int:
        self._check_token()
        await self._report()
        await self.db.run(_write_mode, self.online)
        return 0

    def _check_token(self) -> None:
        """A token the gate was given (not one it renews) that expires soon, or has: staff
        are told before the services start refusing it and every tap goes offline."""
        expires = self.mesh.credential.expires_at()
        if expires is None:
            return
        left = expires - now()
        renew = "renew it (TIKET_GATE_TOKEN_FILE is read again when it changes)"
        if left <= timedelta(0):
            self._warn_once(
                "TOKEN_EXPIRED", f"its token expired at {expires:%Y-%m-%d %H:%M} UTC: {renew}"
            )
        elif left <= TOKEN_WARNING:
            self._warn_once(
                "TOKEN_EXPIRING",
                f"its token expires at {expires:%Y-%m-%d %H:%M} UTC, in {left.seconds // 60} min: {renew}",
            )

    async def _report(self) -> fare_pb2.Gate:
        """Heartbeat: how the gate is, to the fare service; its registry entry back, whose
        stamp (last_heartbeat_at, by the server's clock) measures this gate's clock."""
        if self.problem:
            status = fare_pb2.GATE_STATUS_ERROR
        elif self.online:
            status = fare_pb2.GATE_STATUS_ONLINE
        else:
            status = fare_pb2.GATE_STATUS_OFFLINE
        sent = now()
        gate = await self.mesh.fares.Heartbeat(
            fare_pb2.HeartbeatRequest(
                terminal_code=self.config.terminal_code,
                gate_code=self.config.gate_code,
                status=status,
            ),
            timeout=max(self.config.deadline, 2.0),
            metadata=self.mesh.metadata(),
        )
        if gate.HasField("last_heartbeat_at"):
            stamped = gate.last_heartbeat_at.ToDatetime(UTC)
            await self._clock_measured(clock.skew_seconds(sent, now(), stamped))
        return gate

    async def _clock_measured(self, skew: float) -> None:
        await self.db.run(set_value, offline_db.CLOCK_SKEW, str(round(skew * 1000)))
        if abs(skew) > clock.TOLERANCE_SECONDS:
            self._warn_once("CLOCK_SKEW", f"this gate's clock is {clock.describe(skew)}")

    async def _registered_direction(self) -> str:
        """The direction kept in the SQLite file, else the gate's type in the fare service's
        registry (told by a first heartbeat), then kept: a registered gate's type never
        changes, so the registry is asked once, not at every start. ConfigError when the
        gate is not registered, or the registry does not answer a gate that never asked."""
        kept = await self.db.run(offline_db.get_value, offline_db.DIRECTION)
        if kept:
            return kept
        try:
            gate = await self._report()
        except aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                raise ConfigError(
                    f"gate {self.config.subject} is not in the fare service's registry "
                    f"({error.details()}): register it (FareService/RegisterGate), or set "
                    "TIKET_GATE_DIRECTION (--direction)"
                ) from None
            raise ConfigError(
                f"gate {self.config.subject} has no direction yet: the fare service did "
                f"not tell it ({error.code().name}: {error.details()}); set "
                "TIKET_GATE_DIRECTION (--direction) or start it once with the network"
            ) from None
        direction = REGISTERED_DIRECTIONS.get(gate.type)
        if direction is None:
            raise ConfigError(
                f"the fare service gave gate {self.config.subject} no type; set "
                "TIKET_GATE_DIRECTION (--direction)"
            )
        await self.db.run(_keep_direction, direction)
        return direction

    def _guarded(
        self, what: str, work: Callable[[], Awaitable[int]]
    ) -> Callable[[], Awaitable[int]]:
        """`work` with gRPC failures noted instead of raised: a network that is gone is the
        normal offline case (tap decisions log the change), anything else is a problem the
        heartbeat reports as ERROR until `work` succeeds again."""

        async def run() -> int:
            try:
                done = await work()
            except aio.AioRpcError as error:
                code = error.code()
                if code not in UNREACHABLE and code is not grpc.StatusCode.UNIMPLEMENTED:
                    self.problem = f"{what}: {code.name}: {error.details()}"
                    log.error("gate: %s", self.problem)
                return 0
            if self.problem.startswith(f"{what}:"):
                self.problem = ""
            return done

        return run


def _keep_direction(conn, direction: str) -> None:
    with offline_db.transaction(conn):
        set_value(conn, offline_db.DIRECTION, direction)


def _write_mode(conn, online: bool) -> None:
    with offline_db.transaction(conn):
        set_value(conn, offline_db.MODE, "online" if online else "offline")
        if online:
            set_time(conn, offline_db.LAST_ONLINE, now())
