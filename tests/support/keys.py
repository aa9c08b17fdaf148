"""One set of development keys per test (or benchmark) process, and tokens signed with them:
the identity provider's for admin/operator/gate/user, a service's own for role service."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import replace
from functools import cache
from pathlib import Path

from libs.auth import Role
from libs.auth.dev_keys import (
    ISSUER_JWKS,
    ISSUER_KEY,
    SERVICE_JWKS,
    SERVICE_KEYS,
    dev_issuer,
    dev_token,
    ensure_dev_keys,
)
from libs.auth.keys import new_private_key
from libs.auth.service_identity import ServiceIdentity
from libs.auth.tokens import TokenSigner, audience
from libs.config import SERVICE_PORTS, Settings, load

# Callers that are not services of the mesh but sign as one in tests and benchmarks.
TEST_CALLERS = ("tests", "bench")


@cache
def keys_dir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="tiket-keys-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    ensure_dev_keys(directory, [*SERVICE_PORTS, *TEST_CALLERS])
    return directory


def key_env() -> dict[str, str]:
    """TIKET_* variables pointing a service at this process's keys."""
    directory = keys_dir()
    return {
        "TIKET_JWKS": str(directory / ISSUER_JWKS),
        "TIKET_SERVICE_JWKS": str(directory / SERVICE_JWKS),
        "TIKET_SERVICE_KEY": str(directory / SERVICE_KEYS / "{service}.pem"),
        "TIKET_DEV_ISSUER_KEY": str(directory / ISSUER_KEY),
    }


def token(settings: Settings, role: Role | str, subject: str, ttl_seconds: int = 3600) -> str:
    """A token every service of `settings` accepts from `subject` in `role`; a service
    token is signed with that service's own key (subject: a service or a TEST_CALLER)."""
    if Role(role) is Role.SERVICE:
        signer = _service_signer(subject, settings.service_key, settings.service_jwks)
        audiences = [audience(name) for name in SERVICE_PORTS]
        return signer.mint(Role.SERVICE, subject, audiences, ttl_seconds)
    return dev_token(Path(settings.dev_issuer_key), role, subject, SERVICE_PORTS, ttl_seconds)


def bearer(settings: Settings, role: Role | str, subject: str) -> list[tuple[str, str]]:
    """Call metadata carrying token(settings, role, subject)."""
    return [("authorization", f"Bearer {token(settings, role, subject)}")]


@cache
def _service_signer(subject: str, key: str, jwks: str) -> TokenSigner:
    settings = load(
        {"TIKET_ENV": "test", "TIKET_SERVICE_KEY": key, "TIKET_SERVICE_JWKS": jwks, **_issuer_env()}
    )
    return ServiceIdentity.load(subject, settings).signer()


def _issuer_env() -> dict[str, str]:
    env = key_env()
    return {"TIKET_JWKS": env["TIKET_JWKS"]}


def bad_tokens(settings: Settings) -> dict[str, str]:
    """Tokens every service refuses (UNAUTHENTICATED), by what is wrong with them; each is
    an admin token that would be accepted but for that one thing."""
    issuer = dev_issuer(Path(settings.dev_issuer_key))
    everywhere = [audience(name) for name in SERVICE_PORTS]
    good = issuer.mint(Role.ADMIN, "tests", everywhere, 3600)
    head, payload, signature = good.split(".")
    flipped = "A" if signature[10] != "A" else "B"
    stranger = TokenSigner(new_private_key(), issuer.kid, issuer.issuer)
    return {
        "expired": issuer.mint(Role.ADMIN, "tests", everywhere, -120),
        "wrong audience": issuer.mint(Role.ADMIN, "tests", ["tiket-elsewhere"], 3600),
        "wrong issuer": replace(issuer, issuer="someone-else").mint(
            Role.ADMIN, "tests", everywhere, 3600
        ),
        "tampered signature": f"{head}.{payload}.{signature[:10]}{flipped}{signature[11:]}",
        "signed by an unknown key": stranger.mint(Role.ADMIN, "tests", everywhere, 3600),
        "too long-lived": issuer.mint(
            Role.ADMIN, "tests", everywhere, settings.token_max_lifetime_seconds + 3600
        ),
    }
