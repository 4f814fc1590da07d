"""The discovery client for pods: ``DiscoveryClient`` and ``AsyncDiscoveryClient`` on httpx,
self-registration, and ``svcreg discover``.

In a pod the clients need no arguments: the URL comes from ``SVCREG_URL`` (or the chart's
in-cluster Service name), the token from the mounted ServiceAccount token file, re-read when
the kubelet rotates it. Outside a cluster, pass ``base_url`` and ``token`` or set
``SVCREG_URL`` and ``SVCREG_TOKEN`` (``svcreg dev`` prints both).

``pip install svcreg`` installs exactly what this package needs (httpx, httpx-sse, pydantic).
It imports ``svcreg.core`` and nothing server-side; self-registration through the Kubernetes
API loads ``svcreg.kube`` only when used (the ``kube`` extra).
"""

from svcreg.client.aio import AsyncDiscoveryClient
from svcreg.client.auth import TOKEN_FILE, ServiceAccountAuth
from svcreg.client.calls import DEFAULT_URL, query_params
from svcreg.client.errors import (
    AllInstancesFailed,
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NoHealthyInstance,
    NotFound,
    SvcregError,
    TooManyRequests,
    Unauthorized,
    UnknownCapability,
    UnknownService,
)
from svcreg.client.failover import RetryPolicy, weighted_order
from svcreg.client.sync import DiscoveryClient
from svcreg.core.wire import (
    CapabilityAnswer,
    CapabilityList,
    CapabilitySummary,
    HeartbeatAnswer,
    Registration,
    RegistrationWrite,
    ServiceList,
    Stats,
    WatchEvent,
)

__all__ = [
    "DEFAULT_URL",
    "TOKEN_FILE",
    "AllInstancesFailed",
    "ApiError",
    "AsyncDiscoveryClient",
    "BadRequest",
    "CapabilityAnswer",
    "CapabilityList",
    "CapabilitySummary",
    "Conflict",
    "DiscoveryClient",
    "Forbidden",
    "HeartbeatAnswer",
    "NoHealthyInstance",
    "NotFound",
    "Registration",
    "RegistrationWrite",
    "RetryPolicy",
    "ServiceAccountAuth",
    "ServiceList",
    "Stats",
    "SvcregError",
    "TooManyRequests",
    "Unauthorized",
    "UnknownCapability",
    "UnknownService",
    "WatchEvent",
    "query_params",
    "weighted_order",
]
