"""Use cases of the user & wallet service: each one transaction that changes state, writes
its events to the outbox and keeps the cache honest."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import orjson
from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

from libs.cache import Cache
from libs.db.transaction import in_statement, in_transaction, read
from libs.errors import AlreadyExists, found
from services.user import domain, events, store
from services.user.domain import Hold, LedgerEntry, LedgerKind, Pet, User, UserStatus, Wallet

USER_CACHE_TTL = 3600  # seed 004: user:{id}, 1 h (status, never balance)
SWEEP_BATCH = 500
# Users per statement of ExportUsers: a few hundred kB in memory per export at a time.
EXPORT_PAGE = 1000


class UserApp:
    def __init__(self, pool: AsyncConnectionPool, cache: Cache) -> None:
        self.pool = pool
        self.cache = cache

    # --- users ---------------------------------------------------------------------

    async def create_user(
        self,
        card_id: str,
        full_name: str,
        email: str | None,
        phone: str | None,
        request_id: str | None,
    ) -> User:
        fields = {"card_id": card_id, "full_name": full_name, "email": email, "phone": phone}

        async def work(conn: AsyncConnection) -> User:
            if request_id and (first := await store.user_by(conn, "create_request_id", request_id)):
                return domain.same_retry(first, "user", request_id, **fields)
            try:
                async with conn.transaction():
                    user = await store.insert_user(
                        conn, card_id, full_name, email, phone, request_id
                    )
            except errors.UniqueViolation:
                # A concurrent first attempt of this same request may have won the race.
                if request_id and (
                    first := await store.user_by(conn, "create_request_id", request_id)
                ):
                    return domain.same_retry(first, "user", request_id, **fields)
                raise AlreadyExists(f"card {card_id} is already registered") from None
            await events.user_created(conn, user)
            return user

        return await in_transaction(self.pool, work)

    async def get_user(self, user_id: uuid.UUID) -> User:
        user = await self.cache.get_or_load(
            f"user:{user_id}",
            USER_CACHE_TTL,
            lambda: read(self.pool, store.user_by, "id", user_id),
            _encode_user,
            _decode_user,
        )
        return found(user, "user", user_id)

    async def get_user_by_card(self, card_id: str) -> User:
        user = await read(self.pool, store.user_by, "card_id", card_id)
        return found(user, "card", card_id)

    async def list_users(
        self, status: UserStatus | None, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[User]:
        return await read(self.pool, store.list_users, status, after, limit)

    async def change_status(
        self, user_id: uuid.UUID, status: UserStatus, reason: str | None
    ) -> User:
        async def work(conn: AsyncConnection) -> User:
            before = found(await store.lock_wallet(conn, user_id), "user", user_id)
            domain.check_activation(before, status)
            user = await store.set_status(conn, user_id, status, reason)
            if before.status != status:
                await events.status_changed(conn, user, before.status)
            return user

        user = await in_transaction(self.pool, work)
        await self.cache.invalidate(f"user:{user_id}")
        return user

    # --- pets ----------------------------------------------------------------------

    async def add_pet(
        self,
        user_id: uuid.UUID,
        name: str,
        species: str,
        breed: str | None,
        birth_date: date | None,
        request_id: str | None,
    ) -> Pet:
        async def work(conn: AsyncConnection) -> Pet:
            found(await store.user_by(conn, "id", user_id), "user", user_id)
            pet = await store.insert_pet(
                conn, user_id, name, species, breed, birth_date, request_id
            )
            if pet is None:  # a retry: the first call's pet
                first = found(await store.pet_by_request(conn, request_id or ""), "pet")
                return domain.same_retry(
                    first,
                    "pet",
                    request_id or "",
                    user_id=user_id,
                    name=name,
                    species=species,
                    breed=breed,
                    birth_date=birth_date,
                )
            return pet

        return await in_transaction(self.pool, work)

    async def list_pets(self, user_id: uuid.UUID) -> list[Pet]:
        async def query(conn: AsyncConnection) -> list[Pet]:
            found(await store.user_by(conn, "id", user_id), "user", user_id)
            return await store.list_pets(conn, user_id)

        return await read(self.pool, query)

    # --- wallet --------------------------------------------------------------------

    async def get_wallet(self, user_id: uuid.UUID) -> Wallet:
        return found(await read(self.pool, store.wallet, user_id), "user", user_id)

    async def list_entries(
        self, user_id: uuid.UUID, before_id: int | None, limit: int
    ) -> list[LedgerEntry]:
        async def query(conn: AsyncConnection) -> list[LedgerEntry]:
            found(await store.user_by(conn, "id", user_id), "user", user_id)
            return await store.list_entries(conn, user_id, before_id, limit)

        return await read(self.pool, query)

    async def top_up(
        self, user_id: uuid.UUID, amount: Decimal, key: str, description: str | None
    ) -> LedgerEntry:
        return await self._move_money(
            user_id, LedgerKind.TOP_UP, amount, key, None, description or "Top-up"
        )

    async def charge(
        self,
        user_id: uuid.UUID,
        amount: Decimal,
        key: str,
        reference: str,
        description: str | None,
        *,
        allow_debt: bool = False,
    ) -> LedgerEntry:
        """`allow_debt`: a ride already taken, taken whole (domain.debt_change)."""
        return await self._move_money(
            user_id, LedgerKind.CHARGE, amount, key, reference, description, allow_debt
        )

    async def refund(
        self, user_id: uuid.UUID, amount: Decimal, key: str, reference: str, description: str | None
    ) -> LedgerEntry:
        return await self._move_money(
            user_id, LedgerKind.REFUND, amount, key, reference, description
        )

    async def _move_money(
        self,
        user_id: uuid.UUID,
        kind: LedgerKind,
        amount: Decimal,
        key: str,
        reference: str | None,
        description: str | None,
        allow_debt: bool = False,
    ) -> LedgerEntry:
        """Top-up, charge or refund: one ledger row, idempotent by (user, kind, key), and
        the status change of the debt rule (domain.debt_change) in the same transaction: a
        suspension before the money is taken, a lifting after it is credited (the database
        refuses an active card in debt at every statement)."""

        async def work(conn: AsyncConnection) -> tuple[LedgerEntry, bool]:
            wallet = found(await store.lock_wallet(conn, user_id), "user", user_id)
            if first := await store.entry_by_key(conn, user_id, kind, key):
                return domain.same_request(first, user_id, amount, reference), False
            if kind is LedgerKind.TOP_UP:
                domain.check_credit(wallet, amount, "top-up")
            elif kind is LedgerKind.CHARGE and not allow_debt:
                domain.require_active(wallet)
                domain.require_available(wallet, amount)
            elif kind is LedgerKind.REFUND:
                charged, refunded = await store.charged_and_refunded(conn, user_id, reference or "")
                domain.check_refund(charged, refunded, amount, reference or "")
                domain.check_credit(wallet, amount, "refund")
            signed = -amount if kind is LedgerKind.CHARGE else amount
            change = domain.debt_change(wallet, signed)
            if change is not None and change.suspends:
                await _debt_status(conn, wallet, change, signed)
            entry = await store.insert_entry(
                conn,
                user_id,
                kind,
                signed,
                reference=reference,
                idempotency_key=key,
                description=description,
            )
            after = Wallet(
                user_id, wallet.status, entry.balance_after, wallet.held, entry.created_at
            )
            await events.money_moved(conn, entry, after)
            if change is not None and not change.suspends:
                await _debt_status(conn, wallet, change, signed)
            return entry, change is not None

        entry, status_changed = await in_transaction(self.pool, work)
        if status_changed:
            await self.cache.invalidate(f"user:{user_id}")
        return entry

    # --- holds ---------------------------------------------------------------------

    async def place_hold(
        self,
        user_id: uuid.UUID,
        amount: Decimal,
        reference: str,
        reason: str | None,
        ttl: timedelta,
    ) -> tuple[Hold, Decimal]:
        """The hold (placed now, or by a first attempt with this reference) and the wallet's
        available balance after it. One statement (store.PLACE_HOLD); when it placed nothing,
        the hold already under the reference or the domain rule the wallet breaks says why."""
        hold = domain.new_hold(
            uuid.uuid4(), user_id, amount, reference, reason, datetime.now(UTC), ttl
        )

        async def work(conn: AsyncConnection) -> tuple[Wallet, Hold | None, bool] | None:
            return await store.place_hold(
                conn, hold, events.hold_staged("wallet.hold_placed", hold)
            )

        staged = await in_statement(self.pool, work)
        wallet, first, placed = found(staged, "user", user_id)
        if placed:
            return hold, wallet.available - amount
        if first is None:
            # Not in the statement's snapshot, but a concurrent first attempt with this
            # reference may have committed it while we waited for the wallet lock: then its
            # hold is why ours was not placed (and perhaps why the wallet now looks short).
            first = await read(self.pool, store.hold_by, "reference", reference)
        if first is not None:
            return domain.same_hold(first, user_id, amount), wallet.available
        domain.require_active(wallet)
        domain.require_available(wallet, amount)
        raise AssertionError(f"hold {reference} was neither placed nor refused")

    async def capture_hold(
        self, selector: tuple[str, object], final_amount: Decimal
    ) -> tuple[Hold, LedgerEntry | None, Wallet]:
        """The fast path: a hold that looks capturable is captured by one statement
        (store.CAPTURE_HOLD) that checks again. Anything else — a retry, a refusal, a hold
        that changed meanwhile — is decided under the hold's lock by the database's clock."""
        column, value = selector
        seen = found(await read(self.pool, store.hold_by, column, value), "hold", value)
        now = datetime.now(UTC)  # a guess: the statement's clock decides, and sets closed_at
        if domain.looks_capturable(seen, final_amount, now):
            captured = domain.captured(seen, final_amount, now)

            async def capture(conn: AsyncConnection):
                event = events.hold_staged("wallet.hold_captured", captured)
                return await store.capture_hold(conn, seen, final_amount, event)

            done = await in_statement(self.pool, capture)
            if done is not None:
                captured_at, entry, wallet = done
                return replace(captured, closed_at=captured_at), entry, wallet
        return await self._capture_locked(selector, final_amount)

    async def _capture_locked(
        self, selector: tuple[str, object], final_amount: Decimal
    ) -> tuple[Hold, LedgerEntry | None, Wallet]:
        async def work(conn: AsyncConnection) -> tuple[Hold, LedgerEntry | None, Wallet]:
            hold, now = await self._locked_hold(conn, selector)
            if not domain.check_capture(hold, final_amount, now):
                entry = await store.entry_of_hold(conn, hold.id)
                return hold, entry, found(await store.wallet(conn, hold.user_id), "wallet")
            captured = domain.captured(hold, final_amount, now)
            entry, wallet = await store.apply_capture(conn, captured)
            await events.hold_changed(conn, "wallet.hold_captured", captured, wallet.available)
            return captured, entry, wallet

        return await in_transaction(self.pool, work)

    async def release_hold(self, selector: tuple[str, object]) -> Hold:
        async def work(conn: AsyncConnection) -> Hold:
            hold, _ = await self._locked_hold(conn, selector)
            if not domain.check_release(hold):
                return hold
            [released] = await store.release_holds(conn, [hold.id], "released")
            wallet = found(await store.wallet(conn, hold.user_id), "wallet")
            await events.hold_changed(conn, "wallet.hold_released", released, wallet.available)
            return released

        return await in_transaction(self.pool, work)

    async def get_hold(self, selector: tuple[str, object]) -> Hold:
        column, value = selector
        return found(await read(self.pool, store.hold_by, column, value), "hold", value)

    async def release_expired_holds(self) -> int:
        """Release one batch of expired holds; return how many. Safe to run on every replica
        at once (SKIP LOCKED)."""

        async def work(conn: AsyncConnection) -> int:
            ids = await store.lock_expired_holds(conn, SWEEP_BATCH)
            if not ids:
                return 0
            released = await store.release_holds(conn, ids, "expired")
            available = await store.available_of(conn, [h.user_id for h in released])
            for hold in released:
                await events.hold_changed(
                    conn, "wallet.hold_released", hold, available[hold.user_id]
                )
            return len(released)

        return await in_transaction(self.pool, work)

    async def _locked_hold(
        self, conn: AsyncConnection, selector: tuple[str, object]
    ) -> tuple[Hold, datetime]:
        column, value = selector
        return found(await store.lock_hold(conn, column, value), "hold", value)

    # --- export --------------------------------------------------------------------

    async def export_users(
        self, since: datetime | None
    ) -> AsyncIterator[domain.UserSnapshot | datetime]:
        """Every user changed at or after `since`, then the watermark for the next export
        (the ExportUsersResponse comment in user.proto says what a reader may see). Read a
        page at a time, each page one short statement: no connection is held while the
        client reads, however slowly."""
        watermark = await read(self.pool, store.export_watermark)
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            page = await read(self.pool, store.snapshots_page, since, after, EXPORT_PAGE)
            for snapshot in page:
                yield snapshot
            if len(page) < EXPORT_PAGE:
                break
            after = (page[-1].updated_at, page[-1].user_id)
        yield watermark


async def _debt_status(
    conn: AsyncConnection, wallet: Wallet, change: domain.StatusChange, moved: Decimal
) -> None:
    """Apply the debt rule's status change, with its user.status_changed."""
    user = await store.set_status(conn, wallet.user_id, change.status, change.reason)
    await events.status_changed(conn, user, wallet.status, wallet.available + moved)


def _encode_user(user: User) -> bytes:
    return orjson.dumps(asdict(user), default=str)


def _decode_user(raw: bytes) -> User:
    data = orjson.loads(raw)
    return User(
        id=uuid.UUID(data["id"]),
        card_id=data["card_id"],
        full_name=data["full_name"],
        email=data["email"],
        phone=data["phone"],
        status=UserStatus(data["status"]),
        status_reason=data["status_reason"],
        registered_at=datetime.fromisoformat(data["registered_at"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
    )
