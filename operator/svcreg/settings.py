"""``svcreg run`` settings: each flag also reads ``SVCREG_<FLAG>`` from the environment."""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()
    port: int = 8080
    token_audiences: tuple[str, ...] = ()
    probe_allow: tuple[str, ...] = ()
    probe_concurrency: int = 200
    standalone: bool = False
    discovery_only: bool = False
    cors_origins: tuple[str, ...] = ()
    max_wait: float = 300.0
    operator_url: str | None = None
    registration_api: bool = True
    partition_window: float = 30.0
    partition_min_targets: int = 10
    partition_ratio: float = 0.8
    report_stalls: float | None = None  # seconds; log the loop's stack when it stalls longer

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def namespace_globs(self) -> bool:
        """Whether a namespace is a pattern (``t-*``): then the namespaces must be listed and
        watched to know which exist, which needs cluster-wide read access to namespaces."""
        return has_globs(self.namespaces)


def has_globs(namespaces: tuple[str, ...]) -> bool:
    return any(any(c in ns for c in "*?[") for ns in namespaces)


def _env(name: str) -> str | None:
    return os.environ.get("SVCREG_" + name.upper().replace("-", "_"))


def _env_list(name: str) -> list[str]:
    value = _env(name)
    return [item.strip() for item in value.split(",") if item.strip()] if value else []


def _env_bool(name: str) -> bool:
    return (_env(name) or "").lower() in ("1", "true", "yes", "on")


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"--probe-allow: {value!r} is not a CIDR such as 127.0.0.0/8"
        ) from error


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch only this namespace (repeatable; env SVCREG_NAMESPACE, comma-separated)",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)"
    )
    parser.add_argument(
        "--port", type=int, default=int(_env("port") or 8080), help="HTTP port (default 8080)"
    )
    parser.add_argument(
        "--token-audience",
        action="append",
        dest="token_audiences",
        metavar="AUD",
        help="accepted ServiceAccount token audience (repeatable)",
    )
    parser.add_argument(
        "--probe-allow",
        action="append",
        type=_cidr,
        metavar="CIDR",
        help="open an address range the SSRF policy closes by default, e.g. 127.0.0.0/8",
    )
    parser.add_argument(
        "--probe-concurrency",
        type=int,
        default=int(_env("probe-concurrency") or 200),
        help="probe jobs running at once (default 200)",
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        default=_env_bool("standalone"),
        help="no Kopf peering: run as the only prober without coordinating",
    )
    parser.add_argument(
        "--discovery-only",
        action="store_true",
        default=_env_bool("discovery-only"),
        help="serve discovery from a watch; never probe or write (scale reads with replicas)",
    )
    parser.add_argument(
        "--operator-url",
        default=_env("operator-url"),
        metavar="URL",
        help="with --discovery-only: relay heartbeats and registration writes to the operator here",
    )
    parser.add_argument(
        "--no-registration-api",
        dest="registration_api",
        action="store_false",
        default=not _env_bool("no-registration-api"),
        help="turn off PUT/DELETE /v1/registrations (HTTP self-registration)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        metavar="ORIGIN",
        help="allow browser calls from this origin (repeatable; '*' for any); CORS is off by default",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=float(_env("max-wait") or 300),
        help="longest a long poll is held, in seconds; longer waits are clamped (default 300)",
    )
    parser.add_argument(
        "--partition-window",
        type=float,
        default=float(_env("partition-window") or 30),
        help="seconds of probe results the partition guard looks at (default 30)",
    )
    parser.add_argument(
        "--partition-min-targets",
        type=int,
        default=int(_env("partition-min-targets") or 10),
        help="distinct targets needed before a partition can be suspected (default 10)",
    )
    parser.add_argument(
        "--partition-ratio",
        type=float,
        default=float(_env("partition-ratio") or 0.8),
        help="share of targets failing to connect that makes the prober suspect itself (default 0.8)",
    )

    parser.add_argument(
        "--report-stalls-ms",
        type=float,
        default=float(_env("report-stalls-ms") or 0) or None,
        metavar="MS",
        help="log the stack the event loop is running when it stalls longer than MS (off by default)",
    )


def from_args(args: argparse.Namespace) -> Settings:
    namespaces = args.namespaces or ([] if args.all_namespaces else _env_list("namespace"))
    return Settings(
        namespaces=tuple(namespaces),
        port=args.port,
        token_audiences=tuple(args.token_audiences or _env_list("token-audience")),
        probe_allow=tuple(args.probe_allow or [_cidr(c) for c in _env_list("probe-allow")]),
        probe_concurrency=args.probe_concurrency,
        standalone=args.standalone,
        discovery_only=args.discovery_only,
        cors_origins=tuple(args.cors_origins or _env_list("cors-origin")),
        max_wait=min(max(args.max_wait, 0.0), 300.0),
        operator_url=args.operator_url,
        registration_api=args.registration_api,
        partition_window=args.partition_window,
        partition_min_targets=args.partition_min_targets,
        partition_ratio=args.partition_ratio,
        report_stalls=args.report_stalls_ms / 1000 if args.report_stalls_ms else None,
    )
