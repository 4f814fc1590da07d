"""Event-loop cost of one change with many watchers, in process: what ``/v1/watch`` spends
to hand each change to the watchers it concerns and test their filters.

    .venv/bin/python -m bench.watch_fanout            # --watchers 1000 --capabilities 100

1,000 watchers are spread over 100 capabilities (10 per capability); each change concerns one
capability. Prints the CPU time per change of the routed delivery (``Index.router``: only the
10 concerned watchers are handed the change) and, as the anchor in the same run, of waking
every watcher to look at every change (what the watch did before routing, with its O(changes)
read of the history). No HTTP: this isolates the per-change work between writes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from multidict import MultiDict

from svcreg.discovery.index import Index
from svcreg.discovery.query import parse


def body(name: str, capability: str, generation: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "bench", "generation": generation},
        "spec": {"endpoint": f"http://{name}.svc:80", "capabilities": [capability], "tags": ["api"]},
        "status": {"health": "Healthy", "observedGeneration": generation},
    }


def routed(watchers: int, capabilities: int, changes: int) -> tuple[float, int]:
    index = Index()
    subscribers = []
    for w in range(watchers):
        query = parse(MultiDict([("capability", f"c{w % capabilities}")]), "watch")
        subscribers.append((query, index.router.subscribe(query)))
    spent, delivered = 0.0, 0
    for n in range(changes):
        started = time.process_time()
        index.observe("MODIFIED", body(f"r{n % 100}", f"c{n % capabilities}", 1000 + n))
        for query, subscription in subscribers:
            if subscription.pending:  # in the server only the woken watchers run at all
                for change in subscription.take():
                    delivered += query.selects(change.instance)
        spent += time.process_time() - started
    return spent / changes, delivered // changes


def everyone(watchers: int, capabilities: int, changes: int) -> float:
    index = Index()
    queries = [parse(MultiDict([("capability", f"c{w % capabilities}")]), "watch") for w in range(watchers)]
    positions = [index.index] * watchers
    spent = 0.0
    for n in range(changes):
        started = time.process_time()
        index.observe("MODIFIED", body(f"r{n % 100}", f"c{n % capabilities}", 1000 + n))
        for w, query in enumerate(queries):
            for change in index.changes_since(positions[w]) or []:
                query.selects(change.instance)
                positions[w] = change.index
        spent += time.process_time() - started
    return spent / changes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--capabilities", type=int, default=100)
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    new, concerned = routed(args.watchers, args.capabilities, args.changes)
    old = everyone(args.watchers, args.capabilities, args.changes)
    print(
        f"watch fan-out: {args.watchers} watchers over {args.capabilities} capabilities, "
        f"{args.changes} changes, {concerned} watchers concerned per change"
    )
    print(f"  routed to the concerned watchers   {new * 1000:8.3f} ms of CPU per change")
    print(f"  every watcher woken (anchor)       {old * 1000:8.3f} ms of CPU per change")
    print(f"  ratio anchor/routed                {old / new:8.1f}")


if __name__ == "__main__":
    main()
