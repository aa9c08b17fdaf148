"""Who may call which RPC, read from the `(tiket.common.v1.access)` option declared next
to each RPC in the .proto files."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from tiket.common.v1 import access_pb2

from libs.auth import Principal, Role
from libs.errors import PermissionDenied

_ROLE_NAMES = {
    access_pb2.ROLE_ADMIN: Role.ADMIN,
    access_pb2.ROLE_OPERATOR: Role.OPERATOR,
    access_pb2.ROLE_GATE: Role.GATE,
    access_pb2.ROLE_USER: Role.USER,
    access_pb2.ROLE_SERVICE: Role.SERVICE,
}


@dataclass(frozen=True)
class Policy:
    roles: frozenset[Role]
    self_roles: frozenset[Role]
    owner_field: str
    public: bool
    callers: frozenset[str] = frozenset()

    def check(self, principal: Principal, request: Message) -> None:
        """PermissionDenied unless `principal` may make `request`."""
        if principal.role in self.roles:
            if self._refuses_caller(principal):
                raise PermissionDenied(
                    f"service {principal.subject!r} may not call this method; "
                    f"callers: {', '.join(sorted(self.callers))}"
                )
            return
        if principal.role in self.self_roles:
            owner = _owner(request, self.owner_field)
            if owner is not None and owner == principal.subject:
                return
            if owner is None:
                raise PermissionDenied(
                    f"{self.owner_field} is empty: a {principal.role} token acts only on its "
                    f"own {self.owner_field}, so the request must name it"
                )
            raise PermissionDenied(
                f"a {principal.role} token may only act on its own {self.owner_field}"
            )
        raise PermissionDenied(f"role {principal.role} may not call this method")

    def _refuses_caller(self, principal: Principal) -> bool:
        return (
            principal.role is Role.SERVICE
            and bool(self.callers)
            and principal.subject not in self.callers
        )

    @property
    def user_facing(self) -> bool:
        """Riders call it (rate limits apply)."""
        return Role.USER in self.roles or Role.USER in self.self_roles


class MissingPolicy(RuntimeError):
    """An RPC has no access option: every tiket RPC must declare who may call it."""


def policies_for(services: Iterable[ServiceDescriptor]) -> dict[str, Policy]:
    """Map '/package.Service/Method' to its Policy; raise MissingPolicy for an undeclared RPC."""
    found: dict[str, Policy] = {}
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(access_pb2.access):
                raise MissingPolicy(f"{method.full_name} declares no (tiket.common.v1.access)")
            declared = options.Extensions[access_pb2.access]
            if declared.self_roles and not declared.owner_field:
                raise MissingPolicy(f"{method.full_name}: self_roles need an owner_field")
            if declared.callers and access_pb2.ROLE_SERVICE not in declared.roles:
                raise MissingPolicy(f"{method.full_name}: callers need ROLE_SERVICE in roles")
            found[f"/{service.full_name}/{method.name}"] = Policy(
                roles=frozenset(_ROLE_NAMES[r] for r in declared.roles),
                self_roles=frozenset(_ROLE_NAMES[r] for r in declared.self_roles),
                owner_field=declared.owner_field,
                public=declared.public,
                callers=frozenset(declared.callers),
            )
    return found


def _owner(message: Message, fields: str) -> str | None:
    """The owner `fields` name in `message` ("a/b": both fields' values joined by "/");
    None when any of them is empty or unset: an empty owner is nobody, never a match."""
    values = [_field_value(message, path) for path in fields.split("/")]
    return "/".join(values) if all(values) else None


def _field_value(message: Message, path: str) -> str:
    value: object = message
    for part in path.split("."):
        value = getattr(value, part, "")
    return value if isinstance(value, str) else ""
