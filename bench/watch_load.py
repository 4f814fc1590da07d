"""Long-lived answers under load: SSE watchers and long polls on one process while registrations
change at a steady rate.

    .venv/bin/python -m bench.watch_load [--watchers 1000] [--long-polls 1000] [--rate 50] [--seconds 60]

Creates 1,000 registrations (capabilities cap-0..cap-999, ``type: none`` checks) and runs
``svcreg run`` as a subprocess. A separate client process (bench/watch_clients.py, so its CPU is
not the server's) opens --watchers ``GET /v1/watch`` streams (all but 5% filtered by one
capability, 1% unfiltered, so they hear every change) and --long-polls long polls
(``/v1/capabilities/cap-K?index=N&wait=30s``, asked again as each returns), then changes
``spec.metadata.seq`` of a random registration --rate times a second for --seconds.

Delivery latency is measured per delivered event, from the PATCH's answer (the change is
committed in the API server) to the moment the client reads the event (or the long poll's
answer) carrying that ``seq``; an event read before the client handled the PATCH's answer
counts as 0. The client's own event-loop lag is printed beside it, as what the client adds, and
svcreg's own share (from the change entering its index to the event being written to the stream,
``svcreg_watch_delivery_seconds``): the rest is the API server's watch and the machine. As the anchor in the
same run, the PATCH round trip to the API server (what any change costs before svcreg can see
it). Server-side: CPU in cores over the window, RSS at the start and end of the window and its
peak (memory is bounded when the two ends agree), open watchers and long polls as the server
counts them (its /metrics), and its event-loop lag.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import (
    bucket_quantile,
    buckets,
    cpu_seconds,
    free_port,
    log,
    metrics,
    peak_rss_mib,
    rss_mib,
    start_operator,
    total,
    wait,
)
from bench.discovery_load import NAMESPACE, cleanup, setup
from svcreg.devtools.controlplane import cluster, progress


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--long-polls", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="changes per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--keep", action="store_true", help="leave the registrations in place")
    args = parser.parse_args()

    control_plane = cluster.up(report=progress.stderr_reporter)
    env = {**os.environ, **control_plane.env()}
    os.environ.update(control_plane.env())
    token = asyncio.run(setup(1000))
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="svcreg-watch-load-"))
    operator = start_operator(
        env,
        workdir / "operator.log",
        "--standalone",
        "--port",
        str(port),
        "--namespace",
        NAMESPACE,
        "--max-watchers",
        str(args.watchers + 100),
        "--max-long-polls",
        str(args.long_polls + 100),
        # One token opens every watch and poll here: its share is the whole.
        "--max-watchers-per-identity",
        str(args.watchers + 100),
        "--max-long-polls-per-identity",
        str(args.long_polls + 100),
    )
    try:

        def all_healthy() -> bool:
            try:
                return total(metrics(port), "svcreg_registrations", health="Healthy") >= 1000
            except httpx.HTTPError:
                return False

        wait(all_healthy, "every registration to be Healthy", 600, operator)
        results = workdir / "client.json"
        client = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.watch_clients",
                f"http://127.0.0.1:{port}",
                token,
                str(args.watchers),
                str(args.long_polls),
                str(args.rate),
                str(args.seconds),
                str(results),
            ],
            env=env,
        )
        # The window the server is measured over: from when every stream is open to the end.
        opened = workdir / "client.json.opened"
        wait(opened.exists, "every watch and long poll to be open", 300, operator)
        rss_start, cpu_start, started = rss_mib(operator.pid), cpu_seconds(operator.pid), time.monotonic()
        sample_start = metrics(port)
        if client.wait(timeout=args.seconds + 600) != 0:
            raise SystemExit("the client process failed")
        elapsed = time.monotonic() - started
        cores = (cpu_seconds(operator.pid) - cpu_start) / elapsed
        rss_end, peak = rss_mib(operator.pid), peak_rss_mib(operator.pid)
        sample_end = metrics(port)
        delivery = buckets(sample_start, sample_end, "svcreg_watch_delivery_seconds")
        own_p50, own_p99 = bucket_quantile(delivery, 0.5), bucket_quantile(delivery, 0.99)
        loop_p99 = bucket_quantile(buckets(sample_start, sample_end, "svcreg_event_loop_lag_seconds"), 0.99)
        requests = total(sample_end, "svcreg_http_requests_total") - total(
            sample_start, "svcreg_http_requests_total"
        )
        report = json.loads(results.read_text())
        sse, polls, patches = report["sse"], report["long_polls"], report["patch"]
        print(
            f"watch load: {args.watchers} SSE watchers ({report['unfiltered']} unfiltered), "
            f"{args.long_polls} long polls, {report['changes']} changes at {args.rate:g}/s over "
            f"{args.seconds:g} s, 1,000 registrations"
        )
        print(
            f"  SSE delivery        p50 {percentile(sse, 0.5) * 1000:7.1f} ms  p99 "
            f"{percentile(sse, 0.99) * 1000:7.1f} ms  max {max(sse, default=0) * 1000:7.1f} ms  "
            f"({len(sse)} events)"
        )
        print(
            f"  long-poll delivery  p50 {percentile(polls, 0.5) * 1000:7.1f} ms  p99 "
            f"{percentile(polls, 0.99) * 1000:7.1f} ms  max {max(polls, default=0) * 1000:7.1f} ms  "
            f"({len(polls)} answers)"
        )
        print(
            f"  svcreg's own share (index -> stream, svcreg_watch_delivery_seconds) p50 <= "
            f"{own_p50 * 1000:.0f} ms  p99 <= {own_p99 * 1000:.0f} ms"
        )
        print(
            f"  anchor: PATCH round trip p50 {percentile(patches, 0.5) * 1000:7.1f} ms  "
            f"p99 {percentile(patches, 0.99) * 1000:7.1f} ms"
        )
        print(f"  client loop lag max {report['client_lag_max'] * 1000:.0f} ms (what the client adds)")
        print(f"  missed: {report['missed']} expected SSE events never arrived; resets {report['resets']}")
        print(
            f"  server: {cores:.2f} cores; RSS {rss_start:.0f} MiB at start, {rss_end:.0f} MiB at end, "
            f"peak {peak:.0f} MiB; event-loop lag p99 <= {loop_p99 * 1000:.0f} ms; "
            f"requests over the window {requests:.0f}"
        )
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.kill()
        if not args.keep:
            asyncio.run(cleanup())
        log(f"logs in {workdir}")


if __name__ == "__main__":
    main()
