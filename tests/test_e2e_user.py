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

from libs.config import load
from tests.support import keys
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
    return keys.token(load(user_process.env), "admin", "e2e")


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


def serve_user(env: dict[str, str]) -> subprocess.CompletedProcess:
    """`tiket serve user` with exactly `env` over the runner's environment minus TIKET_*."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIKET_")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "user"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


OWN_ISSUER = {
    "TIKET_TOKEN_ISSUER": "https://id.example.com",
    "TIKET_AMQP_URL": "amqp://tiket:s3cret@127.0.0.1:5672/",
}


@pytest.mark.parametrize(
    ("env_of", "expected"),
    [
        pytest.param(
            lambda env: {**env, "TIKET_ENV": "production"},
            [
                "TIKET_ENV=production development defaults are refused",
                "the development token issuer 'tiket-dev'",
                "TIKET_TOKEN_ISSUER",
                "RabbitMQ's guest credentials",
                "TIKET_AMQP_URL",
            ],
            id="production-with-development-issuer-and-guest",
        ),
        pytest.param(
            lambda env: {k: v for k, v in env.items() if k != "TIKET_ENV"},
            [
                "TIKET_ENV is not set, so development defaults are refused",
                "the development token issuer 'tiket-dev'",
                "RabbitMQ's guest credentials",
            ],
            id="unset-env-is-production",
        ),
        pytest.param(
            lambda env: {**env, **OWN_ISSUER, "TIKET_ENV": "production"},
            [
                "TIKET_JWKS holds development keys (dev/",
                "refused unless TIKET_ENV=development or test",
            ],
            id="production-with-own-issuer-but-development-keys",
        ),
    ],
)
def test_production_refuses_development_issuer_credentials_and_keys(env_of, expected):
    done = serve_user(env_of(isolated_env()))
    assert done.returncode == 1, done.stderr
    assert "cannot start" in done.stderr
    for words in expected:
        assert words in done.stderr, (words, done.stderr)
    if "TIKET_TOKEN_ISSUER" in env_of({}):  # its own issuer and credentials: not those
        assert "development defaults are refused" not in done.stderr
    assert "Traceback" not in done.stderr
