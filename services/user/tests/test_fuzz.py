"""Property tests: malformed and valid requests, mixed by hypothesis, against the real user
service. Every answer is a success or a clear refusal, never INTERNAL or UNKNOWN; a refusal
writes nothing; the wallet invariants hold after every example (and again at teardown, in
the `user_service` fixture).

One service serves all examples of a test, so state accumulates between examples (users
blocked, holds captured, keys reused), which is what a long-running service sees."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import grpc
import orjson
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.type import date_pb2, money_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from tiket.user.v1 import user_pb2

from libs.auth import Role
from libs.money import to_money
from services.user import store
from services.user.tests.helpers import new_card, new_user
from tests.support.fuzz import SERVICE_FUZZ

pytestmark = pytest.mark.timeout(120)

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
}
FUZZ = settings(SERVICE_FUZZ, max_examples=20)
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


# --- the service's state, shared by the examples of one test ------------------------


@dataclass
class World:
    """Ids that exist in the service, so examples can mix real and made-up ones."""

    user_ids: list[str]
    card_ids: list[str]
    hold_ids: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    page_tokens: list[str] = field(default_factory=list)


async def world_of(users) -> World:
    """Seed once per service: a rich active user with a hold and a charge, and a blocked one."""
    if (world := getattr(users, "fuzz_world", None)) is not None:
        return world
    rich = await new_user(users, balance=1_000_000, email="rich@example.com")
    blocked = await new_user(users, balance=5_000)
    await users.call(
        "ChangeUserStatus",
        user_pb2.ChangeUserStatusRequest(
            user_id=blocked.id, status=user_pb2.USER_STATUS_BLOCKED, reason="lost card"
        ),
    )
    hold = await users.call(
        "PlaceHold",
        user_pb2.PlaceHoldRequest(user_id=rich.id, amount=to_money(Decimal(7000)), reference="h-1"),
    )
    await users.call(
        "Charge",
        user_pb2.ChargeRequest(
            user_id=rich.id, amount=to_money(Decimal(2500)), idempotency_key="c-1", reference="b-1"
        ),
    )
    world = World(
        user_ids=[rich.id, blocked.id],
        card_ids=[rich.card_id, blocked.card_id],
        hold_ids=[hold.id],
        references=["h-1", "b-1"],
        keys=["c-1", f"init-{rich.id}"],
    )
    users.fuzz_world = world
    return world


# --- strategies ----------------------------------------------------------------------

utf8 = st.characters(codec="utf-8")
huge = st.sampled_from([101, 256, 1_000, 20_000]).flatmap(
    lambda n: st.sampled_from(["A" * n, "é" * n, "9" * n, "💥" * n])
)
junk = st.one_of(
    st.just(""),
    st.text(utf8, max_size=20),
    st.text(utf8, min_size=1, max_size=300),
    huge,
    st.sampled_from(
        [
            " ",
            "\x00",
            "a\x00b",
            "\t\n",
            "'; DROP TABLE users; --",
            "%s",
            "{}",
            "null",
            "00000000-0000-0000-0000-000000000000",
            "{12345678-1234-5678-1234-567812345678}",
            "urn:uuid:12345678-1234-5678-1234-567812345678",
            "12345678123456781234567812345678",
        ]
    ),
)
valid_card = st.from_regex(r"[A-Z0-9]{8,20}", fullmatch=True)
words = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF), min_size=1, max_size=40)


def mostly(valid, malformed):
    """`valid` three times in four, so most examples get past the first check and malformed
    values meet the code behind it."""
    return st.one_of(valid, valid, valid, malformed)


def pick(items: list[str]):
    """One of `items` as they are when drawn. The list grows between examples; drawing an
    index keeps the shape of the data hypothesis generates independent of its length."""
    return st.integers(0, 2**16).map(lambda i: items[i % len(items)] if items else "")


def user_ids(world: World):
    return mostly(pick(world.user_ids), st.one_of(st.uuids().map(str), junk, pick(world.card_ids)))


def card_ids(world: World):
    return mostly(
        st.one_of(pick(world.card_ids), valid_card), st.one_of(valid_card.map(str.lower), junk)
    )


def keys(world: World):
    return mostly(st.one_of(pick(world.keys), pick(world.references), words), junk)


def references(world: World):
    return mostly(st.one_of(pick(world.references), words), junk)


valid_money = st.one_of(
    st.integers(1, 500_000).map(lambda cents: to_money(Decimal(cents) / 100)),
    st.integers(0, 20_000).map(lambda units: to_money(Decimal(units))),
)
bad_money = st.one_of(
    st.none(),  # unset
    st.builds(
        money_pb2.Money,
        currency_code=st.one_of(
            st.sampled_from(["IDR", "", "USD", "idr"]), st.text(utf8, max_size=5)
        ),
        units=st.one_of(st.integers(-10, 10_000), st.integers(*INT64)),
        nanos=st.one_of(
            st.sampled_from([0, 1, 10_000_000, 990_000_000, 999_999_999, -10_000_000]),
            st.integers(*INT32),
        ),
    ),
    st.sampled_from(
        [
            money_pb2.Money(currency_code="IDR", units=10_000_000_000_000),
            money_pb2.Money(currency_code="IDR", units=9_999_999_999_999, nanos=990_000_000),
            money_pb2.Money(currency_code="IDR", units=20_000_001),
            money_pb2.Money(currency_code="IDR", units=-1, nanos=-990_000_000),
            money_pb2.Money(currency_code="IDR", units=1, nanos=-10_000_000),
        ]
    ),
)
money = mostly(valid_money, bad_money)
enum_value = mostly(st.integers(0, 3), st.one_of(st.just(4), st.integers(*INT32)))
page_size = mostly(
    st.integers(0, 500), st.one_of(st.integers(-2, -1), st.just(501), st.integers(*INT32))
)
json_atom = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(utf8, max_size=40),
    st.uuids().map(str),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["2025-01-01T00:00:00+00:00", "0001-01-01", "9999-12-31T23:59:59"]),
)


def page_tokens(world: World, arity: int):
    """Empty, junk, tokens from earlier responses, and well-formed base64 JSON whose key has
    the right arity but values of any JSON type."""
    shaped = st.lists(
        st.one_of(json_atom, st.lists(json_atom, max_size=2)), min_size=arity, max_size=arity
    )
    any_list = st.lists(json_atom, max_size=3)
    encoded = st.one_of(shaped, shaped, any_list, st.dictionaries(st.text(max_size=3), json_atom))
    encoded = encoded.map(lambda key: base64.urlsafe_b64encode(orjson.dumps(key)).decode())
    return st.one_of(st.just(""), junk, encoded, encoded, encoded, pick(world.page_tokens))


# Seconds beyond what datetime/timedelta can hold, and the edges of the protobuf ranges.
extreme_seconds = st.sampled_from(
    [
        2**62,
        -(2**62),
        2**63 - 1,
        -(2**63),
        10**14,
        315_576_000_000,
        253_402_300_800,
        -62_135_596_801,
    ]
)
timestamp = st.one_of(
    st.none(),
    st.builds(
        timestamp_pb2.Timestamp,
        seconds=st.one_of(
            st.integers(-62_135_596_800, 253_402_300_799), extreme_seconds, st.integers(*INT64)
        ),
        nanos=st.one_of(st.just(0), st.integers(*INT32)),
    ),
)
duration = st.one_of(
    st.none(),
    st.builds(
        duration_pb2.Duration,
        seconds=st.one_of(st.integers(-10, 100_000), extreme_seconds, st.integers(*INT64)),
        nanos=st.one_of(st.just(0), st.integers(*INT32)),
    ),
)
date = st.one_of(
    st.none(),
    st.builds(
        date_pb2.Date,
        year=st.one_of(st.integers(0, 10_000), st.integers(*INT32)),
        month=st.integers(-1, 13),
        day=st.integers(-1, 32),
    ),
)


def roles(world: World):
    """Mostly staff and the services that move money, so requests get past the access check;
    sometimes a rider (of a user who exists or not), a gate, or a service that may not move
    money. Every subject is well formed, so refusals come from the access rules."""
    subjects = st.one_of(pick(world.user_ids), st.uuids().map(str))
    staff = st.sampled_from(
        [
            (Role.ADMIN, "tests"),
            (Role.OPERATOR, "ops"),
            (Role.SERVICE, "journey"),
            (Role.SERVICE, "booking"),
        ]
    )
    others = st.one_of(
        st.tuples(st.just(Role.USER), subjects),
        st.sampled_from([(Role.GATE, "A/A-ENTRY-01"), (Role.GATE, "E/E-EXIT-01")]),
        st.sampled_from([(Role.SERVICE, "tests"), (Role.SERVICE, "notification")]),
    )
    return mostly(staff, others)


def message(cls, **fields):
    """`cls(**fields)` without the fields drawn as None (left unset)."""
    return cls(**{k: v for k, v in fields.items() if v is not None})


def selector(world: World):
    return st.one_of(
        st.none(),
        st.just(user_pb2.HoldSelector()),
        st.one_of(pick(world.hold_ids), st.uuids().map(str), junk).map(
            lambda v: user_pb2.HoldSelector(hold_id=v)
        ),
        references(world).map(lambda v: user_pb2.HoldSelector(reference=v)),
    )


def requests(world: World) -> dict[str, st.SearchStrategy]:
    ids = user_ids(world)
    return {
        "CreateUser": st.builds(
            message,
            st.just(user_pb2.CreateUserRequest),
            card_id=st.one_of(valid_card, card_ids(world), st.builds(new_card)),
            full_name=mostly(words, junk),
            email=st.one_of(st.just(""), st.emails(), junk),
            phone=st.one_of(st.just(""), st.from_regex(r"\+?[0-9 -]{3,20}", fullmatch=True), junk),
            request_id=st.one_of(st.just(""), keys(world)),
        ),
        "GetUser": st.one_of(
            st.just(user_pb2.GetUserRequest()),
            ids.map(lambda v: user_pb2.GetUserRequest(user_id=v)),
            card_ids(world).map(lambda v: user_pb2.GetUserRequest(card_id=v)),
        ),
        "ListUsers": st.builds(
            message,
            st.just(user_pb2.ListUsersRequest),
            status=enum_value,
            page_size=page_size,
            page_token=page_tokens(world, 2),
        ),
        "ChangeUserStatus": st.builds(
            message,
            st.just(user_pb2.ChangeUserStatusRequest),
            user_id=ids,
            status=enum_value,
            reason=mostly(st.one_of(st.just(""), words), junk),
        ),
        "AddPet": st.builds(
            message,
            st.just(user_pb2.AddPetRequest),
            user_id=ids,
            name=mostly(words, junk),
            species=mostly(st.sampled_from(["cat", "dog"]), junk),
            breed=mostly(st.one_of(st.just(""), words), junk),
            birth_date=date,
            request_id=st.one_of(st.just(""), keys(world)),
        ),
        "ListPets": ids.map(lambda v: user_pb2.ListPetsRequest(user_id=v)),
        "TopUp": st.builds(
            message,
            st.just(user_pb2.TopUpRequest),
            user_id=ids,
            amount=money,
            idempotency_key=keys(world),
            description=mostly(st.one_of(st.just(""), words), junk),
        ),
        "GetWallet": ids.map(lambda v: user_pb2.GetWalletRequest(user_id=v)),
        "ListLedgerEntries": st.builds(
            message,
            st.just(user_pb2.ListLedgerEntriesRequest),
            user_id=ids,
            page_size=page_size,
            page_token=page_tokens(world, 1),
        ),
        "PlaceHold": st.builds(
            message,
            st.just(user_pb2.PlaceHoldRequest),
            user_id=ids,
            amount=money,
            reference=references(world),
            reason=mostly(st.one_of(st.just(""), words), junk),
            expires_in=duration,
        ),
        "CaptureHold": st.builds(
            message,
            st.just(user_pb2.CaptureHoldRequest),
            hold=selector(world),
            final_amount=money,
        ),
        "ReleaseHold": st.builds(
            message, st.just(user_pb2.ReleaseHoldRequest), hold=selector(world)
        ),
        "GetHold": st.builds(message, st.just(user_pb2.GetHoldRequest), hold=selector(world)),
        "Charge": st.builds(
            message,
            st.just(user_pb2.ChargeRequest),
            user_id=ids,
            amount=money,
            idempotency_key=keys(world),
            reference=references(world),
            description=mostly(st.one_of(st.just(""), words), junk),
        ),
        "Refund": st.builds(
            message,
            st.just(user_pb2.RefundRequest),
            user_id=ids,
            amount=money,
            idempotency_key=keys(world),
            reference=references(world),
            description=mostly(st.one_of(st.just(""), words), junk),
        ),
        "ExportUsers": st.builds(message, st.just(user_pb2.ExportUsersRequest), since=timestamp),
    }


METHODS = [m.name for m in user_pb2.DESCRIPTOR.services_by_name["UserService"].methods]


# --- calling and checking ------------------------------------------------------------


async def row_counts(db) -> tuple[int, ...]:
    """Rows only RPCs add (the sweeper and relay change status and outbox, not these)."""
    cur = await db.execute(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM ledger_entries),"
        " (SELECT count(*) FROM holds), (SELECT count(*) FROM pets)"
    )
    return await cur.fetchone()


async def invoke(users, method: str, request, role: Role, sub: str):
    """(code, details, response or None)."""
    metadata = users.metadata(role, sub)
    try:
        if method == "ExportUsers":
            items = [item async for item in users.stub.ExportUsers(request, metadata=metadata)]
            return grpc.StatusCode.OK, "", items
        response = await getattr(users.stub, method)(request, metadata=metadata)
        return grpc.StatusCode.OK, "", response
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details(), None


def learn(world: World, method: str, request, response) -> None:
    """Remember what a success created, so later examples can use it."""
    if method == "CreateUser":
        world.user_ids.append(response.id)
        world.card_ids.append(response.card_id)
    elif method == "PlaceHold":
        world.hold_ids.append(response.id)
        world.references.append(response.reference)
    elif method in {"TopUp", "Charge", "Refund"}:
        world.keys.append(request.idempotency_key)
        if method != "TopUp":
            world.references.append(request.reference)
    elif method in {"ListUsers", "ListLedgerEntries"} and response.next_page_token:
        world.page_tokens.append(response.next_page_token)


async def check(users, db, data, method: str) -> None:
    world = await world_of(users)
    request = data.draw(requests(world)[method], label="request")
    role, sub = data.draw(roles(world), label="role")
    before = await row_counts(db)

    code, details, response = await invoke(users, method, request, role, sub)

    assert code in ALLOWED, f"{method} answered {code.name}: {details!r}"
    if code is grpc.StatusCode.OK:
        learn(world, method, request, response)
    else:
        assert await row_counts(db) == before, f"refused {method} wrote rows"
    assert await store.invariant_violations(db) == []


def token(*key) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode()


NOW_ISO = "2025-01-01T00:00:00+00:00"
# Malformed inputs that must get a clear refusal whatever the random examples happen to
# draw (some of them slipped past validation when these tests were written). Each builder
# takes the id of a real, active, rich user.
KNOWN_MALFORMED = [
    (
        "PlaceHold",
        "huge expires_in",
        lambda u: user_pb2.PlaceHoldRequest(
            user_id=u,
            amount=to_money(Decimal(5)),
            reference=f"r-{uuid.uuid4()}",
            expires_in=duration_pb2.Duration(seconds=2**62),
        ),
    ),
    (
        "PlaceHold",
        "expires_in past timedelta",
        lambda u: user_pb2.PlaceHoldRequest(
            user_id=u,
            amount=to_money(Decimal(5)),
            reference=f"r-{uuid.uuid4()}",
            expires_in=duration_pb2.Duration(seconds=10**14),
        ),
    ),
    (
        "PlaceHold",
        "negative huge expires_in",
        lambda u: user_pb2.PlaceHoldRequest(
            user_id=u,
            amount=to_money(Decimal(5)),
            reference=f"r-{uuid.uuid4()}",
            expires_in=duration_pb2.Duration(seconds=-(2**63)),
        ),
    ),
    (
        "ExportUsers",
        "since after year 9999",
        lambda u: user_pb2.ExportUsersRequest(since=timestamp_pb2.Timestamp(seconds=2**40)),
    ),
    (
        "ExportUsers",
        "since before year 1",
        lambda u: user_pb2.ExportUsersRequest(
            since=timestamp_pb2.Timestamp(seconds=-62_135_596_801)
        ),
    ),
    (
        "ExportUsers",
        "since with negative nanos",
        lambda u: user_pb2.ExportUsersRequest(since=timestamp_pb2.Timestamp(seconds=0, nanos=-1)),
    ),
    (
        "ListUsers",
        "token with a number for the id",
        lambda u: user_pb2.ListUsersRequest(page_token=token(NOW_ISO, 5)),
    ),
    (
        "ListUsers",
        "token with a list for the id",
        lambda u: user_pb2.ListUsersRequest(page_token=token(NOW_ISO, [1])),
    ),
    (
        "ListUsers",
        "token with null",
        lambda u: user_pb2.ListUsersRequest(page_token=token(None, None)),
    ),
    (
        "ListLedgerEntries",
        "token with true",
        lambda u: user_pb2.ListLedgerEntriesRequest(user_id=u, page_token=token(True)),
    ),
    (
        "ListLedgerEntries",
        "token beyond bigint",
        lambda u: user_pb2.ListLedgerEntriesRequest(user_id=u, page_token=token(2**63)),
    ),
    (
        "ListLedgerEntries",
        "token with text",
        lambda u: user_pb2.ListLedgerEntriesRequest(user_id=u, page_token=token("12")),
    ),
    (
        "AddPet",
        "birth date year 0",
        lambda u: user_pb2.AddPetRequest(
            user_id=u, name="Tom", species="cat", birth_date=date_pb2.Date(year=0, month=1, day=1)
        ),
    ),
    (
        "AddPet",
        "birth date huge year",
        lambda u: user_pb2.AddPetRequest(
            user_id=u,
            name="Tom",
            species="cat",
            birth_date=date_pb2.Date(year=2**31 - 1, month=1, day=1),
        ),
    ),
    (
        "TopUp",
        "units at int64 max",
        lambda u: user_pb2.TopUpRequest(
            user_id=u,
            amount=money_pb2.Money(currency_code="IDR", units=2**63 - 1),
            idempotency_key="k",
        ),
    ),
    (
        "CaptureHold",
        "empty selector",
        lambda u: user_pb2.CaptureHoldRequest(
            hold=user_pb2.HoldSelector(), final_amount=to_money(Decimal(1))
        ),
    ),
    ("GetUser", "no key", lambda u: user_pb2.GetUserRequest()),
    (
        "CreateUser",
        "NUL in the name",
        lambda u: user_pb2.CreateUserRequest(card_id=new_card(), full_name="A\x00B"),
    ),
]


async def test_known_malformed_inputs_get_a_clear_refusal(users, db) -> None:
    """Every case runs (on one service); the failure lists each case that went wrong."""
    world = await world_of(users)
    wrong = []
    for method, label, build in KNOWN_MALFORMED:
        before = await row_counts(db)
        code, details, _ = await invoke(users, method, build(world.user_ids[0]), Role.ADMIN, "t")
        if code not in ALLOWED - {grpc.StatusCode.OK}:
            wrong.append(f"{method} ({label}): {code.name} {details!r}")
        elif await row_counts(db) != before:
            wrong.append(f"{method} ({label}): refused with {code.name} but wrote rows")
    assert wrong == [], "\n".join(["malformed inputs without a clear refusal:", *wrong])


def test_every_rpc_is_fuzzed() -> None:
    assert sorted(requests(World([str(uuid.uuid4())], ["ABCDEFGH"]))) == sorted(METHODS)


# One test per RPC, so that each faulty RPC shows up as its own failure.


@FUZZ
@given(data=st.data())
async def test_fuzz_create_user(users, db, data) -> None:
    await check(users, db, data, "CreateUser")


@FUZZ
@given(data=st.data())
async def test_fuzz_get_user(users, db, data) -> None:
    await check(users, db, data, "GetUser")


@FUZZ
@given(data=st.data())
async def test_fuzz_list_users(users, db, data) -> None:
    await check(users, db, data, "ListUsers")


@FUZZ
@given(data=st.data())
async def test_fuzz_change_user_status(users, db, data) -> None:
    await check(users, db, data, "ChangeUserStatus")


@FUZZ
@given(data=st.data())
async def test_fuzz_add_pet(users, db, data) -> None:
    await check(users, db, data, "AddPet")


@FUZZ
@given(data=st.data())
async def test_fuzz_list_pets(users, db, data) -> None:
    await check(users, db, data, "ListPets")


@FUZZ
@given(data=st.data())
async def test_fuzz_top_up(users, db, data) -> None:
    await check(users, db, data, "TopUp")


@FUZZ
@given(data=st.data())
async def test_fuzz_get_wallet(users, db, data) -> None:
    await check(users, db, data, "GetWallet")


@FUZZ
@given(data=st.data())
async def test_fuzz_list_ledger_entries(users, db, data) -> None:
    await check(users, db, data, "ListLedgerEntries")


@FUZZ
@given(data=st.data())
async def test_fuzz_place_hold(users, db, data) -> None:
    await check(users, db, data, "PlaceHold")


@FUZZ
@given(data=st.data())
async def test_fuzz_capture_hold(users, db, data) -> None:
    await check(users, db, data, "CaptureHold")


@FUZZ
@given(data=st.data())
async def test_fuzz_release_hold(users, db, data) -> None:
    await check(users, db, data, "ReleaseHold")


@FUZZ
@given(data=st.data())
async def test_fuzz_get_hold(users, db, data) -> None:
    await check(users, db, data, "GetHold")


@FUZZ
@given(data=st.data())
async def test_fuzz_charge(users, db, data) -> None:
    await check(users, db, data, "Charge")


@FUZZ
@given(data=st.data())
async def test_fuzz_refund(users, db, data) -> None:
    await check(users, db, data, "Refund")


@FUZZ
@given(data=st.data())
async def test_fuzz_export_users(users, db, data) -> None:
    await check(users, db, data, "ExportUsers")


@settings(FUZZ, max_examples=10)
@given(data=st.data())
async def test_fuzz_mixed_sequences(users, db, data) -> None:
    """Random RPCs one after another on one service: the state one call leaves is the input
    of the next."""
    for method in data.draw(st.lists(st.sampled_from(METHODS), min_size=3, max_size=8)):
        await check(users, db, data, method)
