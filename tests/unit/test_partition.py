from __future__ import annotations

import logging

import pytest

from svcreg.operator.partition import GuardSettings, PartitionGuard


def feed(guard: PartitionGuard, failing: int, passing: int, now: float) -> bool:
    for i in range(failing):
        guard.record(("fail", i), True, now)
    for i in range(passing):
        guard.record(("pass", i), False, now)
    return guard.evaluate(now)


def test_suspects_itself_when_most_targets_fail_to_connect(caplog: pytest.LogCaptureFixture) -> None:
    guard = PartitionGuard(GuardSettings(window=30, min_targets=10, ratio=0.8))
    with caplog.at_level(logging.WARNING):
        assert feed(guard, failing=9, passing=1, now=100.0) is True
    assert "partition suspected" in caplog.text


def test_not_suspected_below_the_ratio_or_with_too_few_targets() -> None:
    assert (
        feed(PartitionGuard(GuardSettings(min_targets=10, ratio=0.8)), failing=7, passing=3, now=0) is False
    )
    assert (
        feed(PartitionGuard(GuardSettings(min_targets=10, ratio=0.8)), failing=5, passing=0, now=0) is False
    )


def test_clears_when_failures_stop_being_global(caplog: pytest.LogCaptureFixture) -> None:
    guard = PartitionGuard(GuardSettings(window=30, min_targets=10, ratio=0.8))
    assert feed(guard, failing=10, passing=0, now=0.0)
    # The same targets now connect again.
    for i in range(5):
        guard.record(("fail", i), False, 1.0)
    with caplog.at_level(logging.WARNING):
        assert guard.evaluate(1.0) is False
    assert "partition cleared" in caplog.text
    assert guard.counts == (5, 10)


def test_old_results_leave_the_window() -> None:
    guard = PartitionGuard(GuardSettings(window=30, min_targets=10, ratio=0.8))
    assert feed(guard, failing=10, passing=0, now=0.0)
    assert guard.evaluate(31.0) is False
    assert guard.counts == (0, 0)
