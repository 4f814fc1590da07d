"""The event-loop instruments: lag, garbage-collection pauses and the stall reporter."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest
from prometheus_client import CollectorRegistry, Histogram

from svcreg.telemetry.loopwatch import StallReporter, watch_gc, watch_lag


def _count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(f"{name}_count", labels)
    return value or 0.0


def test_every_collection_is_timed_by_generation_until_uninstalled() -> None:
    registry = CollectorRegistry()
    pauses = Histogram("pause_seconds", "", ["generation"], registry=registry)
    uninstall = watch_gc(pauses)
    try:
        gc.collect(2)
        assert _count(registry, "pause_seconds", generation="2") >= 1
    finally:
        uninstall()
    counted = _count(registry, "pause_seconds", generation="2")
    gc.collect(2)
    assert _count(registry, "pause_seconds", generation="2") == counted


class _Observed:
    """Stands in for a histogram: keeps what is observed and says when something was."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.arrived = asyncio.Event()

    def observe(self, value: float) -> None:
        self.values.append(value)
        self.arrived.set()


def _hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # the stall under test: nothing else on the loop runs meanwhile


async def test_a_blocked_loop_shows_as_lag() -> None:
    lag = _Observed()
    task = asyncio.create_task(watch_lag(lag, interval=0.01))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0)  # one turn, so the watcher arms its first timer
        _hold_the_loop(0.1)
        await asyncio.wait_for(lag.arrived.wait(), timeout=5)
        assert lag.values[0] >= 0.05
    finally:
        task.cancel()


async def test_a_stall_is_reported_with_the_stack_that_held_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reporter = StallReporter(asyncio.get_running_loop(), threshold=0.02)
    reporter.start()

    def hold_the_loop() -> None:
        deadline = time.monotonic() + 5
        while reporter.stalls == 0 and time.monotonic() < deadline:
            time.sleep(0.005)  # the stall under test; ends as soon as it has been reported

    try:
        with caplog.at_level(logging.WARNING, logger="svcreg.telemetry.loopwatch"):
            hold_the_loop()
    finally:
        reporter.stop()
    assert reporter.stalls == 1
    assert "hold_the_loop" in caplog.text
    assert "event loop stalled" in caplog.text


def test_freed_memory_can_be_given_back_on_glibc() -> None:
    """The operator trims the heap after its start-up listing and now and then (RSS would
    otherwise stay at the burst's peak); on this glibc machine the call is available."""
    from svcreg.telemetry import memory  # noqa: PLC0415

    garbage = [bytes(4096) for _ in range(20_000)]
    del garbage
    assert memory.trim() is True
