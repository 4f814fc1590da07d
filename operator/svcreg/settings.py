"""``svcreg run`` settings, each declared once.

A field here is a flag (``--probe-allow``: the field's name with dashes) and an environment
variable (``SVCREG_PROBE_ALLOW``), documented by its description. pydantic-settings reads the
environment; ``add_arguments`` builds the argparse options from the fields and ``from_args``
lets flags given on the command line win over the environment. Lists are repeatable flags, and
comma-separated in the environment.
"""

from __future__ import annotations

import argparse
import ipaddress
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from svcreg.core.scope import has_globs

Strings = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SVCREG_", frozen=True, extra="ignore")

    namespace: Strings = Field(
        (), description="watch only this namespace (repeatable; a glob such as team-* is allowed)"
    )
    host: str = Field("0.0.0.0", description="HTTP bind address (svcreg dev binds 127.0.0.1)")
    port: int = Field(8080, ge=1, le=65535, description="HTTP port")
    token_audience: Strings = Field((), description="accepted ServiceAccount token audience (repeatable)")
    probe_allow: Strings = Field(
        (), description="open an address range the SSRF policy closes by default, e.g. 127.0.0.0/8"
    )
    probe_concurrency: int = Field(200, ge=1, description="probe jobs running at once")
    probe_slow_concurrency: int = Field(
        1000,
        ge=0,
        description="probe jobs waiting on a slow target (running over 0.5 s) that no longer hold "
        "one of --probe-concurrency's slots",
    )
    standalone: bool = Field(
        False,
        description="run as the only prober, without coordinating; otherwise every operator of the "
        "prober group holds a Lease and probes its share of the registrations",
    )
    lease_namespace: str = Field(
        "",
        description="without --standalone: the namespace of the prober group's Leases (default: the "
        "pod's namespace, else default)",
    )
    prober_group: str = Field(
        "svcreg",
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$",
        description="without --standalone: the operators that share probing (one label value)",
    )
    advertise_url: str | None = Field(
        None,
        description="without --standalone: where other members send heartbeats, reports and "
        "last-probe questions for this member's share (default: http(s)://$POD_IP:--port, else "
        "127.0.0.1)",
    )
    member_server_name: str | None = Field(
        None,
        description="the name other members' https certificates are checked for (their URLs hold "
        "pod addresses; default: the URL's host)",
    )
    discovery_only: bool = Field(
        False, description="serve discovery from a watch; never probe or write (scale reads with replicas)"
    )
    operator_url: str | None = Field(
        None,
        description="with --discovery-only: relay heartbeats and registration writes to the operator here",
    )
    no_registration_api: bool = Field(
        False, description="turn off PUT/DELETE /v1/registrations (HTTP self-registration)"
    )
    no_fast_lookups: bool = Field(
        False,
        description="answer every request through aiohttp: turns off the front that answers repeated "
        "lookups from memory on the connection (it is also off with --access-log)",
    )
    rate_limit: float = Field(
        500.0,
        ge=0,
        description="requests per second each caller identity may make (bursts of twice that; over it, "
        "429 with Retry-After); 0: off",
    )
    tls_cert_file: str | None = Field(
        None, description="serve HTTPS with this PEM certificate (chain); reloaded when it changes"
    )
    tls_key_file: str | None = Field(None, description="the PEM private key of --tls-cert-file")
    operator_ca_file: str | None = Field(
        None,
        description="CA bundle a discovery-only replica trusts for an https --operator-url (and any "
        "process for https --consumer-replica URLs)",
    )
    consumer_window_seconds: float = Field(
        86400.0, gt=0, le=30 * 86400, description="how far back GET /v1/consumers remembers who asked"
    )
    admission_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="serve the validating admission webhook (POST /validate/serviceregistrations) over "
        "HTTPS on this port; 0: off. Needs --admission-cert-file and --admission-key-file",
    )
    admission_cert_file: str | None = Field(
        None, description="the admission webhook's PEM certificate (chain); reloaded when it changes"
    )
    admission_key_file: str | None = Field(None, description="the PEM private key of --admission-cert-file")
    consumer_replica: Strings = Field(
        (),
        description="a discovery replica whose part of GET /v1/consumers this process merges into its own "
        "(URL, repeatable); a host name resolving to several addresses, such as a headless Service of "
        "the replicas, stands for each",
    )
    service_metrics: bool = Field(
        False,
        description="export svcreg_service_availability by namespace and service (names tenants' services "
        "on the unauthenticated /metrics; at most 500 series)",
    )
    no_impersonate_callers: bool = Field(
        False,
        description="the registration API writes with svcreg's own rights instead of as the calling "
        "ServiceAccount (for API servers before Kubernetes 1.36's constrained impersonation)",
    )
    cors_origin: Strings = Field(
        (),
        description="allow browser calls from this origin (repeatable; '*' for any); CORS is off by default",
    )
    max_wait: float = Field(
        300.0, ge=0, description="longest a long poll is held, in seconds; longer waits are clamped"
    )
    api_timeout_seconds: float = Field(
        30.0, gt=0, le=300, description="deadline of each Kubernetes API call svcreg makes itself"
    )
    wedged_after_seconds: float = Field(
        120.0,
        gt=0,
        description="liveness fails when every probe slot has been busy this long (a wedged prober)",
    )
    watch_timeout_seconds: int = Field(
        290,
        ge=5,
        le=1800,
        description="each watch of the API server ends after this long; one silent longer is re-listed",
    )
    review_cache_seconds: float = Field(
        60.0,
        gt=0,
        le=600,
        description="how long a granted TokenReview or SubjectAccessReview is trusted: "
        "the bound on how late a revoked right is noticed",
    )
    max_watchers: int = Field(1000, ge=1, description="open /v1/watch streams at once; over it: 429")
    max_long_polls: int = Field(1000, ge=1, description="long polls waiting at once; over it: 429")
    max_watchers_per_identity: int = Field(
        0, ge=0, description="open /v1/watch streams one identity may hold (0: a tenth of --max-watchers)"
    )
    max_long_polls_per_identity: int = Field(
        0, ge=0, description="long polls one identity may hold (0: a tenth of --max-long-polls)"
    )
    max_connections: int = Field(
        10_000, ge=1, description="open client connections at once; past it a new one gets 503 and is closed"
    )
    partition_reference: Strings = Field(
        (),
        description="HOST:PORT the prober must reach or it suspects itself (repeatable; default "
        "the API server's address), e.g. the API server and the cluster DNS service 10.96.0.10:53",
    )
    partition_hold_seconds: float = Field(
        120.0, gt=0, description="longest a suspected partition holds last-known health"
    )
    partition_check_seconds: float = Field(5.0, gt=0, description="how often the references are checked")
    report_stalls_ms: float = Field(
        0.0,
        ge=0,
        description="log the stack the event loop is running when it stalls longer than this (0: off)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    log_format: Literal["TEXT", "JSON"] = Field("TEXT", description="log lines as text or as JSON objects")
    access_log: bool = Field(
        False,
        description="log every HTTP request (request id, method, route, status, caller, latency) at INFO",
    )

    @field_validator(
        "namespace",
        "token_audience",
        "probe_allow",
        "cors_origin",
        "partition_reference",
        "consumer_replica",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("probe_allow")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return tuple(str(ipaddress.ip_network(c, strict=False)) for c in value)
        except ValueError as error:
            raise ValueError(f"probe-allow: not a CIDR such as 127.0.0.0/8 ({error})") from error

    @field_validator("partition_reference")
    @classmethod
    def _host_ports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"partition-reference: {item!r} is not HOST:PORT")
        return value

    @property
    def partition_references(self) -> tuple[tuple[str, int], ...]:
        return tuple(
            (host.strip("[]"), int(port))
            for host, _, port in (r.rpartition(":") for r in self.partition_reference)
        )

    @field_validator("max_wait")
    @classmethod
    def _clamp_wait(cls, value: float) -> float:
        return min(value, 300.0)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("--tls-cert-file and --tls-key-file go together")
        return self

    # -- derived ---------------------------------------------------------------------------------

    @property
    def namespaces(self) -> tuple[str, ...]:
        return self.namespace

    @property
    def clusterwide(self) -> bool:
        return not self.namespace

    @property
    def namespace_globs(self) -> bool:
        """Whether a namespace is a pattern (``t-*``): then the namespaces must be listed and
        watched to know which exist, which needs cluster-wide read access to namespaces."""
        return has_globs(self.namespace)

    @property
    def registration_api(self) -> bool:
        return not self.no_registration_api

    @property
    def fast_lookups(self) -> bool:
        return not self.no_fast_lookups and not self.access_log

    @property
    def report_stalls(self) -> float | None:
        """Seconds, or None when stall reports are off."""
        return self.report_stalls_ms / 1000 if self.report_stalls_ms else None


# Each setting's topic, in the order ``svcreg run --help`` shows them (an argparse group each).
# Every field is in exactly one (tests/unit/test_settings.py holds it).
TOPICS: dict[str, tuple[str, ...]] = {
    "watching": ("namespace", "api_timeout_seconds", "watch_timeout_seconds"),
    "serving": (
        "host",
        "port",
        "tls_cert_file",
        "tls_key_file",
        "cors_origin",
        "no_fast_lookups",
        "no_registration_api",
        "max_wait",
        "admission_port",
        "admission_cert_file",
        "admission_key_file",
    ),
    "replicas": (
        "discovery_only",
        "operator_url",
        "operator_ca_file",
        "consumer_replica",
        "consumer_window_seconds",
    ),
    "probing": (
        "probe_allow",
        "probe_concurrency",
        "probe_slow_concurrency",
        "wedged_after_seconds",
        "partition_reference",
        "partition_hold_seconds",
        "partition_check_seconds",
    ),
    "membership": ("standalone", "lease_namespace", "prober_group", "advertise_url", "member_server_name"),
    "auth": ("token_audience", "review_cache_seconds", "no_impersonate_callers"),
    "limits": (
        "rate_limit",
        "max_connections",
        "max_watchers",
        "max_long_polls",
        "max_watchers_per_identity",
        "max_long_polls_per_identity",
    ),
    "observability": ("service_metrics", "report_stalls_ms", "log_level", "log_format", "access_log"),
}

_SHORT = {"namespace": "-n"}
_METAVAR = {
    "namespace": "NS",
    "token_audience": "AUD",
    "probe_allow": "CIDR",
    "cors_origin": "ORIGIN",
    "partition_reference": "HOST:PORT",
    "consumer_replica": "URL",
}


def _kind(info: FieldInfo) -> type:
    annotation = info.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is tuple:
        return tuple
    if typing.get_origin(annotation) is Literal:
        return str
    return annotation  # type: ignore[return-value]


def _order(name: str) -> int:
    return [n for names in TOPICS.values() for n in names].index(name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per field; defaults are None, so what is not given comes from the environment
    or the field's default."""
    groups = {topic: parser.add_argument_group(topic) for topic in TOPICS}
    topic_of = {name: topic for topic, names in TOPICS.items() for name in names}
    scope = groups["watching"].add_mutually_exclusive_group()
    for name, info in sorted(Settings.model_fields.items(), key=lambda f: _order(f[0])):
        flag = "--" + name.replace("_", "-")
        env = "SVCREG_" + name.upper()
        default = info.default if info.default not in ((), None, False) else None
        described = f"{info.description} (env {env}" + (
            f"; default {default})" if default is not None else ")"
        )
        flags = [flag, *([_SHORT[name]] if name in _SHORT else [])]
        target: Any = scope if name == "namespace" else groups[topic_of[name]]
        kind = _kind(info)
        if kind is bool:
            target.add_argument(*flags, dest=name, action="store_true", default=None, help=described)
        elif kind is tuple:
            target.add_argument(
                *flags, dest=name, action="append", metavar=_METAVAR.get(name), help=described
            )
        else:
            choices = (
                typing.get_args(info.annotation) if typing.get_origin(info.annotation) is Literal else None
            )
            target.add_argument(
                *flags, dest=name, type=str.upper if choices else kind, choices=choices, help=described
            )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)"
    )


def from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the flags given on the command line winning."""
    given = {
        name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None
    }
    if getattr(args, "all_namespaces", False):
        given["namespace"] = ()
    return Settings(**given)
