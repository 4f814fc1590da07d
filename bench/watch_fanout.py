"""Event-loop cost of one change with many watchers, in process: what ``/v1/watch`` spends
to find each watcher's new changes and test its filter.

    .venv/bin/python -m bench.watch_fanout            # --watchers 1000 --history 10000

Prints the CPU time per change for ``Index.changes_since`` as it is and, as the anchor in the
same run, for the whole-history scan it replaced (each watcher filtering all 10,000 kept
changes). No HTTP: this isolates the per-change work the watch loop does between writes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from multidict import MultiDict

from svcreg.discovery.index import Change, Index
from svcreg.discovery.query import parse


def body(name: str, generation: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "bench", "generation": generation},
        "spec": {"endpoint": f"http://{name}.svc:80", "capabilities": ["greet"], "tags": ["api"]},
        "status": {"health": "Healthy", "observedGeneration": generation},
    }


def scan(index: Index, position: int) -> list[Change]:
    """The replaced implementation: every kept change looked at."""
    return [c for c in index.history if c.index > position]


def per_change(index: Index, watchers: int, changes: int, find: Any) -> float:
    query = parse(MultiDict([("tag", "api")]), "watch")
    positions = [index.index] * watchers
    spent = 0.0
    for n in range(changes):
        index.observe("MODIFIED", body(f"r{n % 100}", 1000 + n))
        started = time.process_time()
        for w in range(watchers):
            for change in find(index, positions[w]):
                query.selects(change.instance)
                positions[w] = change.index
        spent += time.process_time() - started
    return spent / changes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    index = Index()
    for n in range(args.history):
        index.observe("ADDED", body(f"h{n}", 1))
    new = per_change(index, args.watchers, args.changes, Index.changes_since)
    old = per_change(index, args.watchers, args.changes, scan)
    print(
        f"watch fan-out: {args.watchers} watchers, {len(index.history)} changes kept, {args.changes} changes"
    )
    print(f"  changes_since (newest entries)   {new * 1000:8.2f} ms of CPU per change")
    print(f"  whole-history scan (replaced)    {old * 1000:8.2f} ms of CPU per change")
    print(f"  ratio old/new                    {old / new:8.1f}")


if __name__ == "__main__":
    main()
