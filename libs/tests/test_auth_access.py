"""libs.auth (JWT bearer tokens) and libs.server.access (who may call which RPC, read from
the `(tiket.common.v1.access)` option next to each RPC)."""

from __future__ import annotations

import re
import time
import uuid

import jwt
import pytest
from grpc_health.v1 import health_pb2
from tiket.user.v1 import user_pb2

from libs.auth import (
    ISSUER,
    Principal,
    Role,
    TokenVerifier,
    mint,
    principal_from_metadata,
    verify,
)
from libs.errors import PermissionDenied, Unauthenticated
from libs.server.access import MissingPolicy, Policy, policies_for

SECRET = "test-secret-" + "s" * 32
OTHER_SECRET = "other-secret-" + "o" * 32
USER_SERVICE = user_pb2.DESCRIPTOR.services_by_name["UserService"]


# --- tokens --------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_mint_verify_round_trip(role: Role) -> None:
    subject = str(uuid.uuid4())
    assert verify(SECRET, mint(SECRET, role, subject)) == Principal(role, subject)


def test_mint_accepts_role_names_and_sets_expiry() -> None:
    token = mint(SECRET, "gate", "ABC", ttl_seconds=60)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer=ISSUER)
    assert claims["role"] == "gate"
    assert claims["sub"] == "ABC"
    assert 55 <= claims["exp"] - time.time() <= 61
    with pytest.raises(ValueError):
        mint(SECRET, "superuser", "x")


def test_expired_token() -> None:
    token = mint(SECRET, Role.USER, "u1", ttl_seconds=-10)
    with pytest.raises(Unauthenticated, match="expired"):
        verify(SECRET, token)


def test_wrong_secret() -> None:
    with pytest.raises(Unauthenticated, match="invalid token"):
        verify(SECRET, mint(OTHER_SECRET, Role.ADMIN, "root"))


def test_unsigned_token_is_refused() -> None:
    claims = {"iss": ISSUER, "sub": "root", "role": "admin", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, key=None, algorithm="none")
    with pytest.raises(Unauthenticated):
        verify(SECRET, token)


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "someone-else", "sub": "x", "role": "admin"},  # wrong issuer
        {"sub": "x", "role": "admin"},  # no issuer
        {"iss": ISSUER, "role": "admin"},  # no subject
    ],
)
def test_tokens_missing_required_claims(claims: dict) -> None:
    token = jwt.encode({**claims, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated):
        verify(SECRET, token)


@pytest.mark.parametrize("role", ["root", None, ""])
def test_unknown_role(role: str | None) -> None:
    claims = {"iss": ISSUER, "sub": "x", "exp": int(time.time()) + 60}
    if role is not None:
        claims["role"] = role
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="unknown role"):
        verify(SECRET, token)


def test_bearer_metadata() -> None:
    token = mint(SECRET, Role.OPERATOR, "op-7")
    assert principal_from_metadata(SECRET, f"Bearer {token}") == Principal(Role.OPERATOR, "op-7")
    assert principal_from_metadata(SECRET, f"bearer {token}").subject == "op-7"


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "missing token"),
        ("", "missing token"),
        ("Bearer", "Bearer <jwt>"),
        ("Bearer ", "Bearer <jwt>"),
        ("Basic dXNlcjpwYXNz", "Bearer <jwt>"),
        ("Bearer not.a.jwt", "invalid token"),
        ("Bearer garbage", "invalid token"),
        ("Bearer 💥💥💥", "invalid token"),
    ],
)
def test_missing_or_garbage_bearer(authorization: str | None, message: str) -> None:
    with pytest.raises(Unauthenticated, match=re.escape(message)):
        principal_from_metadata(SECRET, authorization)


def test_token_verifier_remembers_valid_tokens() -> None:
    verifier = TokenVerifier(SECRET)
    token = mint(SECRET, Role.GATE, "ABC")
    for _ in range(3):
        assert verifier.from_metadata(f"Bearer {token}") == Principal(Role.GATE, "ABC")


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Basic x", "Bearer garbage", f"Bearer {mint(OTHER_SECRET, 'admin', 'x')}"],
)
def test_token_verifier_refuses_what_verify_refuses(authorization: str | None) -> None:
    verifier = TokenVerifier(SECRET)
    for _ in range(2):  # a refusal is not remembered as a success
        with pytest.raises(Unauthenticated):
            verifier.from_metadata(authorization)


def test_token_verifier_does_not_accept_a_remembered_token_after_it_expires() -> None:
    verifier = TokenVerifier(SECRET)
    token = mint(SECRET, Role.SERVICE, "journey", ttl_seconds=1)
    assert verifier.from_metadata(f"Bearer {token}").subject == "journey"
    time.sleep(2.1)
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.from_metadata(f"Bearer {token}")


def test_token_verifier_memory_is_bounded() -> None:
    verifier = TokenVerifier(SECRET, max_entries=5)
    tokens = [mint(SECRET, Role.USER, f"u{i}") for i in range(12)]
    for i, token in enumerate(tokens):
        assert verifier.from_metadata(f"Bearer {token}").subject == f"u{i}"
    assert len(verifier._known) <= 5
    # Forgotten tokens are verified again, not refused.
    assert verifier.from_metadata(f"Bearer {tokens[0]}").subject == "u0"


# --- policies ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policies() -> dict[str, Policy]:
    return policies_for([USER_SERVICE])


def test_every_user_service_method_has_a_policy(policies: dict[str, Policy]) -> None:
    assert set(policies) == {f"/tiket.user.v1.UserService/{m.name}" for m in USER_SERVICE.methods}
    assert not any(p.public for p in policies.values())


def test_create_user_roles(policies: dict[str, Policy]) -> None:
    policy = policies["/tiket.user.v1.UserService/CreateUser"]
    assert policy.roles == {Role.ADMIN, Role.OPERATOR, Role.SERVICE}
    assert policy.self_roles == frozenset()
    assert policy.public is False


def test_get_wallet_lets_a_user_see_their_own(policies: dict[str, Policy]) -> None:
    policy = policies["/tiket.user.v1.UserService/GetWallet"]
    assert policy.roles == {Role.ADMIN, Role.OPERATOR, Role.SERVICE}
    assert policy.self_roles == {Role.USER}
    assert policy.owner_field == "user_id"


def test_gates_may_read_users_and_export(policies: dict[str, Policy]) -> None:
    assert Role.GATE in policies["/tiket.user.v1.UserService/GetUser"].roles
    assert Role.GATE in policies["/tiket.user.v1.UserService/ExportUsers"].roles
    assert Role.GATE not in policies["/tiket.user.v1.UserService/Charge"].roles


def test_check_allows_a_user_on_their_own_id(policies: dict[str, Policy]) -> None:
    me = str(uuid.uuid4())
    policy = policies["/tiket.user.v1.UserService/GetWallet"]
    policy.check(Principal(Role.USER, me), user_pb2.GetWalletRequest(user_id=me))


def test_check_denies_a_user_on_another_id(policies: dict[str, Policy]) -> None:
    policy = policies["/tiket.user.v1.UserService/GetWallet"]
    request = user_pb2.GetWalletRequest(user_id=str(uuid.uuid4()))
    with pytest.raises(PermissionDenied, match="only act on its own user_id"):
        policy.check(Principal(Role.USER, str(uuid.uuid4())), request)


def test_check_denies_a_user_without_the_owner_field(policies: dict[str, Policy]) -> None:
    me = "ABCDEFGH"
    policy = policies["/tiket.user.v1.UserService/GetUser"]
    # Asking by card id does not prove ownership, even when the subject equals the card.
    with pytest.raises(PermissionDenied):
        policy.check(Principal(Role.USER, me), user_pb2.GetUserRequest(card_id=me))


@pytest.mark.parametrize(
    ("method", "role"),
    [
        ("CreateUser", Role.USER),
        ("CreateUser", Role.GATE),
        ("Charge", Role.USER),
        ("PlaceHold", Role.GATE),
        ("ListUsers", Role.USER),
    ],
)
def test_check_denies_unlisted_roles(policies: dict[str, Policy], method: str, role: Role) -> None:
    message_class = getattr(user_pb2, USER_SERVICE.methods_by_name[method].input_type.name)
    with pytest.raises(PermissionDenied, match=f"role {role} may not call"):
        policies[f"/tiket.user.v1.UserService/{method}"].check(
            Principal(role, "x"), message_class()
        )


def test_check_allows_listed_roles_on_anyone(policies: dict[str, Policy]) -> None:
    request = user_pb2.GetWalletRequest(user_id=str(uuid.uuid4()))
    for role in (Role.ADMIN, Role.OPERATOR, Role.SERVICE):
        policies["/tiket.user.v1.UserService/GetWallet"].check(Principal(role, "any"), request)


def test_nested_owner_field() -> None:
    policy = Policy(
        roles=frozenset(),
        self_roles=frozenset({Role.USER}),
        owner_field="hold.hold_id",
        public=False,
    )
    request = user_pb2.GetHoldRequest(hold=user_pb2.HoldSelector(hold_id="h-1"))
    policy.check(Principal(Role.USER, "h-1"), request)
    with pytest.raises(PermissionDenied):
        policy.check(Principal(Role.USER, "h-2"), request)


def test_a_method_without_the_option_is_refused() -> None:
    health = health_pb2.DESCRIPTOR.services_by_name["Health"]
    with pytest.raises(MissingPolicy, match=r"grpc\.health\.v1\.Health\.Check"):
        policies_for([USER_SERVICE, health])
