"""Every RPC of every running service, called as every kind of caller of the role matrix
(docs/role-matrix.md), answers as that table says. The services are real `tiket serve`
processes with the demo data and one ride, so a rider's own journey and notification exist
to be read by their owner and refused to everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc import aio
from tiket.journey.v1 import journey_pb2, journey_pb2_grpc
from tiket.notification.v1 import notification_pb2, notification_pb2_grpc
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs.auth import Role
from libs.auth.dev_keys import dev_token
from libs.config import load
from libs.server.access import Policy
from libs.server.role_matrix import CALLERS, Answer, Caller, parse
from services import registry, role_matrix
from tests.support import keys
from tests.support.cleanup import remove_run
from tests.support.processes import grpcurl, service_process, tiket
from tests.support.settings import MeshEnv, isolated_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
SERVICES = list(registry.SERVICES)
RIDER_CARD = "CARD0002"
GATE_SELF, GATE_OTHER = ("A", "A-ENTRY-01"), ("B", "B-ENTRY-01")
STRANGER = str(uuid.uuid4())  # a rider who owns nothing


@dataclass
class World:
    """The running mesh and the records the owner columns are about."""

    mesh: MeshEnv
    rider: str
    journey_id: str
    notification_id: int


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    env = isolated_env()
    with contextlib.ExitStack() as stack:
        for name in SERVICES:
            child = stack.enter_context(service_process(name, env))
            env[f"TIKET_{name.upper()}_ADDR"] = child.address
        seeded = tiket("seed", env=env)
        assert RIDER_CARD in seeded.stdout, seeded.stdout + seeded.stderr
        mesh = MeshEnv(env, load(env))
        try:
            yield asyncio.run(_ride(mesh))
        finally:
            stack.close()
            asyncio.run(remove_run(mesh.settings, SERVICES))


async def _ride(mesh: MeshEnv) -> World:
    """The rider taps in at A and out at E; their notification of it is stored."""
    admin = keys.bearer(mesh.settings, Role.ADMIN, "matrix")
    async with (
        aio.insecure_channel(mesh.address("user")) as users,
        aio.insecure_channel(mesh.address("journey")) as journeys,
        aio.insecure_channel(mesh.address("notification")) as notifications,
    ):
        rider = await user_pb2_grpc.UserServiceStub(users).GetUser(
            user_pb2.GetUserRequest(card_id=RIDER_CARD), metadata=admin
        )
        stub = journey_pb2_grpc.JourneyServiceStub(journeys)
        for tap, request_type, terminal, gate in (
            (stub.CheckIn, journey_pb2.CheckInRequest, "A", "A-ENTRY-01"),
            (stub.CheckOut, journey_pb2.CheckOutRequest, "E", "E-EXIT-01"),
        ):
            request = request_type(
                card_id=RIDER_CARD, terminal_code=terminal, gate_code=gate, tap_id=str(uuid.uuid4())
            )
            gate_token = keys.bearer(mesh.settings, Role.GATE, f"{terminal}/{gate}")
            answer = await tap(request, metadata=gate_token)
        listed = notification_pb2_grpc.NotificationServiceStub(notifications)
        found: list = []

        async def stored() -> bool:
            page = await listed.ListNotifications(
                notification_pb2.ListNotificationsRequest(user_id=rider.id), metadata=admin
            )
            found[:] = page.notifications
            return bool(found)

        await wait_until(stored, "the rider's notification of the ride", within=60)
        return World(mesh, rider.id, answer.journey.id, found[0].id)


def _subject(caller: Caller, policy: Policy) -> str:
    if caller.role is Role.USER:
        return "" if caller.is_self else STRANGER
    if caller.role is Role.GATE:
        return "/".join(GATE_SELF if caller.is_self else GATE_OTHER)
    if caller.role is Role.SERVICE:
        return sorted(policy.callers)[0] if caller.listed and policy.callers else "tests"
    return "matrix"


def _metadata(world: World, caller: Caller, policy: Policy, bad: dict[str, str]) -> list:
    if caller.bad_token == "no token":
        return []
    if caller.bad_token:
        return [("authorization", f"Bearer {bad[caller.bad_token]}")]
    assert caller.role is not None
    subject = _subject(caller, policy) or world.rider
    return keys.bearer(world.mesh.settings, caller.role, subject)


def _request(world: World, method: MethodDescriptor, policy: Policy):
    """The method's empty request, naming the rider (or gate A/A-ENTRY-01) as owner and
    the rider's own journey or notification where the RPC reads one by id."""
    request = message_factory.GetMessageClass(method.input_type)()
    if policy.owner_field == "terminal_code/gate_code":
        request.terminal_code, request.gate_code = GATE_SELF
    elif policy.owner_field:
        setattr(request, policy.owner_field, world.rider)
    if method.name == "GetJourney":
        request.journey_id = world.journey_id
    if method.name == "GetNotification":
        request.notification_id = world.notification_id
    return request


async def _answer(channel: aio.Channel, method: MethodDescriptor, request, metadata) -> Answer:
    path = f"/{method.containing_service.full_name}/{method.name}"
    reply_type = message_factory.GetMessageClass(method.output_type)
    kind = channel.unary_stream if method.server_streaming else channel.unary_unary
    call = kind(path, request.SerializeToString, reply_type.FromString)
    try:
        if method.server_streaming:
            async for _ in call(request, metadata=metadata, timeout=20):
                break
        else:
            await call(request, metadata=metadata, timeout=20)
    except aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.UNAUTHENTICATED:
            return Answer.UNAUTHENTICATED
        if error.code() == grpc.StatusCode.PERMISSION_DENIED:
            return Answer.PERMISSION_DENIED
    return Answer.ALLOWED


async def _answers(world: World) -> dict[str, dict[str, Answer]]:
    policies = role_matrix.all_policies()
    bad = keys.bad_tokens(world.mesh.settings)
    seen: dict[str, dict[str, Answer]] = {}
    for name in SERVICES:
        async with aio.insecure_channel(world.mesh.address(name)) as channel:
            for service in registry.definition(name).services:
                for method in service.methods:
                    policy = policies[f"/{service.full_name}/{method.name}"]
                    request = _request(world, method, policy)
                    row = seen[f"{service.name}.{method.name}"] = {}
                    for caller in CALLERS:
                        metadata = _metadata(world, caller, policy, bad)
                        row[caller.column] = await _answer(channel, method, request, metadata)
    return seen


def test_the_committed_matrix_is_the_one_the_protos_declare() -> None:
    assert role_matrix.DOC.read_text() == role_matrix.document(), (
        "docs/role-matrix.md is out of date: run `python -m services.role_matrix`"
    )


def test_every_rpc_answers_every_caller_as_the_matrix_says(world: World) -> None:
    table = parse(role_matrix.DOC.read_text())
    answered = asyncio.run(_answers(world))
    assert set(answered) == set(table), "an RPC without a row (or a row without an RPC)"
    wrong = [
        f"{rpc} as {column}: answered {got.value}, the matrix says {table[rpc][column].value}"
        for rpc, row in answered.items()
        for column, got in row.items()
        if got != table[rpc][column]
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("service", "method", "items"),
    [
        ("journey", "tiket.journey.v1.JourneyService/ListJourneys", "journeys"),
        (
            "notification",
            "tiket.notification.v1.NotificationService/ListNotifications",
            "notifications",
        ),
    ],
)
def test_an_empty_subject_or_owner_reads_nobodys_data(
    world: World, service: str, method: str, items: str
):
    """The defect as found: a `user` token with "sub": "" and a request naming no user read
    every rider's journeys and notifications (grpcurl, as an operator debugging would)."""
    address = world.mesh.address(service)
    nobody = dev_token(
        Path(world.mesh.settings.dev_issuer_key), Role.USER, "", registry.SERVICES, 600
    )
    with pytest.raises(subprocess.CalledProcessError) as caught:
        grpcurl(address, method, token=nobody, data={})
    assert "Unauthenticated" in caught.value.stderr
    assert "empty subject" in caught.value.stderr
    stranger = keys.token(world.mesh.settings, Role.USER, STRANGER)
    with pytest.raises(subprocess.CalledProcessError) as caught:
        grpcurl(address, method, token=stranger, data={})
    assert "PermissionDenied" in caught.value.stderr
    # The rider, naming themself, still reads their own.
    own = grpcurl(
        address,
        method,
        token=keys.token(world.mesh.settings, Role.USER, world.rider),
        data={"user_id": world.rider},
    )
    assert own[items]
    assert all(item["user_id"] == world.rider for item in own[items])
