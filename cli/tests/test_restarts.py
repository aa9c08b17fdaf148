"""`tiket up`'s restart rule for a service that exits on its own (pure)."""

from __future__ import annotations

from cli.supervisor import Restarts


def test_a_long_lived_service_starts_again_at_once_every_time() -> None:
    restarts = Restarts()
    assert [restarts.after_exit(3600.0) for _ in range(10)] == [0.0] * 10


def test_a_service_that_keeps_exiting_young_waits_longer_each_time_then_is_given_up() -> None:
    restarts = Restarts(young_seconds=30.0, give_up_after=5)
    assert [restarts.after_exit(2.0) for _ in range(4)] == [1.0, 3.0, 7.0, 15.0]
    assert restarts.after_exit(2.0) is None


def test_a_long_life_forgives_the_young_exits_before_it() -> None:
    restarts = Restarts(young_seconds=30.0, give_up_after=3)
    assert [restarts.after_exit(1.0), restarts.after_exit(1.0)] == [1.0, 3.0]
    assert restarts.after_exit(31.0) == 0.0
    assert [restarts.after_exit(1.0), restarts.after_exit(1.0)] == [1.0, 3.0]
    assert restarts.after_exit(1.0) is None
