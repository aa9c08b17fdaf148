"""Who is calling: a role and a subject, with the shape each role's subject must have."""

from __future__ import annotations

import contextvars
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum

from libs.errors import Unauthenticated
from libs.validation import GATE_CODE, TERMINAL_CODE


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    GATE = "gate"
    USER = "user"
    SERVICE = "service"


# Roles an identity provider (an OIDC issuer; `tiket token` in development) may grant.
# `service` comes only from a service's own key (libs/auth/tokens.py).
ISSUED_ROLES = frozenset({Role.ADMIN, Role.OPERATOR, Role.GATE, Role.USER})

# The longest staff subject: it is stored as "role:subject" in created_by VARCHAR(100).
MAX_STAFF_SUBJECT = 64
_STAFF_SUBJECT = re.compile(rf"[\x21-\x7e]{{1,{MAX_STAFF_SUBJECT}}}")
# A gate speaks for one gate of one terminal: "A/A-ENTRY-01" (terminal code / gate code).
GATE_SUBJECT = re.compile(TERMINAL_CODE.pattern.strip("^$") + "/" + GATE_CODE.pattern.strip("^$"))
SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")


@dataclass(frozen=True)
class Principal:
    role: Role
    subject: str


def check_subject(role: Role, subject: object) -> str:
    """`subject` when it has the shape `role` needs; Unauthenticated naming the problem
    otherwise. An empty subject is never anyone."""
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("token has an empty subject: a token must name who it is for")
    if role is Role.USER:
        if not _is_uuid(subject):
            raise Unauthenticated(
                f"a user token's subject must be the user id (a UUID): {subject[:80]!r}"
            )
    elif role is Role.GATE:
        if not GATE_SUBJECT.fullmatch(subject):
            raise Unauthenticated(
                f"a gate token's subject must be TERMINAL/GATE (e.g. A/A-ENTRY-01): {subject[:80]!r}"
            )
    elif role is Role.SERVICE:
        if not SERVICE_NAME.fullmatch(subject):
            raise Unauthenticated(
                f"a service token's subject must be a service name: {subject[:80]!r}"
            )
    elif not _STAFF_SUBJECT.fullmatch(subject):
        raise Unauthenticated(
            f"token subject must be 1-{MAX_STAFF_SUBJECT} printable characters without spaces"
        )
    return subject


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)


def current_principal() -> Principal | None:
    """The caller of the RPC being served (None for open RPCs such as health)."""
    return _principal.get()


def set_principal(principal: Principal | None) -> None:
    _principal.set(principal)
