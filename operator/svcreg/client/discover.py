"""``svcreg discover`` and ``svcreg explain``: the discovery client from the shell, a table or
JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import httpx

from svcreg.client import DiscoveryClient, Registration, SvcregError
from svcreg.core import wire

T = TypeVar("T")


def _meta(value: str) -> tuple[str, str]:
    key, sep, wanted = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--meta: {value!r} is not KEY=VALUE")
    return key, wanted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--capability", "-c", action="append", help="provides this (repeatable; all must)")
    parser.add_argument("--service", "-s", help="logical service name")
    parser.add_argument("--tag", "-t", action="append", help="has this tag (repeatable; all must)")
    parser.add_argument("--namespace", "-n", help="only this namespace")
    parser.add_argument("--version", help="semver range, e.g. '>=1.2,<2'")
    parser.add_argument("--health", help="health states (comma-separated) or 'any'; default Healthy,Degraded")
    parser.add_argument("--meta", action="append", type=_meta, metavar="KEY=VALUE", help="metadata match")
    parser.add_argument("--output", "-o", choices=["table", "json"], default="table")
    parser.add_argument("--url", help="discovery URL (default $SVCREG_URL, else the in-cluster Service)")
    parser.add_argument("--token", help="bearer token (default $SVCREG_TOKEN, else the pod's token file)")
    parser.add_argument("--token-file", help="read the token from this file")


def table(items: Sequence[Registration]) -> str:
    columns = ["NAMESPACE", "NAME", "SERVICE", "VERSION", "HEALTH", "WEIGHT", "ENDPOINT", "CAPABILITIES"]
    rows = [
        [
            i.namespace,
            i.name,
            i.service,
            i.version or "",
            i.health,
            str(i.weight),
            i.endpoint or ",".join(f"{a.address}:{a.port}" for a in i.instances),
            ",".join(c.name for c in i.capabilities),
        ]
        for i in items
    ]
    widths = [max(len(r[n]) for r in [columns, *rows]) for n in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [columns, *rows]
    )


def _filters(args: argparse.Namespace) -> dict[str, object]:
    return {
        "capability": args.capability,
        "service": args.service,
        "tag": args.tag,
        "namespace": args.namespace,
        "version": args.version,
        "health": args.health,
        "meta": dict(args.meta or []),
    }


def _ask(args: argparse.Namespace, command: str, ask: Callable[[DiscoveryClient], T]) -> T | None:
    """Call discovery as the command line says; None (with the reason on stderr) when it fails."""
    try:
        with DiscoveryClient(args.url, args.token, token_file=args.token_file) as client:
            return ask(client)
    except SvcregError as error:
        print(f"svcreg {command}: {error}", file=sys.stderr)
    except httpx.HTTPError as error:
        print(f"svcreg {command}: cannot reach discovery at {error.request.url}: {error}", file=sys.stderr)
    return None


def run(args: argparse.Namespace) -> int:
    found = _ask(args, "discover", lambda client: client.services(**_filters(args)))  # type: ignore[arg-type]
    if found is None:
        return 1
    if args.output == "json":
        print(json.dumps(found.model_dump(mode="json", by_alias=True, exclude={"count"}), indent=2))
    elif found.items:
        print(table(found.items))
    else:
        print("no instances match", file=sys.stderr)
    return 0


def explain_table(answer: wire.ExplainAnswer) -> str:
    columns = ["NAMESPACE", "NAME", "HEALTH", "IN", "WHY"]
    rows = []
    for c in answer.candidates:
        why = list(c.reasons) + list(c.notes)
        for probe in c.last_probes or []:
            if not probe.passed:
                why.append(
                    f"last probe {probe.at}: {probe.reason}: {probe.message} ({probe.latency_ms:g} ms)"
                )
        rows.append([c.namespace, c.name, c.health, "yes" if c.included else "no", "; ".join(why) or "-"])
    widths = [max(len(r[n]) for r in [columns, *rows]) for n in range(len(columns) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)), r[-1]])
        for r in [columns, *rows]
    ]
    return "\n".join(lines)


def run_explain(args: argparse.Namespace) -> int:
    answer = _ask(args, "explain", lambda client: client.explain(**_filters(args)))  # type: ignore[arg-type]
    if answer is None:
        return 1
    if args.output == "json":
        print(json.dumps(answer.model_dump(mode="json", by_alias=True), indent=2))
    else:
        print(explain_table(answer))
    return 0
