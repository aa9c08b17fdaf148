"""`tiket serve NAME --workers N`: N processes share the port, metrics are merged, and
SIGTERM drains them all."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import urllib.request

import pytest
from grpc import aio
from tiket.user.v1 import user_pb2, user_pb2_grpc

from libs.config import load
from tests.support import keys
from tests.support.cleanup import remove_run
from tests.support.processes import ROOT, service_process
from tests.support.settings import isolated_env

pytestmark = pytest.mark.e2e


async def list_users_on_fresh_channels(address: str, token: str, channels: int) -> None:
    """One call per channel: each channel is a connection the kernel gives to one worker."""
    for _ in range(channels):
        async with aio.insecure_channel(address) as channel:
            await user_pb2_grpc.UserServiceStub(channel).ListUsers(
                user_pb2.ListUsersRequest(), metadata=[("authorization", f"Bearer {token}")]
            )


def worker_pids(parent: int) -> set[int]:
    with open(f"/proc/{parent}/task/{parent}/children") as children:
        return {int(pid) for pid in children.read().split()}


def test_workers_share_the_port_merge_metrics_and_drain():
    env = {**isolated_env(), "TIKET_USRE_PORT": "50051"}  # misspelt
    settings = load(env)
    try:
        with service_process("user", env, "--workers", "2") as child:
            pids = worker_pids(child.process.pid)
            assert len(pids) == 2
            token = keys.token(settings, "admin", "e2e")
            asyncio.run(list_users_on_fresh_channels(child.address, token, 20))

            with urllib.request.urlopen(f"http://127.0.0.1:{child.metrics_port}/metrics") as reply:
                metrics = reply.read().decode()
            counted = re.search(
                r'grpc_server_handled_total\{grpc_code="OK",grpc_method="ListUsers",[^}]*\} (\S+)',
                metrics,
            )
            assert counted is not None and float(counted.group(1)) == 20.0

            assert child.terminate() == 0
            for pid in pids:  # every worker is gone too
                with pytest.raises(FileNotFoundError):
                    open(f"/proc/{pid}/stat").close()
            # Said once for the service, by its first worker, not by each (nor by none).
            assert child.log.read_text().count("TIKET_USRE_PORT is set") == 1
    finally:  # also when an assertion failed: no database or queue left behind
        asyncio.run(remove_run(settings, ["user"]))


def test_workers_need_a_fixed_port():
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "user", "--workers", "2"],
        cwd=ROOT,
        env={**os.environ, **isolated_env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "workers share one port" in done.stderr
