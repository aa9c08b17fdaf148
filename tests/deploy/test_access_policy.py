"""helm/tiket/files/access.yaml (the Istio authorization table) is what the protos say."""

from __future__ import annotations

from deploy.tools import access_policy
from services import registry


def test_access_file_is_up_to_date_with_the_protos() -> None:
    assert access_policy.FILE.read_text() == access_policy.document(), (
        "helm/tiket/files/access.yaml is out of date: run `make access-policy`"
    )


def test_every_service_has_an_entry() -> None:
    table = access_policy.access_table()
    assert sorted(table) == sorted(registry.SERVICES)
    for name, paths in table.items():
        # A process may serve several gRPC services (booking: BookingService, FacilityService).
        prefixes = tuple(f"/{service}/" for service in registry.grpc_service_names(name))
        every = paths["edge"] + paths["mesh"] + [p for c in paths["callers"].values() for p in c]
        assert every, f"{name}: no RPC is reachable"
        assert all(path.startswith(prefixes) for path in every), name


def test_place_hold_is_for_journey_and_booking_only() -> None:
    user = access_policy.access("user")
    place_hold = "/tiket.user.v1.UserService/PlaceHold"
    assert place_hold not in user["mesh"]
    assert {c for c, paths in user["callers"].items() if place_hold in paths} == {
        "journey",
        "booking",
    }
