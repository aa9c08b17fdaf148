"""Hypothesis settings for fuzzing a running service over gRPC."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

from libs.auth import Role, check_subject
from libs.errors import Unauthenticated

# No shrinking: the service keeps its state between examples, so a shrunk example would not
# meet the same state; the first failing example is reported as it was. Nothing is written
# into a hypothesis database, and the slow, fixture-fed examples are expected.
SERVICE_FUZZ = settings(
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def well_formed(role: Role | str, subject: str) -> bool:
    """Whether a token for `subject` in `role` has a subject the services accept: a fuzz test
    may see UNAUTHENTICATED only for one that has not (a junk gate code made into a subject)."""
    try:
        check_subject(Role(role), subject)
    except Unauthenticated:
        return False
    return True
