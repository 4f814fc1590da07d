"""How late the event loop runs, and what held it when it ran very late.

One event loop serves discovery, Kopf and the prober, so anything that holds it (a long
computation, a large JSON document, a garbage collection) delays every answer queued behind
it: that is where a discovery p99 comes from. ``watch_lag`` measures it all the time as a
histogram (``svcreg_event_loop_lag_seconds``), which is how an operator of svcreg sees the
problem. ``StallReporter`` is for finding the cause: a thread that notices when the loop has
not answered for longer than a threshold and logs the stack the loop is executing, so the
log names the code that held it. It is off unless ``--report-stalls-ms`` is given, because
its wake-ups cost a little CPU and GIL hand-offs. A garbage collection holds the GIL, so the
watchdog cannot look while one runs; ``watch_gc`` times every collection instead
(``svcreg_gc_pause_seconds`` by generation).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable

from prometheus_client import Histogram

logger = logging.getLogger(__name__)
LAG_INTERVAL = 0.25


async def watch_lag(histogram: Histogram, interval: float = LAG_INTERVAL) -> None:
    """Sleep ``interval`` again and again and observe how much later than asked each wake-up
    came: a sampled view of how long callbacks wait for the loop."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, loop.time() - asked))


def watch_gc(histogram: Histogram) -> Callable[[], None]:
    """Observe the duration of every garbage collection, labelled by generation (a collection
    pauses the whole event loop). Returns the function that uninstalls it."""
    started: list[float] = [0.0]
    children = [histogram.labels(str(generation)) for generation in range(3)]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            children[min(info.get("generation", 2), 2)].observe(time.perf_counter() - started[0])

    gc.callbacks.append(callback)
    return lambda: gc.callbacks.remove(callback)


class StallReporter:
    """A watchdog thread: logs the loop thread's stack when the loop is stalled.

    Every ``threshold / 4`` the thread posts a callback to the loop. When an earlier callback
    has waited longer than the threshold, the loop is stuck in whatever it is executing right
    now, and that stack is logged at WARNING, once per stall, with how long it had lasted.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float) -> None:
        self._loop = loop
        self._threshold = threshold
        self._loop_thread = threading.get_ident()
        self._posted_at: float | None = None  # when the callback not yet run was posted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="svcreg-stall-reporter", daemon=True)
        self.stalls = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _answered(self) -> None:
        self._posted_at = None

    def _run(self) -> None:
        reported: float | None = None
        while not self._stop.wait(self._threshold / 4):
            posted = self._posted_at
            now = time.monotonic()
            if posted is None:
                self._posted_at = now
                try:
                    self._loop.call_soon_threadsafe(self._answered)
                except RuntimeError:  # the loop closed
                    return
                continue
            if now - posted > self._threshold and reported != posted:
                reported = posted
                self.stalls += 1
                self._report(now - posted)

    def _report(self, stalled: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)\n"
        logger.warning(
            "event loop stalled for at least %.0f ms (threshold %.0f ms); it is executing:\n%s",
            stalled * 1000,
            self._threshold * 1000,
            stack.rstrip(),
        )
