"""The partition guard decides from reference targets only, and holds for a bounded time."""

from __future__ import annotations

import logging

import pytest

from svcreg.operator.partition import GuardSettings, PartitionGuard, tcp_reachable
from tests.targets import TcpListener, free_port


def guard(clock: list[float], hold: float = 60.0, expired: list[int] | None = None) -> PartitionGuard:
    settings = GuardSettings(references=(("api", 443),), failures_to_suspect=2, hold=hold)
    on_expired = (lambda: expired.append(1)) if expired is not None else None
    return PartitionGuard(settings, clock=lambda: clock[0], on_hold_expired=on_expired)


def test_suspects_itself_only_when_every_reference_fails_in_consecutive_rounds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [0.0]
    g = guard(clock)
    assert g.record_round([False]) is False  # one bad round is not evidence yet
    with caplog.at_level(logging.WARNING):
        assert g.record_round([False]) is True
    assert "partition suspected" in caplog.text and g.holding()
    assert g.record_round([True, False]) is False  # one reference answers: not us
    assert not g.holding()


def test_with_no_references_nothing_is_ever_suspected() -> None:
    g = PartitionGuard(GuardSettings(references=()))
    for _ in range(10):
        assert g.record_round([]) is False


def test_the_hold_is_bounded_and_its_end_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    clock, expired = [0.0], []
    g = guard(clock, hold=30.0, expired=expired)
    g.record_round([False])
    g.record_round([False])
    clock[0] = 29.0
    assert g.holding()
    clock[0] = 31.0
    with caplog.at_level(logging.WARNING):
        assert not g.holding()  # still suspected, but the truth is written now
        assert not g.holding()
    assert g.suspected and expired == [1]
    assert "no longer holding" in caplog.text


async def test_reference_reachability_is_a_tcp_connect() -> None:
    listener = TcpListener()
    try:
        assert await tcp_reachable("127.0.0.1", listener.port, 1.0)
    finally:
        listener.close()
    assert not await tcp_reachable("127.0.0.1", free_port(), 1.0)
