"""``GET /v1/explain``: why each candidate instance is, or is not, in a query's answer.

Candidates are the registrations the query is about, whatever their health: those providing its
first capability, else those of its service, else those with its first tag, else every one (at
most ``MAX_CANDIDATES``, the rest counted). For each readable candidate the answer says whether
it is in the answer and every filter it fails, in words, plus what else a caller needs to know:
a spec newer than what the operator has probed (served as Unknown), weight 0 (listed, never
picked by ``select=one``). Candidates in namespaces the caller may not read are neither named
nor counted: a count would tell whether a service, capability or tag name exists elsewhere.
Pure: the route passes the index, the caller's namespaces and the prober's last probes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from svcreg.core.keys import Key
from svcreg.discovery.index import Entry, Index
from svcreg.discovery.query import Query

MAX_CANDIDATES = 500
LastProbes = Callable[[Key], list[dict[str, Any]] | None]


def _candidates(query: Query, index: Index) -> Iterable[Key]:
    if query.capabilities:
        return index.by_capability.get(query.capabilities[0], set())
    if query.service:
        return index.by_service.get(query.service, set())
    if query.tags:
        return index.by_tag.get(query.tags[0], set())
    if query.namespace:
        return index.by_namespace.get(query.namespace, set())
    return index.items.keys()


def _notes(item: Entry) -> list[str]:
    notes = []
    if item.observed_generation < item.generation:
        notes.append(
            f"status is for generation {item.observed_generation}, the spec is generation "
            f"{item.generation}: served as Unknown until the operator has probed this spec"
        )
    if item.weight == 0:
        notes.append("weight 0: listed, never picked by select=one or the clients' resolve")
    return notes


def explain(
    query: Query, index: Index, readable: frozenset[str] | None, last_probes: LastProbes | None = None
) -> dict[str, Any]:
    """The explain answer's body (without ``index``)."""
    found: list[Entry] = []
    for key in sorted(_candidates(query, index)):
        item = index.items.get(key)
        if item is None or (query.namespace and item.namespace != query.namespace):
            continue  # a namespace asked for leaves out the others, unreadable ones included
        if readable is None or item.namespace in readable:
            found.append(item)
    explained = []
    in_panic = index.panic_keys(query, readable)
    for item in found[:MAX_CANDIDATES]:
        reasons = [] if item.key in in_panic else query.why_not(item)
        notes = _notes(item)
        if item.key in in_panic:
            notes.append(
                "in the answer because its service is in panic: fewer of its instances are served "
                "than its ServicePolicy's panicThresholdPercent, so all are (marked panic)"
            )
        entry: dict[str, Any] = {
            "namespace": item.namespace,
            "name": item.name,
            "service": item.service,
            "health": item.health,
            "included": not reasons,
            "reasons": reasons,
            "notes": notes,
        }
        probes = last_probes(item.key) if last_probes is not None else None
        if probes is not None:
            entry["lastProbes"] = probes
        explained.append(entry)
    return {
        "count": len(explained),
        "included": sum(1 for e in explained if e["included"]),
        "truncated": max(0, len(found) - MAX_CANDIDATES),
        "candidates": explained,
    }
