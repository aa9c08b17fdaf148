"""JWT bearer tokens: who is calling (a Principal) and minting tokens for scripts and for
service-to-service calls."""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass
from enum import StrEnum

import jwt

from libs.errors import Unauthenticated

ALGORITHM = "HS256"
ISSUER = "tiket"


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    GATE = "gate"
    USER = "user"
    SERVICE = "service"


@dataclass(frozen=True)
class Principal:
    role: Role
    subject: str


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)


def current_principal() -> Principal | None:
    """The caller of the RPC being served (None for open RPCs such as health)."""
    return _principal.get()


def set_principal(principal: Principal | None) -> None:
    _principal.set(principal)


def mint(secret: str, role: Role | str, subject: str, ttl_seconds: int = 3600) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "role": str(Role(role)),
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str) -> Principal:
    """The principal of a valid token; Unauthenticated saying what is wrong otherwise."""
    return _verify(secret, token)[0]


def _verify(secret: str, token: str) -> tuple[Principal, float]:
    """(principal, expiry as a UNIX time) of a valid token."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated(
            "token expired: mint a new one (tiket token --role … --sub …)"
        ) from None
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    try:
        role = Role(claims.get("role"))
    except ValueError:
        raise Unauthenticated(f"token has unknown role {claims.get('role')!r}") from None
    return Principal(role=role, subject=str(claims["sub"])), float(claims["exp"])


def principal_from_metadata(secret: str, authorization: str | None) -> Principal:
    return verify(secret, _bearer(authorization))


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing token: send 'authorization: Bearer <jwt>' metadata")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("authorization metadata must be 'Bearer <jwt>'")
    return token.strip()


class TokenVerifier:
    """verify() with a bounded memory of tokens already verified, until they expire: gates
    and services send the same token on thousands of calls, and checking an HS256 signature
    costs more than the rest of a cache-hit RPC."""

    def __init__(self, secret: str, max_entries: int = 10_000) -> None:
        self.secret = secret
        self.max_entries = max_entries
        self._known: dict[str, tuple[Principal, float]] = {}

    def from_metadata(self, authorization: str | None) -> Principal:
        token = _bearer(authorization)
        known = self._known.get(token)
        if known is not None and known[1] > time.time():
            return known[0]
        principal, expires = _verify(self.secret, token)
        if len(self._known) >= self.max_entries:
            self._known.clear()
        self._known[token] = (principal, expires)
        return principal
