"""The health vocabulary: the values a registration's health takes, and which are served.

One definition used by the operator (what it writes), discovery (what it serves by default)
and the client (which addresses it calls).
"""

from __future__ import annotations

import enum


class Health(enum.StrEnum):
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    UNHEALTHY = "Unhealthy"
    UNKNOWN = "Unknown"
    MAINTENANCE = "Maintenance"
    EXPIRED = "Expired"


SERVED: frozenset[Health] = frozenset({Health.HEALTHY, Health.DEGRADED})
"""Health values discovery serves by default and the client calls."""

FAILED: frozenset[Health] = frozenset({Health.UNHEALTHY, Health.EXPIRED})
"""Health values that mean the instance is known not to work (deregisterAfterSeconds counts
from entering one of these)."""
