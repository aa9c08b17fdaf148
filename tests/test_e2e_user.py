"""End to end: the real `tiket serve user` process, called with the real grpcurl binary."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest

from libs.auth import mint
from libs.config import load
from tests.support.cleanup import remove_run
from tests.support.processes import ROOT, ServiceProcess, grpcurl, service_process
from tests.support.settings import isolated_env

pytestmark = pytest.mark.e2e
SERVICE = "tiket.user.v1.UserService"


@pytest.fixture
def user_process() -> Iterator[ServiceProcess]:
    env = isolated_env()
    with service_process("user", env) as child:
        yield child
    asyncio.run(remove_run(load(env), ["user"]))


@pytest.fixture
def admin_token(user_process: ServiceProcess) -> str:
    return mint(load(user_process.env).jwt_secret, "admin", "e2e")


def test_reflection_lists_and_describes_the_services(user_process):
    listed = grpcurl(user_process.address, "list").split()
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(
        listed
    )
    described = grpcurl(user_process.address, "describe", SERVICE)
    assert "rpc PlaceHold ( .tiket.user.v1.PlaceHoldRequest ) returns ( .tiket.user.v1.Hold )" in (
        described
    )
    health = grpcurl(user_process.address, "grpc.health.v1.Health/Check", data={"service": SERVICE})
    assert health == {"status": "SERVING"}


def test_json_call_chain_gives_the_right_balance(user_process, admin_token):
    def call(method: str, data: dict) -> dict:
        return grpcurl(user_process.address, f"{SERVICE}/{method}", token=admin_token, data=data)

    user = call("CreateUser", {"card_id": "CARD0001", "full_name": "John Doe"})
    call(
        "TopUp",
        {
            "user_id": user["id"],
            "amount": {"currency_code": "IDR", "units": 150000},
            "idempotency_key": "t1",
        },
    )
    hold = call(
        "PlaceHold", {"user_id": user["id"], "amount": {"units": 12000}, "reference": "TXN-1"}
    )
    assert hold["status"] == "HOLD_STATUS_HELD"
    captured = call(
        "CaptureHold", {"hold": {"hold_id": hold["id"]}, "final_amount": {"units": 12000}}
    )
    assert captured["hold"]["status"] == "HOLD_STATUS_CAPTURED"
    wallet = call("GetWallet", {"user_id": user["id"]})
    assert wallet["balance"]["units"] == "138000"
    assert wallet["available"]["units"] == "138000"
    assert "units" not in wallet["held"]  # zero

    with urllib.request.urlopen(f"http://127.0.0.1:{user_process.metrics_port}/metrics") as reply:
        metrics = reply.read().decode()
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="CaptureHold",'
        'grpc_service="tiket.user.v1.UserService",grpc_type="unary"} 1.0'
    ) in metrics

    url = load(user_process.env).database_url("user")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT sum(amount) FROM ledger_entries").fetchone()[0] == 138000


def test_errors_reach_grpcurl_with_status_and_field(user_process, admin_token):
    with pytest.raises(subprocess.CalledProcessError) as err:
        grpcurl(
            user_process.address,
            f"{SERVICE}/CreateUser",
            token=admin_token,
            data={"card_id": "bad id", "full_name": "X"},
        )
    assert "Code: InvalidArgument" in err.value.stderr
    assert '"field":"card_id"' in err.value.stderr.replace(" ", "")
    with pytest.raises(subprocess.CalledProcessError) as err:
        grpcurl(user_process.address, f"{SERVICE}/ListUsers", data={})
    assert "Code: Unauthenticated" in err.value.stderr


def test_sigterm_drains_and_exits_zero(user_process):
    assert user_process.terminate() == 0


def test_production_refuses_the_development_secret():
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "user"],
        cwd=ROOT,
        env={**os.environ, **isolated_env(TIKET_ENV="production")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "TIKET_JWT_SECRET" in done.stderr
    assert "Traceback" not in done.stderr
