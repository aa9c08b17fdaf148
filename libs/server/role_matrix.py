"""The role matrix: for every RPC and every kind of caller, the answer the access layer gives,
derived from the `(tiket.common.v1.access)` options. `python -m services.role_matrix` writes
it to docs/role-matrix.md; tests/test_e2e_role_matrix.py calls every RPC of the running
services as each caller and checks the answers against that file."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from libs.auth import Role
from libs.server.access import Policy


class Answer(StrEnum):
    # Past the access check: the call's own answer (OK, INVALID_ARGUMENT, NOT_FOUND …).
    ALLOWED = "✓"
    PERMISSION_DENIED = "denied"
    UNAUTHENTICATED = "unauth"


@dataclass(frozen=True)
class Caller:
    """One column: a kind of caller. `is_self`: the request names the caller as its owner;
    `listed`: for a service, it is among the RPC's `callers`; `bad_token`: what is wrong
    with its token (then it is refused before any role is looked at)."""

    column: str
    role: Role | None = None
    is_self: bool = False
    listed: bool = True
    bad_token: str = ""


CALLERS = (
    Caller("admin", Role.ADMIN),
    Caller("operator", Role.OPERATOR),
    Caller("gate, self", Role.GATE, is_self=True),
    Caller("gate, other", Role.GATE),
    Caller("user, self", Role.USER, is_self=True),
    Caller("user, other", Role.USER),
    Caller("service, listed", Role.SERVICE),
    Caller("service, unlisted", Role.SERVICE, listed=False),
    Caller("no token", bad_token="no token"),
    Caller("expired", bad_token="expired"),
    Caller("wrong audience", bad_token="wrong audience"),
    Caller("wrong issuer", bad_token="wrong issuer"),
    Caller("tampered", bad_token="tampered signature"),
)


def expected(policy: Policy, caller: Caller, *, owner_checked: bool = False) -> Answer:
    """What the access layer answers `caller` on an RPC with `policy`. `owner_checked`: the
    service itself refuses a rider another rider's record (GetJourney by id)."""
    if policy.public:
        return Answer.ALLOWED
    if caller.bad_token or caller.role is None:
        return Answer.UNAUTHENTICATED
    if owner_checked and caller.role is Role.USER and not caller.is_self:
        return Answer.PERMISSION_DENIED
    if caller.role in policy.roles:
        if caller.role is Role.SERVICE and policy.callers and not caller.listed:
            return Answer.PERMISSION_DENIED
        return Answer.ALLOWED
    if caller.role in policy.self_roles and caller.is_self:
        return Answer.ALLOWED
    return Answer.PERMISSION_DENIED


def render(policies: Mapping[str, Policy], owner_checked: Iterable[str] = ()) -> str:
    """The matrix as a Markdown table, one row per '/package.Service/Method' of `policies`.
    `owner_checked`: RPCs open to `user` whose owner the service itself checks (a journey by
    its id): marked, since the answer then depends on whose the named record is."""
    marked = set(owner_checked)
    header = ["RPC", "callers", *(c.column for c in CALLERS)]
    lines = [_row(header), _row(["---"] * len(header))]
    for method in sorted(policies):
        policy = policies[method]
        name = method.removeprefix("/").replace("/", ".").rsplit(".", 2)
        checked = method in marked
        cells = [f"`{name[1]}.{name[2]}`" + (" ¹" if checked else "")]
        cells.append(_services(policy))
        cells += [expected(policy, c, owner_checked=checked).value for c in CALLERS]
        lines.append(_row(cells))
    return "\n".join(lines) + "\n"


def parse(table: str) -> dict[str, dict[str, Answer]]:
    """'Service.Method' -> column -> answer, read back from render()'s table."""
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    found: dict[str, dict[str, Answer]] = {}
    for line in rows:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rpc = cells[0].split("`")[1]
        found[rpc] = {
            caller.column: Answer(cell) for caller, cell in zip(CALLERS, cells[2:], strict=True)
        }
    return found


def _services(policy: Policy) -> str:
    if Role.SERVICE not in policy.roles:
        return "–"
    return ", ".join(sorted(policy.callers)) or "any"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
