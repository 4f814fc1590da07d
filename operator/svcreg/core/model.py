"""The ServiceRegistration resource as Python types.

``deploy/crds/`` is the source of truth; these models mirror it field for field (names,
defaults, bounds, patterns) so that code outside the API server (the HTTP registration facade,
the client, unit tests) refuses exactly what ``kubectl apply`` refuses.
``tests/unit/test_model_crd.py`` compares the two schemas and fails when they drift.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from svcreg.core.health import Health
from svcreg.core.keys import Key

GROUP = "svcreg.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ServiceRegistration"
PLURAL = "serviceregistrations"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
SEMVER = (
    r"^(0|[1-9][0-9]*)[.](0|[1-9][0-9]*)[.](0|[1-9][0-9]*)"
    r"(-[0-9A-Za-z-]+([.][0-9A-Za-z-]+)*)?([+][0-9A-Za-z-]+([.][0-9A-Za-z-]+)*)?$"
)
METADATA_KEY = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
HEADER_NAME = r"^[A-Za-z0-9!#$%&*+.^_|~-]+$"
STATUS_CODES = r"^[1-5][0-9][0-9](-[1-5][0-9][0-9])?(,[1-5][0-9][0-9](-[1-5][0-9][0-9])?)*$"
ENDPOINT_SCHEMES = ("http", "https", "grpc", "tcp")


CheckType = Literal["http", "tcp", "grpc", "ttl", "none"]


class _Model(BaseModel):
    """camelCase on the wire as in the CRD, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


DnsLabel = Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]
SemVer = Annotated[str, Field(max_length=128, pattern=SEMVER)]


MAX_SCHEMA_BYTES = 16 * 1024


_SCHEMA_TYPES = {"null", "boolean", "object", "array", "number", "string", "integer"}


def _bounded_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A capability contract is a JSON object of at most 16 KiB (as compact JSON), with the
    shape the capabilities policy checks at apply: at most 64 keywords, ``type`` a JSON type
    (or a list of them), ``properties`` an object of schemas, ``required`` a list of names.
    Full JSON Schema validity is core/contracts.py's (it needs jsonschema)."""
    if value is None:
        return None
    if len(json.dumps(value, separators=(",", ":"))) > MAX_SCHEMA_BYTES:
        raise ValueError(f"a capability schema may be at most {MAX_SCHEMA_BYTES} bytes of JSON")
    kind = value.get("type")
    types = kind if isinstance(kind, list) else [kind] if kind is not None else []
    properties = value.get("properties", {})
    required = value.get("required", [])
    if (
        len(value) > 64
        or not all(isinstance(t, str) and t in _SCHEMA_TYPES for t in types)
        or not isinstance(properties, dict)
        or not all(isinstance(v, dict | bool) for v in properties.values())
        or not isinstance(required, list)
        or not all(isinstance(r, str) for r in required)
    ):
        raise ValueError(
            "inputSchema and outputSchema must be JSON Schema objects (at most 64 keywords; type one of "
            "null, boolean, object, array, number, string, integer; properties an object of schemas; "
            "required a list of names)"
        )
    return value


BoundedSchema = Annotated[dict[str, Any] | None, AfterValidator(_bounded_schema)]


def _request_path(value: str) -> str:
    """An absolute path of printable ASCII: a space or line break would let a registration
    smuggle a second request to whatever the target is."""
    if not value.startswith("/"):
        raise ValueError("must start with '/'")
    if not re.fullmatch(r"[!-~]*", value):
        raise ValueError(
            "must not contain spaces, control characters or non-ASCII characters (percent-encode them)"
        )
    return value


class Contract(_Model):
    """A request whose answer must validate against the capability's ``outputSchema``: the
    prober sends it every ``intervalSeconds`` and records the result as the capability's
    ContractVerified condition. ``body`` (any JSON) is sent as application/json."""

    method: Literal["GET", "POST"] = "GET"
    path: Annotated[str, Field(max_length=1024), AfterValidator(_request_path)] = "/"
    body: Any = None
    interval_seconds: Annotated[int, Field(ge=30, le=86400)] = 300
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0

    @field_validator("body")
    @classmethod
    def _bounded_body(cls, value: Any) -> Any:
        if value is not None and len(json.dumps(value, separators=(",", ":"))) > MAX_SCHEMA_BYTES:
            raise ValueError(f"a contract body may be at most {MAX_SCHEMA_BYTES} bytes of JSON")
        return value


class Capability(_Model):
    name: DnsLabel
    version: SemVer | None = None
    description: Annotated[str, Field(max_length=1024)] | None = None
    # JSON Schema (2020-12) of what the capability takes and gives (checked by core/contracts.py)
    input_schema: BoundedSchema = None
    output_schema: BoundedSchema = None
    contract: Contract | None = None

    @model_validator(mode="after")
    def _contract_needs_schema(self) -> Capability:
        if self.contract is not None and self.output_schema is None:
            raise ValueError(
                f"capability {self.name}: a contract needs an outputSchema to check the answer against"
            )
        return self


def _capability_shorthand(value: Any) -> Any:
    """``- greet`` in YAML is shorthand for ``- {name: greet}``."""
    if isinstance(value, list):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


class ServiceRef(_Model):
    name: Annotated[str, Field(max_length=63, pattern=DNS_1035_LABEL)]
    port: (
        Annotated[int, Field(ge=1, le=65535)] | Annotated[str, Field(max_length=15, pattern=DNS_LABEL)] | None
    ) = None


DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"


class CaBundleRef(_Model):
    """A PEM CA bundle: one key of a ConfigMap or Secret in the registration's own namespace."""

    kind: Literal["ConfigMap", "Secret"]
    name: Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN)]
    key: Annotated[str, Field(max_length=253, pattern=CONFIG_KEY)]


class ProbeTls(_Model):
    """Probe over TLS, verified against a private CA and/or for another name than the address."""

    ca_bundle_ref: CaBundleRef | None = None
    server_name: Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN)] | None = None


class HealthCheck(_Model):
    """How an instance is probed. ``_where`` names the field in messages (a ServicePolicy's
    shadow check has the same shape)."""

    _where: ClassVar[str] = "spec.healthCheck"

    type: CheckType | None = None
    path: Annotated[str, Field(max_length=1024)] = "/"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    method: Literal["GET", "HEAD", "POST", "OPTIONS"] = "GET"
    headers: Annotated[dict[str, Annotated[str, Field(max_length=1024)]], Field(max_length=16)] = Field(
        default_factory=dict
    )
    expected_status: Annotated[str, Field(max_length=64, pattern=STATUS_CODES)] = "200-399"
    grpc_service: Annotated[str, Field(max_length=256)] = ""
    interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 10
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0
    success_threshold: Annotated[int, Field(ge=1, le=100)] = 1
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    degraded_latency_ms: Annotated[int, Field(ge=0, le=3600000)] = 0
    ttl_seconds: Annotated[int, Field(ge=1, le=86400)] = 30
    # Members of the prober group that must see a failure before it counts (capped at the
    # members that answer); the owner asks the others to probe at once. ttl checks have one vantage.
    quorum: Annotated[int, Field(ge=1, le=5)] = 1
    tls: ProbeTls | None = None

    @field_validator("path")
    @classmethod
    def _path_absolute(cls, value: str) -> str:
        try:
            return _request_path(value)  # the CRD refuses the same
        except ValueError as error:
            raise ValueError(f"{cls._where}.path {error}") from None

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, header in value.items():
            if len(key) > 128 or not re.match(HEADER_NAME, key):
                raise ValueError(f"{cls._where}.headers keys must be HTTP header names")
            if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", header):
                raise ValueError(f"{cls._where}.headers values must not contain control characters")
        return value

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> HealthCheck:
        if self.timeout_seconds >= self.interval_seconds:
            where = type(self)._where
            raise ValueError(f"{where}.timeoutSeconds must be below {where}.intervalSeconds")
        return self

    def expected_codes(self) -> list[tuple[int, int]]:
        """``"200,300-399"`` as inclusive ranges ``[(200, 200), (300, 399)]``."""
        ranges = []
        for part in self.expected_status.split(","):
            low, _, high = part.partition("-")
            ranges.append((int(low), int(high or low)))
        return ranges


class FlapDamping(_Model):
    """Route flap damping, in the manner of BGP's (RFC 2439): each change of whether the instance
    is served adds a penalty of 1000 that halves every ``halfLifeSeconds``; above
    ``suppressThreshold`` the instance is held out of rotation (condition Flapping), until the
    penalty decays below ``reuseThreshold``. The penalty never exceeds what decays to the reuse
    threshold in ``maxSuppressSeconds``, which so bounds a suppression."""

    enabled: bool = True
    half_life_seconds: Annotated[int, Field(ge=1, le=86400)] = 300
    suppress_threshold: Annotated[int, Field(ge=1000, le=100000)] = 3000
    reuse_threshold: Annotated[int, Field(ge=1, le=100000)] = 750
    max_suppress_seconds: Annotated[int, Field(ge=1, le=86400)] = 1800

    @model_validator(mode="after")
    def _reuse_below_suppress(self) -> FlapDamping:
        if self.reuse_threshold >= self.suppress_threshold:
            raise ValueError(
                "spec.flapDamping.reuseThreshold must be below spec.flapDamping.suppressThreshold"
            )
        return self


def _validate_endpoint(value: str) -> str:
    """The same checks as the CRD's CEL rules on spec.endpoint, with the same messages."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as error:
        raise ValueError(
            f"spec.endpoint must be an absolute URL such as http://orders.team-a.svc:8000 ({error})"
        ) from error
    if not parts.scheme or not parts.netloc:
        raise ValueError("spec.endpoint must be an absolute URL such as http://orders.team-a.svc:8000")
    if parts.scheme not in ENDPOINT_SCHEMES:
        raise ValueError("spec.endpoint scheme must be http, https, grpc or tcp")
    if not parts.hostname:
        raise ValueError("spec.endpoint must name a host")
    if parts.scheme in ("grpc", "tcp") and port is None:
        raise ValueError("spec.endpoint needs a port for grpc:// and tcp:// URLs")
    return value


class ServiceRegistrationSpec(_Model):
    display_name: Annotated[str, Field(max_length=128)] | None = None
    service: DnsLabel | None = None
    version: SemVer | None = None
    endpoint: Annotated[str, Field(max_length=2048)] | None = None
    service_ref: ServiceRef | None = None
    capabilities: Annotated[
        list[Capability], Field(max_length=64), BeforeValidator(_capability_shorthand)
    ] = Field(default_factory=list)
    tags: Annotated[list[DnsLabel], Field(max_length=32)] = Field(default_factory=list)
    metadata: Annotated[dict[str, Annotated[str, Field(max_length=256)]], Field(max_length=64)] = Field(
        default_factory=dict
    )
    weight: Annotated[int, Field(ge=0, le=10000)] = 100
    maintenance: bool = False
    deregister_after_seconds: Annotated[int, Field(ge=0, le=31536000)] = 0
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    flap_damping: FlapDamping = Field(default_factory=FlapDamping)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else _validate_endpoint(value)

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("spec.tags must not repeat a tag")
        return value

    @field_validator("capabilities")
    @classmethod
    def _unique_capabilities(cls, value: list[Capability]) -> list[Capability]:
        names = [c.name for c in value]
        if len(set(names)) != len(names):
            raise ValueError("spec.capabilities: each capability may be listed once")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if len(key) > 63 or not re.match(METADATA_KEY, key):
                raise ValueError(
                    "spec.metadata keys must be at most 63 letters, digits, '-', '_' or '.', "
                    "starting and ending alphanumeric"
                )
        return value

    @model_validator(mode="after")
    def _endpoint_xor_service_ref(self) -> ServiceRegistrationSpec:
        if (self.endpoint is None) == (self.service_ref is None):
            raise ValueError("exactly one of spec.endpoint and spec.serviceRef must be set")
        return self

    def service_name(self, instance_name: str) -> str:
        """The logical service: ``spec.service``, defaulting to the resource's name."""
        return self.service or instance_name

    def check_type(self) -> CheckType:
        """The probe kind: explicit, else inferred from the endpoint's scheme (serviceRef: tcp)."""
        if self.health_check.type is not None:
            return self.health_check.type
        if self.endpoint is None:
            return "tcp"
        scheme = urlsplit(self.endpoint).scheme
        if scheme in ("http", "https"):
            return "http"
        return "grpc" if scheme == "grpc" else "tcp"


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(_Model):
    type: Annotated[str, Field(max_length=64)]
    status: ConditionStatus
    reason: Annotated[str, Field(max_length=128)]
    message: Annotated[str, Field(max_length=4096)] = ""
    last_transition_time: str
    observed_generation: int | None = None


class InstanceStatus(_Model):
    address: Annotated[str, Field(max_length=64)]
    port: Annotated[int, Field(ge=1, le=65535)]
    health: Health
    reason: Annotated[str, Field(max_length=128)] | None = None
    target_ref: Annotated[str, Field(max_length=256)] | None = None


class CapabilityStatus(_Model):
    """What the prober found of one capability with a contract: its ContractVerified condition."""

    name: Annotated[str, Field(max_length=63)]
    conditions: Annotated[list[Condition], Field(max_length=4)] = Field(default_factory=list)


class ServiceRegistrationStatus(_Model):
    health: Health | None = None
    observed_generation: int | None = None
    conditions: Annotated[list[Condition], Field(max_length=16)] = Field(default_factory=list)
    instances: Annotated[list[InstanceStatus], Field(max_length=1000)] = Field(default_factory=list)
    capabilities: Annotated[list[CapabilityStatus], Field(max_length=64)] = Field(default_factory=list)


class ObjectMeta(BaseModel):
    """The few metadata fields svcreg reads; everything else is the API server's business."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    namespace: str = "default"
    generation: int = 0
    resource_version: str = Field("", alias="resourceVersion")
    uid: str = ""


class ServiceRegistration(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    api_version: Literal["svcreg.io/v1alpha1"] = Field("svcreg.io/v1alpha1", alias="apiVersion")
    kind: Literal["ServiceRegistration"] = "ServiceRegistration"
    metadata: ObjectMeta
    spec: ServiceRegistrationSpec
    status: ServiceRegistrationStatus = Field(default_factory=ServiceRegistrationStatus)

    @property
    def key(self) -> Key:
        return (self.metadata.namespace, self.metadata.name)

    @property
    def service(self) -> str:
        return self.spec.service_name(self.metadata.name)


POLICY_PLURAL = "servicepolicies"
POLICY_KIND = "ServicePolicy"


class ServicePolicySpec(_Model):
    """Settings for one logical service in one namespace (a ServicePolicy's spec)."""

    service: DnsLabel
    panic_threshold_percent: Annotated[int, Field(ge=0, le=100)] = 50
    max_ejected_percent: Annotated[int, Field(ge=0, le=100)] = 50
    health_disruption_budget: DisruptionBudget | None = None
    shadow_health_check: ShadowHealthCheck | None = None


PERCENT = r"^(100|[1-9]?[0-9])%$"


class DisruptionBudget(_Model):
    """At most ``maxUnhealthy`` instances of the service (a count, or a percentage of its
    instances, rounded up) may turn Unhealthy on probe evidence within ``windowSeconds``; a
    further one waits for confirmation (a re-probe, and the other members of the prober group
    where there are any), at most ``maxHoldSeconds``."""

    max_unhealthy: (
        Annotated[int, Field(ge=0, le=100000)] | Annotated[str, Field(max_length=4, pattern=PERCENT)]
    ) = 1
    window_seconds: Annotated[int, Field(ge=1, le=86400)] = 300
    max_hold_seconds: Annotated[int, Field(ge=1, le=3600)] = 60

    def allowed(self, instances: int) -> int:
        """How many of ``instances`` may turn Unhealthy within the window."""
        if isinstance(self.max_unhealthy, int):
            return self.max_unhealthy
        percent = int(self.max_unhealthy.rstrip("%"))
        return -(-percent * instances // 100)  # rounded up, as a PodDisruptionBudget's maxUnavailable


class PolicyBudgetStatus(_Model):
    """The health disruption budget's standing in the current window."""

    allowed: int
    spent: int
    held: int | None = None


class PolicyShadowStatus(_Model):
    """What the shadow health check would decide, beside the real one."""

    agree: int = 0
    would_pull: int = 0
    would_admit: int = 0
    disagreeing: Annotated[list[str], Field(max_length=20)] = Field(default_factory=list)


class ServicePolicyStatus(_Model):
    """What the operator writes to a ServicePolicy (the CRD's ``status``)."""

    observed_generation: int | None = None
    healthy: int = 0
    total: int = 0
    budget: PolicyBudgetStatus | None = None
    shadow: PolicyShadowStatus | None = None
    conditions: Annotated[list[Condition], Field(max_length=8)] = Field(default_factory=list)


class ShadowHealthCheck(HealthCheck):
    """A candidate health check run beside the real one: recorded, never acted on. Only kinds
    that probe (not ttl or none)."""

    _where: ClassVar[str] = "spec.shadowHealthCheck"

    type: Literal["http", "tcp", "grpc"] | None = None


ServicePolicySpec.model_rebuild()
