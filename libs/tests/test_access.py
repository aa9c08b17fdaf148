"""libs.server.access: who may call which RPC, read from the `(tiket.common.v1.access)`
option next to each RPC."""

from __future__ import annotations

import uuid

import pytest
from grpc_health.v1 import health_pb2
from tiket.booking.v1 import facility_pb2
from tiket.journey.v1 import journey_pb2
from tiket.user.v1 import user_pb2

from libs.auth import Principal, Role
from libs.errors import PermissionDenied
from libs.server.access import MissingPolicy, Policy, policies_for

USER_SERVICE = user_pb2.DESCRIPTOR.services_by_name["UserService"]
JOURNEY_SERVICE = journey_pb2.DESCRIPTOR.services_by_name["JourneyService"]
U = "/tiket.user.v1.UserService/"


@pytest.fixture(scope="module")
def policies() -> dict[str, Policy]:
    return policies_for([USER_SERVICE, JOURNEY_SERVICE])


def test_every_method_has_a_policy(policies: dict[str, Policy]) -> None:
    expected = {f"{U}{m.name}" for m in USER_SERVICE.methods}
    expected |= {f"/tiket.journey.v1.JourneyService/{m.name}" for m in JOURNEY_SERVICE.methods}
    assert set(policies) == expected
    assert not any(p.public for p in policies.values())


def test_a_rider_cannot_top_up_even_their_own_wallet(policies: dict[str, Policy]) -> None:
    me = str(uuid.uuid4())
    with pytest.raises(PermissionDenied, match="role user may not call"):
        policies[f"{U}TopUp"].check(Principal(Role.USER, me), user_pb2.TopUpRequest(user_id=me))


@pytest.mark.parametrize(
    "method", ["TopUp", "Charge", "Refund", "PlaceHold", "CaptureHold", "ReleaseHold"]
)
def test_no_rider_moves_money_through_the_wallet_rpcs(
    policies: dict[str, Policy], method: str
) -> None:
    policy = policies[f"{U}{method}"]
    assert Role.USER not in policy.roles | policy.self_roles


def test_only_the_booking_service_tops_up(policies: dict[str, Policy]) -> None:
    policy = policies[f"{U}TopUp"]
    request = user_pb2.TopUpRequest(user_id=str(uuid.uuid4()))
    policy.check(Principal(Role.SERVICE, "booking"), request)
    policy.check(Principal(Role.OPERATOR, "counter-3"), request)
    for caller in ("notification", "analytics", "journey"):
        with pytest.raises(PermissionDenied, match=f"service '{caller}' may not call"):
            policy.check(Principal(Role.SERVICE, caller), request)


def test_holds_are_for_the_journey_and_booking_services(policies: dict[str, Policy]) -> None:
    policy = policies[f"{U}PlaceHold"]
    policy.check(Principal(Role.SERVICE, "journey"), user_pb2.PlaceHoldRequest())
    with pytest.raises(PermissionDenied):
        policy.check(Principal(Role.SERVICE, "notification"), user_pb2.PlaceHoldRequest())


def test_gates_export_the_offline_list_but_read_no_rider(policies: dict[str, Policy]) -> None:
    gate = Principal(Role.GATE, "A/A-ENTRY-01")
    policies[f"{U}ExportUsers"].check(gate, user_pb2.ExportUsersRequest())
    with pytest.raises(PermissionDenied):
        policies[f"{U}GetUser"].check(gate, user_pb2.GetUserRequest(card_id="CARD0001"))
    assert "full_name" not in user_pb2.UserSnapshot.DESCRIPTOR.fields_by_name
    assert "email" not in user_pb2.UserSnapshot.DESCRIPTOR.fields_by_name


def test_a_rider_sees_their_own_wallet_only(policies: dict[str, Policy]) -> None:
    me = str(uuid.uuid4())
    policy = policies[f"{U}GetWallet"]
    policy.check(Principal(Role.USER, me), user_pb2.GetWalletRequest(user_id=me))
    with pytest.raises(PermissionDenied, match="only act on its own user_id"):
        policy.check(Principal(Role.USER, me), user_pb2.GetWalletRequest(user_id=str(uuid.uuid4())))


def test_an_empty_owner_field_matches_nobody(policies: dict[str, Policy]) -> None:
    # The subject is validated non-empty; the owner field may still be empty: a refusal.
    policy = policies["/tiket.journey.v1.JourneyService/ListJourneys"]
    with pytest.raises(PermissionDenied):
        policy.check(Principal(Role.USER, ""), journey_pb2.ListJourneysRequest())


def test_an_empty_owner_field_is_named_in_the_refusal() -> None:
    # A rider's BookFacilitySeries with the user_id in `first` only was told "a user token
    # may only act on its own user_id": they had named themself, in the other field.
    facilities = facility_pb2.DESCRIPTOR.services_by_name["FacilityService"]
    policy = policies_for([facilities])["/tiket.booking.v1.FacilityService/BookFacilitySeries"]
    me = str(uuid.uuid4())
    request = facility_pb2.BookFacilitySeriesRequest(
        first=facility_pb2.BookFacilityRequest(user_id=me)
    )
    with pytest.raises(PermissionDenied) as caught:
        policy.check(Principal(Role.USER, me), request)
    assert caught.value.message == (
        "user_id is empty: a user token acts only on its own user_id, so the request must name it"
    )
    request.user_id = me
    policy.check(Principal(Role.USER, me), request)


def test_asking_by_card_id_proves_no_ownership(policies: dict[str, Policy]) -> None:
    with pytest.raises(PermissionDenied):
        policies[f"{U}GetUser"].check(
            Principal(Role.USER, "ABCDEFGH"), user_pb2.GetUserRequest(card_id="ABCDEFGH")
        )


def test_a_gate_taps_only_as_itself_at_its_own_terminal(policies: dict[str, Policy]) -> None:
    policy = policies["/tiket.journey.v1.JourneyService/CheckIn"]
    assert policy.owner_field == "terminal_code/gate_code"
    gate = Principal(Role.GATE, "A/G1")
    policy.check(gate, journey_pb2.CheckInRequest(terminal_code="A", gate_code="G1"))
    for terminal, code in (("B", "G1"), ("A", "G2"), ("", "G1"), ("A", "")):
        request = journey_pb2.CheckInRequest(terminal_code=terminal, gate_code=code)
        with pytest.raises(PermissionDenied, match="terminal_code/gate_code"):
            policy.check(gate, request)


def test_user_facing_methods_are_those_riders_call(policies: dict[str, Policy]) -> None:
    assert policies[f"{U}GetWallet"].user_facing
    assert policies["/tiket.journey.v1.JourneyService/GetJourney"].user_facing
    assert not policies[f"{U}PlaceHold"].user_facing
    assert not policies["/tiket.journey.v1.JourneyService/CheckIn"].user_facing


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
        policies[f"{U}{method}"].check(Principal(role, "x"), message_class())


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
