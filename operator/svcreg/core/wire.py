"""The discovery API's wire format: every answer and request body, as typed models.

Written once and used three ways: discovery builds its answers from these models, the client
parses answers with them, and ``/openapi.json`` is generated from their JSON Schemas. Field
names are camelCase on the wire and snake_case in Python, as in the CRD. Answers ignore fields
they do not know (a newer server may add some); request bodies refuse them, so a 400 names a
misspelt field instead of dropping it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from svcreg.core.health import SERVED, Health
from svcreg.core.hosts import authority
from svcreg.core.model import ServiceRef, ServiceRegistrationSpec

HeartbeatStatus = Literal["passing", "warning", "critical"]
EventType = Literal["registered", "updated", "deleted", "health-changed", "reset"]


class _Answer(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")


class CapabilityView(_Answer):
    """A capability as a registration declares it."""

    name: str
    version: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = Field(None, description="JSON Schema of what it takes")
    output_schema: dict[str, Any] | None = Field(None, description="JSON Schema of what it gives")
    verified: bool | None = Field(
        None,
        description="Whether its contract's answer validated against outputSchema when last checked "
        "(false until it has passed for this generation; absent: no contract)",
    )


class Address(_Answer):
    """One ready address of a serviceRef registration, with its own probed health."""

    address: str
    port: int
    health: Health


class Registration(_Answer):
    """A registration as discovery serves it: its spec, flattened, and its current health."""

    namespace: str
    name: str
    service: str
    display_name: str | None = None
    version: str | None = None
    endpoint: str | None = None
    service_ref: ServiceRef | None = None
    capabilities: list[CapabilityView] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    weight: Annotated[int, Field(ge=0, le=10000)] = 100
    maintenance: bool = False
    health: Health = Health.UNKNOWN
    ready: bool = False
    instances: list[Address] = Field(default_factory=list, description="serviceRef only: its addresses")
    generation: int = 0
    registered_at: str | None = Field(None, description="when the registration was created (RFC 3339)")
    damped: bool = Field(
        False,
        description="held out of rotation by flap damping (condition Flapping): not served unless health=any",
    )
    ejected: bool = Field(
        False,
        description="ejected as an outlier on what its callers reported (condition Ejected): not served "
        "unless health=any",
    )
    panic: bool = Field(
        False,
        description="in the answer only because its service is in panic (fewer served than its "
        "ServicePolicy's panicThresholdPercent): use with care",
    )

    def urls(self) -> list[str]:
        """Where to call this registration: its endpoint, or each served serviceRef address."""
        if self.endpoint:
            return [self.endpoint]
        return [f"http://{authority(i.address, i.port)}" for i in self.instances if i.health in SERVED]


class ProbeReport(_Answer):
    """The last probe of one instance, as the prober holds it (never written to the API)."""

    instance: str = Field(description="the serviceRef address probed; empty for the endpoint")
    at: str = Field(description="when it ran (RFC 3339)")
    passed: bool
    latency_ms: float
    reason: str
    message: str
    prober: str | None = Field(
        None, description="the member of the prober group that probes it (absent when standalone)"
    )


class RegistrationAnswer(Registration):
    """``GET /v1/services/{namespace}/{name}``."""

    index: int = Field(description="The discovery index's change counter at answer time.")
    last_probes: list[ProbeReport] | None = Field(
        None,
        description="the last probe of each instance, from the member that probes it (asked by "
        "whichever process answers)",
    )


class ServiceList(_Answer):
    """``GET /v1/services``: the matching instances, or with ``select=one`` the one chosen."""

    index: int
    count: int | None = None
    items: list[Registration] | None = None
    selected: Registration | None = None


class CatalogService(_Answer):
    service: str
    tags: list[str]
    versions: list[str]
    namespaces: list[str]
    instances: dict[str, int] = Field(description="instance counts by health")
    total: int


class Catalog(_Answer):
    """``GET /v1/catalog``: every logical service the caller may read."""

    index: int
    count: int
    services: list[CatalogService]


class CapabilityAnswer(_Answer):
    """``GET /v1/capabilities/{name}``: the providers, or with ``select=one`` the one chosen."""

    index: int
    capability: str
    count: int | None = None
    items: list[Registration] | None = None
    selected: Registration | None = None


class ExplainedCandidate(_Answer):
    namespace: str
    name: str
    service: str
    health: str
    included: bool = Field(description="whether the same query's answer includes it")
    reasons: list[str] = Field(description="every filter it fails, in words (empty when included)")
    notes: list[str] = Field(default_factory=list, description="what else to know (stale status, weight 0)")
    last_probes: list[ProbeReport] | None = None


class ExplainAnswer(_Answer):
    """``GET /v1/explain``: why each candidate is or is not in the answer to the same query."""

    index: int
    count: int
    included: int
    truncated: int = Field(description="candidates left out past the first 500")
    candidates: list[ExplainedCandidate]


class Consumer(_Answer):
    identity: str = Field(description="the authenticated caller (a ServiceAccount's username)")
    requests: int
    first_seen: str
    last_seen: str


class ConsumerList(_Answer):
    """``GET /v1/consumers``: who asked for a service or capability within the window."""

    index: int
    kind: Literal["service", "capability"]
    name: str
    window_seconds: float
    consumers: list[Consumer]
    replicas_asked: int = Field(0, description="discovery replicas asked for their part")
    replicas_answered: int = Field(0, description="of those, how many answered in time (their part is in)")


class CapabilitySummary(_Answer):
    name: str
    versions: list[str]
    instances: dict[str, int] = Field(description="instance counts by health")
    total: int


class CapabilityList(_Answer):
    """``GET /v1/capabilities``."""

    index: int
    count: int
    capabilities: list[CapabilitySummary]


class Stats(_Answer):
    """``GET /v1/stats``."""

    index: int
    total: int
    by_health: dict[str, int]
    services: int
    namespaces: int
    unique_capabilities: int
    capabilities_per_service: dict[str, int]
    average_capabilities_per_service: float = 0.0


class WatchEvent(_Answer):
    """The data of one ``/v1/watch`` server-sent event. ``reset`` carries no registration: the
    resume point is unknown, list again."""

    type: EventType
    index: int
    registration: Registration | None = None
    previous_health: Health | None = Field(
        None, description="the health before this change (the new one is registration.health)"
    )


class HeartbeatBody(_Body):
    """``POST /v1/heartbeat/{namespace}/{name}`` body (optional: no body means passing)."""

    status: HeartbeatStatus = "passing"
    note: Annotated[str, Field(max_length=512)] = ""


ReportOutcome = Literal["success", "connection-error", "timeout", "5xx"]


class ReportBody(_Body):
    """``POST /v1/report/{namespace}/{name}``: the outcome of one real call to the instance."""

    outcome: ReportOutcome
    latency_ms: Annotated[float, Field(ge=0, le=3_600_000)] | None = None


class ReportAnswer(_Answer):
    namespace: str
    name: str
    accepted: bool
    ejected: bool = Field(description="whether the instance is ejected now")


class HeartbeatAnswer(_Answer):
    namespace: str
    name: str
    status: HeartbeatStatus
    accepted: bool


Label = Annotated[str, Field(max_length=63)]


class RegistrationBody(_Body):
    """``PUT /v1/registrations/{namespace}/{name}`` body: the spec, validated as the CRD does."""

    spec: ServiceRegistrationSpec
    labels: dict[Label, Label] = Field(default_factory=dict)


class RegistrationWrite(_Answer):
    """The answer to a registration write."""

    namespace: str
    name: str
    created: bool | None = None
    deleted: bool | None = None
    registered_by: str | None = None
    generation: int | None = None


class ErrorDetail(_Answer):
    code: str
    message: str
    parameter: str | None = Field(None, description="the parameter or field at fault (400 only)")


class ErrorAnswer(_Answer):
    """Every error answer: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


ANSWERS: tuple[type[BaseModel], ...] = (
    RegistrationAnswer,
    ServiceList,
    CapabilityAnswer,
    CapabilityList,
    Catalog,
    ExplainAnswer,
    ConsumerList,
    Stats,
    WatchEvent,
    HeartbeatAnswer,
    ReportAnswer,
    RegistrationWrite,
    ErrorAnswer,
)
BODIES: tuple[type[BaseModel], ...] = (HeartbeatBody, ReportBody, RegistrationBody)
