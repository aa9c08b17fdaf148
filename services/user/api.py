"""tiket.user.v1.UserService: proto <-> domain, input validation. Errors raised here or
below are turned into status codes by the shared interceptor."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

from grpc import aio
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs import paging
from libs.auth import Role, current_principal
from libs.errors import InvalidArgument, PermissionDenied
from libs.money import to_decimal, to_money
from libs.timestamps import to_timestamp
from libs.validation import (
    card_id_field,
    duration_field,
    key_field,
    page_size_field,
    required_text_field,
    text_field,
    timestamp_field,
    uuid_field,
)
from services.user import domain, messages
from services.user.app import UserApp
from services.user.domain import UserStatus


class UserApi(user_pb2_grpc.UserServiceServicer):
    def __init__(self, app: UserApp) -> None:
        self.app = app

    # --- users ---------------------------------------------------------------------

    async def CreateUser(self, request: user_pb2.CreateUserRequest, context: aio.ServicerContext):
        user = await self.app.create_user(
            card_id=card_id_field(request.card_id),
            full_name=required_text_field(request.full_name, "full_name", max_len=255),
            email=_email(request.email),
            phone=_phone(request.phone),
            request_id=text_field(request.request_id, "request_id", max_len=100),
        )
        return messages.user(user)

    async def GetUser(self, request: user_pb2.GetUserRequest, context: aio.ServicerContext):
        key = request.WhichOneof("key")
        if key == "user_id":
            user = await self.app.get_user(uuid_field(request.user_id, "user_id"))
        elif key == "card_id":
            user = await self.app.get_user_by_card(card_id_field(request.card_id))
        else:
            raise InvalidArgument.field("key", "set user_id or card_id")
        return messages.user(user)

    async def ListUsers(self, request: user_pb2.ListUsersRequest, context: aio.ServicerContext):
        status = _status(request.status, "status", allow_unspecified=True)
        limit = page_size_field(request.page_size)
        after = _after_user(request.page_token)
        users = await self.app.list_users(status, after, limit + 1)
        token = ""
        if len(users) > limit:
            users = users[:limit]
            token = paging.encode(users[-1].registered_at.isoformat(), users[-1].id)
        return user_pb2.ListUsersResponse(
            users=[messages.user(u) for u in users], next_page_token=token
        )

    async def ChangeUserStatus(
        self, request: user_pb2.ChangeUserStatusRequest, context: aio.ServicerContext
    ):
        status = _status(request.status, "status", allow_unspecified=False)
        reason = text_field(request.reason, "reason", max_len=255)
        if status is not UserStatus.ACTIVE and not reason:
            raise InvalidArgument.field("reason", f"is required to make a card {status}")
        user = await self.app.change_status(uuid_field(request.user_id, "user_id"), status, reason)
        return messages.user(user)

    # --- pets ----------------------------------------------------------------------

    async def AddPet(self, request: user_pb2.AddPetRequest, context: aio.ServicerContext):
        pet = await self.app.add_pet(
            user_id=uuid_field(request.user_id, "user_id"),
            name=required_text_field(request.name, "name", max_len=100),
            species=required_text_field(request.species, "species", max_len=50),
            breed=text_field(request.breed, "breed", max_len=100),
            birth_date=_birth_date(request),
            request_id=text_field(request.request_id, "request_id", max_len=100),
        )
        return messages.pet(pet)

    async def ListPets(self, request: user_pb2.ListPetsRequest, context: aio.ServicerContext):
        pets = await self.app.list_pets(uuid_field(request.user_id, "user_id"))
        return user_pb2.ListPetsResponse(pets=[messages.pet(p) for p in pets])

    # --- wallet --------------------------------------------------------------------

    async def TopUp(self, request: user_pb2.TopUpRequest, context: aio.ServicerContext):
        entry = await self.app.top_up(
            uuid_field(request.user_id, "user_id"),
            to_decimal(request.amount, "amount"),
            key_field(request.idempotency_key, "idempotency_key"),
            text_field(request.description, "description", max_len=255),
        )
        return messages.ledger_entry(entry)

    async def GetWallet(self, request: user_pb2.GetWalletRequest, context: aio.ServicerContext):
        wallet = await self.app.get_wallet(uuid_field(request.user_id, "user_id"))
        return messages.wallet(wallet)

    async def ListLedgerEntries(
        self, request: user_pb2.ListLedgerEntriesRequest, context: aio.ServicerContext
    ):
        limit = page_size_field(request.page_size)
        key = paging.decode(request.page_token, 1)
        before_id = _int_key(key[0]) if key else None
        entries = await self.app.list_entries(
            uuid_field(request.user_id, "user_id"), before_id, limit + 1
        )
        token = ""
        if len(entries) > limit:
            entries = entries[:limit]
            token = paging.encode(entries[-1].id)
        return user_pb2.ListLedgerEntriesResponse(
            entries=[messages.ledger_entry(e) for e in entries], next_page_token=token
        )

    async def Charge(self, request: user_pb2.ChargeRequest, context: aio.ServicerContext):
        entry = await self.app.charge(
            uuid_field(request.user_id, "user_id"),
            to_decimal(request.amount, "amount"),
            key_field(request.idempotency_key, "idempotency_key"),
            key_field(request.reference, "reference"),
            text_field(request.description, "description", max_len=255),
            allow_debt=_allow_debt(request.allow_debt),
        )
        return messages.ledger_entry(entry)

    async def Refund(self, request: user_pb2.RefundRequest, context: aio.ServicerContext):
        entry = await self.app.refund(
            uuid_field(request.user_id, "user_id"),
            to_decimal(request.amount, "amount"),
            key_field(request.idempotency_key, "idempotency_key"),
            key_field(request.reference, "reference"),
            text_field(request.description, "description", max_len=255),
        )
        return messages.ledger_entry(entry)

    # --- holds ---------------------------------------------------------------------

    async def PlaceHold(self, request: user_pb2.PlaceHoldRequest, context: aio.ServicerContext):
        hold, available = await self.app.place_hold(
            uuid_field(request.user_id, "user_id"),
            to_decimal(request.amount, "amount"),
            key_field(request.reference, "reference"),
            text_field(request.reason, "reason", max_len=255),
            domain.hold_ttl(duration_field(request, "expires_in")),
        )
        message = messages.hold(hold)
        message.available_after.CopyFrom(to_money(available))
        return message

    async def CaptureHold(self, request: user_pb2.CaptureHoldRequest, context: aio.ServicerContext):
        if not request.HasField("final_amount"):
            raise InvalidArgument.field("final_amount", "is required (it may be zero)")
        hold, entry, wallet = await self.app.capture_hold(
            _hold_selector(request.hold),
            to_decimal(request.final_amount, "final_amount", positive=False),
        )
        response = user_pb2.CaptureHoldResponse(
            hold=messages.hold(hold), wallet=messages.wallet(wallet)
        )
        if entry is not None:
            response.entry.CopyFrom(messages.ledger_entry(entry))
        return response

    async def ReleaseHold(self, request: user_pb2.ReleaseHoldRequest, context: aio.ServicerContext):
        return messages.hold(await self.app.release_hold(_hold_selector(request.hold)))

    async def GetHold(self, request: user_pb2.GetHoldRequest, context: aio.ServicerContext):
        return messages.hold(await self.app.get_hold(_hold_selector(request.hold)))

    # --- export --------------------------------------------------------------------

    async def ExportUsers(
        self, request: user_pb2.ExportUsersRequest, context: aio.ServicerContext
    ) -> AsyncIterator[user_pb2.ExportUsersResponse]:
        since = timestamp_field(request, "since")
        async for item in self.app.export_users(since):
            if isinstance(item, datetime):
                yield user_pb2.ExportUsersResponse(next_since=to_timestamp(item))
            else:
                yield user_pb2.ExportUsersResponse(user=messages.snapshot(item))


def _allow_debt(asked: bool) -> bool:
    """Only a service (the journey service settling rides already taken) may charge into
    debt; the RPC's access option has already limited which services may call Charge."""
    principal = current_principal()
    if asked and (principal is None or principal.role is not Role.SERVICE):
        raise PermissionDenied("allow_debt is for services settling rides already taken")
    return asked


def _email(value: str) -> str | None:
    email = text_field(value, "email", max_len=255)
    if email and ("@" not in email or " " in email):
        raise InvalidArgument.field("email", f"{email!r} is not an email address")
    return email


def _phone(value: str) -> str | None:
    phone = text_field(value, "phone", max_len=20)
    if phone and not phone.lstrip("+").replace(" ", "").replace("-", "").isdigit():
        raise InvalidArgument.field("phone", "digits, spaces, '-' and a leading '+' only")
    return phone


def _status(value: int, field: str, *, allow_unspecified: bool) -> UserStatus | None:
    if value == user_pb2.USER_STATUS_UNSPECIFIED and allow_unspecified:
        return None
    if value not in messages.STATUS_FROM_PROTO:
        raise InvalidArgument.field(field, "must be ACTIVE, BLOCKED or SUSPENDED")
    return messages.STATUS_FROM_PROTO[value]


def _birth_date(request: user_pb2.AddPetRequest) -> date | None:
    if not request.HasField("birth_date"):
        return None
    d = request.birth_date
    try:
        born = date(d.year, d.month, d.day)
    except ValueError:
        raise InvalidArgument.field("birth_date", "is not a calendar date") from None
    if born > datetime.now(UTC).date():
        raise InvalidArgument.field("birth_date", "is in the future")
    return born


def _hold_selector(selector: user_pb2.HoldSelector) -> tuple[str, object]:
    key = selector.WhichOneof("key")
    if key == "hold_id":
        return "id", uuid_field(selector.hold_id, "hold.hold_id")
    if key == "reference":
        return "reference", key_field(selector.reference, "hold.reference")
    raise InvalidArgument.field("hold", "set hold_id or reference")


def _after_user(token: str) -> tuple[datetime, uuid.UUID] | None:
    key = paging.decode(token, 2)
    if key is None:
        return None
    if all(isinstance(part, str) for part in key):
        try:
            return datetime.fromisoformat(key[0]), uuid.UUID(key[1])
        except ValueError:
            pass
    raise InvalidArgument.field("page_token", "is not a token from a previous response")


def _int_key(value: object) -> int:
    if type(value) is not int or not 0 < value < 2**63:
        raise InvalidArgument.field("page_token", "is not a token from a previous response")
    return value
