"""Discovery query parameters: parsed strictly, so a bad query is a 400 that names the parameter."""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import semantic_version

from svcreg.core.errors import BadParameter
from svcreg.core.health import SERVED, Health
from svcreg.core.model import DNS_LABEL

if TYPE_CHECKING:
    from multidict import MultiMapping

    from svcreg.discovery.index import Entry

DEFAULT_HEALTH = frozenset(h.value for h in SERVED)
MAX_WAIT_SECONDS = 300.0
MAX_QUERY_LENGTH = 4096
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
_LABEL = re.compile(DNS_LABEL)
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A service name pattern: the characters of a DNS label, with * (any run) and ? (one character).
_SERVICE_GLOB = re.compile(r"^[-a-z0-9*?]{1,63}$")
_HEALTH_BY_LOWER = {h.value.lower(): h.value for h in Health}


@dataclass(frozen=True)
class Query:
    service: str | None = None
    service_glob: str | None = None  # service=pay* : matched by fnmatch, case-sensitive
    namespace: str | None = None
    capabilities: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    version: semantic_version.SimpleSpec | None = None
    capability_version: semantic_version.SimpleSpec | None = None
    capability_for_version: str | None = None
    health: frozenset[str] | None = DEFAULT_HEALTH  # None: any
    meta: tuple[tuple[str, str], ...] = ()
    index: int | None = None
    wait: float | None = None
    select_one: bool = False
    # verified=true: only instances whose contract of each named capability passed last time
    verified: bool = False
    canonical: tuple[object, ...] = field(default=(), compare=False)

    def without_health(self) -> Query:
        """The same query with every health accepted (for a service in panic mode)."""
        return dataclasses.replace(self, health=None)

    def selects(self, item: Entry) -> bool:
        """Every filter, including those the index answers from its sets (for watch events)."""
        if self.service is not None and item.service != self.service:
            return False
        if self.namespace is not None and item.namespace != self.namespace:
            return False
        names = {n for n, _, _ in item.capabilities}
        if any(c not in names for c in self.capabilities) or any(t not in item.tags for t in self.tags):
            return False
        return self.matches(item)

    def matches(self, item: Entry) -> bool:
        """The filters the index cannot answer from its sets: health, metadata, versions, a
        service name pattern."""
        if self.service_glob is not None and not fnmatch.fnmatchcase(item.service, self.service_glob):
            return False
        if self.health is not None:
            if item.maintenance and "Maintenance" not in self.health:
                return False
            if item.health not in self.health or item.damped or item.ejected:
                return False
        if self.meta:
            metadata = dict(item.metadata)
            if any(metadata.get(k) != v for k, v in self.meta):
                return False
        if self.version is not None and not _matches(self.version, item.version):
            return False
        if self.verified and any(c not in item.verified for c in self.capabilities):
            return False
        if self.capability_version is not None and self.capability_for_version is not None:
            return _matches(self.capability_version, item.capability_version(self.capability_for_version))
        return True

    def why_not(self, item: Entry) -> list[str]:
        """Every filter ``item`` fails, in words (empty: it is in the answer). The same tests as
        ``selects``, kept apart so the hot path stays a chain of early returns; a unit test holds
        the two to the same verdict."""
        reasons: list[str] = []
        if self.service is not None and item.service != self.service:
            reasons.append(f"service is {item.service}, not {self.service}")
        if self.service_glob is not None and not fnmatch.fnmatchcase(item.service, self.service_glob):
            reasons.append(f"service {item.service} does not match {self.service_glob}")
        if self.namespace is not None and item.namespace != self.namespace:
            reasons.append(f"namespace is {item.namespace}, not {self.namespace}")
        names = {n for n, _, _ in item.capabilities}
        reasons += [f"does not provide capability {c}" for c in self.capabilities if c not in names]
        reasons += [f"lacks tag {t}" for t in self.tags if t not in item.tags]
        if self.health is not None:
            if item.maintenance and "Maintenance" not in self.health:
                reasons.append("in maintenance (asked for health=Maintenance or any to see it)")
            elif item.health not in self.health:
                wanted = ", ".join(sorted(self.health))
                reasons.append(f"health is {item.health}, the query wants {wanted}")
            elif item.ejected:
                reasons.append(
                    "ejected as an outlier: several callers reported failed calls (health=any shows it)"
                )
            elif item.damped:
                reasons.append("held out of rotation by flap damping: it flapped (health=any shows it)")
        metadata = dict(item.metadata)
        for key, value in self.meta:
            if metadata.get(key) != value:
                found = "absent" if key not in metadata else repr(metadata[key])
                reasons.append(f"metadata {key} is {found}, not {value!r}")
        if self.version is not None and not _matches(self.version, item.version):
            reasons.append(f"version {item.version or '(none)'} is outside {self.version.expression}")
        if self.verified:
            reasons += [
                f"capability {c} is not verified: its contract has not passed (see status.capabilities)"
                for c in self.capabilities
                if c in names and c not in item.verified
            ]
        if self.capability_version is not None and self.capability_for_version is not None:
            own = item.capability_version(self.capability_for_version)
            if not _matches(self.capability_version, own):
                reasons.append(
                    f"capability {self.capability_for_version} version {own or '(none)'} is outside "
                    f"{self.capability_version.expression}"
                )
        return reasons


def _matches(spec: semantic_version.SimpleSpec, version: str | None) -> bool:
    if version is None:
        return False
    try:
        return bool(spec.match(semantic_version.Version(version)))
    except ValueError:
        return False


def _label(parameter: str, value: str) -> str:
    if len(value) > 63 or not _LABEL.match(value):
        raise BadParameter(parameter, f"{value!r} is not a DNS-1123 label")
    return value


def _duration(parameter: str, value: str) -> float:
    match = _DURATION.match(value)
    if not match:
        raise BadParameter(parameter, f"{value!r} is not a duration such as 30s, 500ms or 2m")
    number = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    return min(number, MAX_WAIT_SECONDS)  # longer waits are clamped, as documented


MAX_RANGE_LENGTH = 128
_NUMBER = r"(0|[1-9][0-9]{0,8})"
_CLAUSE = rf"(==|!=|<=|>=|<|>|\^|~=|~)?{_NUMBER}(\.{_NUMBER}(\.{_NUMBER})?)?"
# The ranges accepted, exactly: comma-separated clauses of an operator and a release
# (1, 1.2 or 1.2.3). Published as the parameter's pattern in /openapi.json, so what the schema
# allows and what the server accepts are the same set.
RANGE_PATTERN = rf"^{_CLAUSE}(,{_CLAUSE})*$"
_RANGE = re.compile(RANGE_PATTERN)


def _range(parameter: str, value: str) -> semantic_version.SimpleSpec:
    if len(value) > MAX_RANGE_LENGTH:
        raise BadParameter(parameter, f"a semver range of at most {MAX_RANGE_LENGTH} characters")
    if not _RANGE.match(value):
        raise BadParameter(parameter, f"{value!r} is not a semver range such as >=1.2,<2 or ^1.4")
    try:
        return semantic_version.SimpleSpec(value)
    except (ValueError, RecursionError) as error:
        raise BadParameter(
            parameter, f"{value!r} is not a semver range such as >=1.2,<2 ({error})"
        ) from error


ALLOWED = {
    "services": {
        "service",
        "namespace",
        "capability",
        "tag",
        "version",
        "health",
        "select",
        "index",
        "wait",
        "verified",
    },
    "catalog": {"namespace", "index", "wait"},
    "explain": {"service", "namespace", "capability", "tag", "version", "health", "verified"},
    "consumers": {"service", "capability", "scope"},
    "capability": {"namespace", "version", "health", "select", "index", "wait", "tag", "verified"},
    "capabilities": {"namespace", "index", "wait"},
    "watch": {"service", "namespace", "capability", "tag", "version", "health", "verified"},
    "stats": {"namespace"},
    "one": set(),
}


_PARSED: dict[tuple[str, str | None, str], Query] = {}
_PARSED_LIMIT = 1024


def remember(raw_query_string: str, route: str, capability: str | None, query: Query) -> None:
    """Keep ``query`` as what ``raw_query_string`` means on ``route``: callers repeat the same
    few queries, and a Query is immutable. Keyed by the raw (still percent-encoded) query
    string, so ``%26`` and ``%2526`` are two keys, and called only once the caller is
    authenticated, so requests without a valid token cannot churn it. At most
    ``_PARSED_LIMIT`` entries, the oldest dropped first."""
    key = (route, capability, raw_query_string)
    if key in _PARSED:
        return
    if len(_PARSED) >= _PARSED_LIMIT:
        del _PARSED[next(iter(_PARSED))]
    _PARSED[key] = query


def remembered(raw_query_string: str, route: str, capability: str | None = None) -> Query | None:
    """The query ``remember`` kept for this raw query string, or None."""
    return _PARSED.get((route, capability, raw_query_string))


def parse(params: MultiMapping[str], route: str, capability: str | None = None) -> Query:
    """Parse the query string of ``route``; raise BadParameter naming the first bad parameter
    (names first, then lengths, then each parameter in the order below)."""
    meta = _names_and_meta(params, route)
    fields: dict[str, object] = {
        **_service(params),
        **_namespace(params),
        **_capabilities(params, capability),
        **_tags(params),
        **_version(params, route, capability),
        **_health(params),
        **_index_and_wait(params),
        **_select(params),
    }
    fields |= _verified(params, bool(fields["capabilities"]))
    query = Query(meta=meta, **fields)  # type: ignore[arg-type]
    return dataclasses.replace(query, canonical=canonical(query, route))


def _names_and_meta(params: MultiMapping[str], route: str) -> tuple[tuple[str, str], ...]:
    """Every parameter known to ``route`` and every value bounded; the metadata filters."""
    allowed = ALLOWED[route]
    for name in params:
        if name.startswith("meta."):
            if route not in ("services", "watch", "capability", "explain"):
                raise BadParameter(name, "metadata filters are not supported on this route")
            key = name[5:]
            if not key or len(key) > 63:
                raise BadParameter(name, "meta.KEY needs a key of 1-63 characters")
        elif name not in allowed:
            raise BadParameter(
                name, f"unknown parameter; this route accepts {', '.join(sorted(allowed)) or 'none'}"
            )
    meta: list[tuple[str, str]] = []
    for name, value in params.items():
        if len(value) > 1024:
            raise BadParameter(name, "value longer than 1024 characters")
        if name.startswith("meta."):
            meta.append((name[5:], value))
    return tuple(sorted(set(meta)))


def _service(params: MultiMapping[str]) -> dict[str, object]:
    if "service" not in params:
        return {}
    value = _single(params, "service")
    if "*" in value or "?" in value:
        if not _SERVICE_GLOB.match(value):
            raise BadParameter("service", f"{value!r} is not a service name or pattern such as pay*")
        return {"service_glob": value}
    return {"service": _label("service", value)}


def _namespace(params: MultiMapping[str]) -> dict[str, object]:
    if "namespace" not in params:
        return {}
    value = _single(params, "namespace")
    if len(value) > 63 or not _NAMESPACE.match(value):
        raise BadParameter("namespace", f"{value!r} is not a namespace name")
    return {"namespace": value}


def _capabilities(params: MultiMapping[str], capability: str | None) -> dict[str, object]:
    named = tuple(_label("capability", v) for v in params.getall("capability", []))
    if capability is not None:
        named = (_label("capability", capability),)
    return {"capabilities": named}


def _tags(params: MultiMapping[str]) -> dict[str, object]:
    # tag=a,b and tag=a&tag=b both mean: every one of them; empty parts name nothing (as the
    # OpenAPI document's pattern says).
    return {
        "tags": tuple(_label("tag", part) for v in params.getall("tag", []) for part in v.split(",") if part)
    }


def _version(params: MultiMapping[str], route: str, capability: str | None) -> dict[str, object]:
    if "version" not in params:
        return {}
    spec = _range("version", _single(params, "version"))
    if route == "capability":
        return {"capability_version": spec, "capability_for_version": capability}
    return {"version": spec}


def _health(params: MultiMapping[str]) -> dict[str, object]:
    values = params.getall("health", [])
    if not values:
        return {}
    # Case-insensitive: healthy, HEALTHY and Healthy are one value.
    wanted = {part.strip().lower() for value in values for part in value.split(",") if part.strip()}
    if "any" in wanted:
        return {"health": None}  # any state, whatever else is named beside it
    unknown = sorted(wanted - _HEALTH_BY_LOWER.keys())
    if unknown:
        known = ", ".join(sorted(_HEALTH_BY_LOWER.values()))
        raise BadParameter("health", f"{unknown[0]!r} is not one of {known} or any")
    return {"health": frozenset(_HEALTH_BY_LOWER[w] for w in wanted)}


def _index_and_wait(params: MultiMapping[str]) -> dict[str, object]:
    fields: dict[str, object] = {}
    if "index" in params:
        raw = _single(params, "index")
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            raise BadParameter("index", f"{raw!r} is not a non-negative integer")
        fields["index"] = int(raw)
    if "wait" in params:
        # Checked even without index (a bad value is still a 400 naming it); without index there
        # is nothing to wait past, so the answer comes at once, as Consul's blocking queries do.
        wait = _duration("wait", _single(params, "wait"))
        if "index" in params:
            fields["wait"] = wait
    return fields


def _select(params: MultiMapping[str]) -> dict[str, object]:
    if "select" not in params:
        return {}
    if _single(params, "select") != "one":
        raise BadParameter("select", "the only selection is select=one")
    return {"select_one": True}


def _verified(params: MultiMapping[str], has_capability: bool) -> dict[str, object]:
    if "verified" not in params:
        return {}
    raw = _single(params, "verified").lower()
    if raw not in ("true", "false"):
        raise BadParameter("verified", f"{raw!r} is not true or false")
    if raw == "true" and not has_capability:
        raise BadParameter(
            "verified", "needs a capability (capability=NAME): it says whose contract must have passed"
        )
    return {"verified": raw == "true"}


Canonical = tuple[object, ...]


def canonical(query: Query, route: str) -> Canonical:
    """One key per meaning, built from the parsed query (never the raw string), so equivalent
    queries (``health=any``, ``health=any,``, ``tag=b&tag=a`` and ``tag=a&tag=b``) share one
    cached answer. A structure, not a joined string: no value a caller chooses can make two
    different queries one key. ``index`` and ``wait`` are left out: they say when, not what."""

    def spec(value: semantic_version.SimpleSpec | None) -> str | None:
        return None if value is None else str(value.clause)

    return (
        route,
        query.service,
        query.service_glob,
        query.namespace,
        tuple(sorted(set(query.capabilities))),
        tuple(sorted(set(query.tags))),
        spec(query.version),
        spec(query.capability_version),
        None if query.health is None else tuple(sorted(query.health)),
        query.meta,
        query.select_one,
        query.verified,
    )


def _single(params: MultiMapping[str], name: str) -> str:
    values = params.getall(name)
    if len(values) != 1:
        raise BadParameter(name, "give it once")
    return str(values[0])
