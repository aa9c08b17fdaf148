"""libs.server.ratelimit against the real Redis (each test on its own key prefix): the moving
window per caller and per address, the refusal's retry delay and status details, the client
address behind trusted proxies, failing open (with a cool-down) when Redis fails, and the
interceptor applying it to unary and server-streaming calls of user-facing RPCs only."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import redis.asyncio as redis
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from prometheus_client import REGISTRY

from libs.auth import Role
from libs.auth.service_identity import ServiceIdentity
from libs.config import load
from libs.server.access import Policy
from libs.server.interceptor import DETAILS_KEY, ServiceInterceptor
from libs.server.ratelimit import RateLimited, RateLimiter, Scope, client_address
from libs.server.status import rich_status
from tests.support import keys
from tests.support.cleanup import delete_redis_prefix
from tests.support.fake_service import Request, Response, serving
from tests.support.settings import isolated_settings
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(60)

REDIS_URL = load().redis_url
MakeLimiter = Callable[..., RateLimiter]


class Clock:
    """A monotonic clock the test moves by hand (the limiter's cool-down)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    yield prefix
    await delete_redis_prefix(REDIS_URL, prefix)


@pytest.fixture
async def make(prefix: str) -> AsyncIterator[MakeLimiter]:
    made: list[RateLimiter] = []

    def make(url: str = REDIS_URL, **options) -> RateLimiter:
        options.setdefault("per_user", 3)
        options.setdefault("per_address", 5)
        # Generous: a busy machine must not make a live Redis look dead here.
        options.setdefault("timeout", 5.0)
        limiter = RateLimiter(url, prefix, **options)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


def rider() -> str:
    return str(uuid.uuid4())


async def refusal(limiter: RateLimiter, subject: str, address: str | None) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        await limiter.check("user", subject, address)
    return caught.value


# --- the limits --------------------------------------------------------------------------


async def test_a_caller_gets_its_limit_then_a_refusal_with_a_retry_delay(make) -> None:
    limiter, me = make(per_address=0), rider()
    assert [await limiter.check("user", me, "192.0.2.1") for _ in range(3)] == [True] * 3

    refused = await refusal(limiter, me, "192.0.2.1")

    assert refused.scope is Scope.USER
    assert 0 < refused.retry_after_seconds <= 60
    assert refused.subject == f"user:{me}"
    assert "3 requests per minute per user" in refused.message
    # Others have their own window.
    assert await limiter.check("user", rider(), "192.0.2.1")


async def test_the_status_carries_retry_info_and_quota_failure(make) -> None:
    limiter, me = make(per_user=1, per_address=0), rider()
    await limiter.check("user", me, None)
    refused = await refusal(limiter, me, None)

    code, message, raw = rich_status(refused)

    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    status = status_pb2.Status.FromString(raw)
    assert status.message == message
    retry, quota = error_details_pb2.RetryInfo(), error_details_pb2.QuotaFailure()
    assert status.details[0].Unpack(retry) and status.details[1].Unpack(quota)
    delay = retry.retry_delay.ToTimedelta().total_seconds()
    assert 0 < delay <= 60
    assert delay >= refused.retry_after_seconds  # rounded up, never early
    assert quota.violations[0].subject == f"user:{me}"


async def test_an_address_is_limited_across_callers(make) -> None:
    limiter = make(per_user=3, per_address=5)
    for _ in range(5):
        assert await limiter.check("user", rider(), "192.0.2.7")

    refused = await refusal(limiter, rider(), "192.0.2.7")

    assert refused.scope is Scope.ADDRESS
    assert refused.subject == "address:192.0.2.7"
    assert 0 < refused.retry_after_seconds <= 60
    assert await limiter.check("user", rider(), "192.0.2.8")


async def test_a_call_refused_for_its_caller_spends_nothing_of_its_address(make) -> None:
    limiter, greedy = make(per_user=2, per_address=4), rider()
    for _ in range(2):
        assert await limiter.check("user", greedy, "192.0.2.9")
    for _ in range(10):
        assert (await refusal(limiter, greedy, "192.0.2.9")).scope is Scope.USER
    # The address spent 2 of its 4: two more callers still get in, the next does not.
    assert await limiter.check("user", rider(), "192.0.2.9")
    assert await limiter.check("user", rider(), "192.0.2.9")
    assert (await refusal(limiter, rider(), "192.0.2.9")).scope is Scope.ADDRESS


async def test_roles_share_no_window_and_exempt_roles_are_named(make) -> None:
    limiter = make(per_user=1, per_address=0, exempt_roles={"gate", "service"})
    assert await limiter.check("user", "same", None)
    assert await limiter.check("operator", "same", None)
    assert not limiter.applies_to("gate") and not limiter.applies_to("service")
    assert limiter.applies_to("user")


async def test_a_limit_of_zero_is_off(make) -> None:
    limiter = make(per_user=0, per_address=2)
    me = rider()
    assert [await limiter.check("user", me, None) for _ in range(10)] == [True] * 10
    assert (
        RateLimiter.from_settings(
            isolated_settings(
                TIKET_RATE_LIMIT_USER_PER_MINUTE="0", TIKET_RATE_LIMIT_ADDRESS_PER_MINUTE="0"
            )
        )
        is None
    )


async def test_every_key_starts_with_the_prefix(make, prefix: str) -> None:
    limiter, me = make(), rider()
    await limiter.check("user", me, "2001:db8::1")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = sorted([k.decode() async for k in client.scan_iter(match=f"{prefix}*")])
    finally:
        await client.aclose()
    assert keys == [
        f"{prefix}ratelimit:address/2001:db8::1/5/1/minute",
        f"{prefix}ratelimit:user/user/{me}/3/1/minute",
    ]


# --- Redis failing -----------------------------------------------------------------------


async def test_redis_cut_lets_calls_through_then_rests_then_enforces_again(
    make, redis_proxy: TcpProxy
) -> None:
    clock = Clock()
    limiter = make(f"redis://127.0.0.1:{redis_proxy.port}/0", monotonic=clock, cooldown=3.0)
    me = rider()
    assert await limiter.check("user", me, None)

    redis_proxy.cut()
    # Far past the limit of 3, never refused: unenforced.
    assert [await limiter.check("user", me, None) for _ in range(10)] == [False] * 10

    # Within the cool-down Redis is not even tried: back up, still unenforced.
    redis_proxy.restore()
    clock.now += 2.9
    assert await limiter.check("user", me, None) is False

    clock.now += 0.2
    assert await limiter.check("user", me, None) is True  # 2 of 3
    assert await limiter.check("user", me, None) is True
    assert (await refusal(limiter, me, None)).scope is Scope.USER


async def test_a_stalled_redis_is_given_up_on(make, redis_proxy: TcpProxy) -> None:
    limiter = make(f"redis://127.0.0.1:{redis_proxy.port}/0", timeout=0.2)
    redis_proxy.stall()
    assert await limiter.check("user", rider(), "192.0.2.1") is False
    assert await limiter.check("user", rider(), "192.0.2.1") is False
    redis_proxy.restore()


async def test_a_known_refusal_needs_no_redis(make, redis_proxy: TcpProxy) -> None:
    # The window of a refused caller cannot free before its oldest call ages out.
    limiter, me = make(f"redis://127.0.0.1:{redis_proxy.port}/0", per_user=1), rider()
    assert await limiter.check("user", me, None)
    first = await refusal(limiter, me, None)
    redis_proxy.cut()
    again = await refusal(limiter, me, None)
    assert 0 < again.retry_after_seconds <= first.retry_after_seconds
    assert await limiter.check("user", rider(), None) is False  # others: Redis is needed


# --- the client address ------------------------------------------------------------------

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("ipv4:198.51.100.4:5555", [], "198.51.100.4"),
        ("ipv6:[2001:db8::7]:5555", [], "2001:db8::7"),
        ("ipv6:[::ffff:198.51.100.4]:5555", [], "198.51.100.4"),
        ("ipv6:[fe80::1%25eth0]:5555", [], "fe80::1%eth0"),
        ("unix:/tmp/grpc.sock", [], None),
        ("", [], None),
        # Not from a trusted proxy: the header is the client's word, ignored.
        ("ipv4:198.51.100.4:5555", ["203.0.113.9"], "198.51.100.4"),
        # From a trusted proxy: the right-most hop that is not one of ours.
        ("ipv4:10.1.2.3:5555", ["203.0.113.9"], "203.0.113.9"),
        ("ipv4:10.1.2.3:5555", ["1.1.1.1, 203.0.113.9"], "203.0.113.9"),
        ("ipv4:10.1.2.3:5555", ["1.1.1.1, 203.0.113.9, 10.9.9.9"], "203.0.113.9"),
        ("ipv4:10.1.2.3:5555", ["1.1.1.1", "203.0.113.9, 10.9.9.9"], "203.0.113.9"),
        ("ipv6:[fd00::5]:5555", ["2001:db8::9, fd00::6"], "2001:db8::9"),
        ("ipv4:10.1.2.3:5555", ["203.0.113.9:4711"], "203.0.113.9"),
        ("ipv4:10.1.2.3:5555", ["[2001:db8::9]:4711"], "2001:db8::9"),
        # All hops ours: the first; junk where the client should be: the proxy itself.
        ("ipv4:10.1.2.3:5555", ["10.4.4.4, 10.5.5.5"], "10.4.4.4"),
        ("ipv4:10.1.2.3:5555", ["203.0.113.9, unknown"], "10.1.2.3"),
        ("ipv4:10.1.2.3:5555", [" , "], "10.1.2.3"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], expected: str | None) -> None:
    found = client_address(peer, forwarded, PROXIES)
    assert (None if found is None else str(found)) == expected


# --- in the interceptor --------------------------------------------------------------------

SETTINGS = isolated_settings()
SERVICE = "test.v1.Limited"
RIDERS_AND_GATES = Policy(
    roles=frozenset({Role.ADMIN, Role.GATE}),
    self_roles=frozenset({Role.USER}),
    owner_field="user_id",
    public=False,
)
STAFF_ONLY = Policy(
    roles=frozenset({Role.ADMIN}), self_roles=frozenset(), owner_field="", public=False
)
POLICIES = {
    f"/{SERVICE}/Mine": RIDERS_AND_GATES,
    f"/{SERVICE}/MineStream": RIDERS_AND_GATES,
    f"/{SERVICE}/Staff": STAFF_ONLY,
}


async def echo(request, context):
    return Response(user_id=request.user_id)


async def echo_stream(request, context):
    yield Response(user_id=request.user_id)
    yield Response(user_id=request.user_id)


@pytest.fixture
async def channel(make) -> AsyncIterator[aio.Channel]:
    limiter = make(per_user=2, per_address=0, exempt_roles=SETTINGS.rate_limit_exempt_roles)
    verifier = ServiceIdentity.load("user", SETTINGS).verifier()
    interceptor = ServiceInterceptor(POLICIES, verifier, limiter)
    unary = {"Mine": echo, "Staff": echo}
    async with serving(interceptor, unary, {"MineStream": echo_stream}, SERVICE) as channel:
        yield channel


async def code_of(channel: aio.Channel, method: str, user_id: str, role: Role, sub: str):
    call = channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )
    try:
        await call(Request(user_id=user_id), metadata=keys.bearer(SETTINGS, role, sub))
    except aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def limited(method: str, scope: str = "user") -> float:
    labels = {"service": SERVICE, "method": method, "scope": scope}
    return REGISTRY.get_sample_value("tiket_rate_limited_total", labels) or 0.0


async def test_unary_calls_of_a_rider_are_limited(channel: aio.Channel) -> None:
    me, before = rider(), limited("Mine")
    codes = [await code_of(channel, "Mine", me, Role.USER, me) for _ in range(4)]
    assert codes == [grpc.StatusCode.OK] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    assert limited("Mine") == before + 2


async def test_server_streams_are_limited_before_any_item(channel: aio.Channel) -> None:
    me = rider()
    call = channel.unary_stream(
        f"/{SERVICE}/MineStream",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )
    metadata = keys.bearer(SETTINGS, Role.USER, me)
    for _ in range(2):
        assert len([item async for item in call(Request(user_id=me), metadata=metadata)]) == 2
    received = []
    with pytest.raises(aio.AioRpcError) as caught:
        async for item in call(Request(user_id=me), metadata=metadata):
            received.append(item)
    assert received == []
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    status = status_pb2.Status.FromString(dict(caught.value.trailing_metadata())[DETAILS_KEY])
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 60


async def test_exempt_roles_and_staff_only_rpcs_are_not_limited(channel: aio.Channel) -> None:
    me = rider()
    gate = [await code_of(channel, "Mine", me, Role.GATE, "A/A-ENTRY-01") for _ in range(10)]
    assert set(gate) == {grpc.StatusCode.OK}
    admin = [await code_of(channel, "Staff", "", Role.ADMIN, "tests") for _ in range(10)]
    assert set(admin) == {grpc.StatusCode.OK}
    # Not user-facing: a rider is refused by the policy, never by the limiter.
    rider_codes = [await code_of(channel, "Staff", me, Role.USER, me) for _ in range(10)]
    assert set(rider_codes) == {grpc.StatusCode.PERMISSION_DENIED}


async def test_calls_the_policy_refuses_count_too(channel: aio.Channel) -> None:
    # A rider probing other riders' data spends their budget like any call.
    me = rider()
    codes = [await code_of(channel, "Mine", rider(), Role.USER, me) for _ in range(3)]
    assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
