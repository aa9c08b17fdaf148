"""A real user service (in this process) on its own database, exchange and cache prefix.
After every test the wallet invariants are checked against the database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from grpc import aio
from tiket.user.v1 import user_pb2_grpc

from libs.auth import Role
from libs.config import Settings
from libs.server.runtime import ServiceRuntime
from services.user import store
from services.user.service import DEFINITION
from tests.support import keys
from tests.support.cleanup import remove_run
from tests.support.settings import isolated_settings


class Caller:
    """A UserService stub plus tokens, so tests read as `await users.call("GetWallet", …)`."""

    def __init__(self, channel: aio.Channel, settings: Settings) -> None:
        self.stub = user_pb2_grpc.UserServiceStub(channel)
        self.settings = settings

    def metadata(self, role: Role | str = Role.ADMIN, sub: str = "tests") -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {keys.token(self.settings, role, sub)}")]

    async def call(self, method: str, request, role: Role | str = Role.ADMIN, sub: str = "tests"):
        return await getattr(self.stub, method)(request, metadata=self.metadata(role, sub))


@pytest.fixture
async def user_service() -> AsyncIterator[ServiceRuntime]:
    settings = isolated_settings()
    runtime = ServiceRuntime(DEFINITION, settings)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
        url = settings.database_url("user")
        async with await psycopg.AsyncConnection.connect(url) as conn:
            violations = await store.invariant_violations(conn)
        await remove_run(settings, ["user"])
        assert violations == [], f"wallet invariants broken: {violations}"


@pytest.fixture
async def users(user_service: ServiceRuntime) -> AsyncIterator[Caller]:
    async with aio.insecure_channel(f"127.0.0.1:{user_service.port}") as channel:
        yield Caller(channel, user_service.settings)


@pytest.fixture
async def db(user_service: ServiceRuntime) -> AsyncIterator[psycopg.AsyncConnection]:
    """A direct connection to the service's database, for assertions."""
    url = user_service.settings.database_url("user")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        yield conn
