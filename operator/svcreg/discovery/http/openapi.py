"""The OpenAPI 3.1 document of the discovery API, served at ``/openapi.json``.

Schemas are generated from the wire models (``svcreg.core.wire``), the same models discovery
builds its answers with and the client parses them with, so the three cannot disagree. What is
written here is only what models do not say: routes, parameters and their descriptions.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from svcreg import __version__
from svcreg.core import wire
from svcreg.core.health import Health
from svcreg.discovery import query

_HEALTH = [h.value for h in Health]


def _any_case(word: str) -> str:
    """A regex matching ``word`` in any letter case (JSON Schema patterns have no flags)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


_STATES = "|".join(_any_case(w) for w in [*_HEALTH, "any"])
_L = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"  # a DNS label, its length bounded in the pattern


def _param(
    name: str, description: str, schema: dict[str, Any], where: str = "query", **extra: Any
) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description, "schema": schema, **extra}


_RANGE_SCHEMA = {"type": "string", "pattern": query.RANGE_PATTERN, "maxLength": query.MAX_RANGE_LENGTH}
_LABEL = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
_NS = _param("namespace", "Only this namespace.", _LABEL)
_INDEX = _param(
    "index",
    "The index of the answer you have; with wait, block until the index passes it.",
    {"type": "string", "pattern": "^[0-9]{1,18}$"},
)
_WAIT = _param(
    "wait",
    "Long-poll duration, e.g. 30s (at most 300s; a server may hold it less, see --max-wait); without "
    "index the answer comes at once.",
    {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(ms|s|m)?$"},
)
# One filter spelling for every route: repeatable or comma-separated; empty parts name nothing.
_TAG_P = _param(
    "tag",
    "Tags the instance must have (repeatable or comma-separated; all must match).",
    {"type": "array", "items": {"type": "string", "pattern": f"^({_L})?(,({_L})?)*$", "maxLength": 1024}},
    explode=True,
)
_HEALTH_P = _param(
    "health",
    "Health states to include (repeatable or comma-separated, any letter case); 'any' for all. "
    "Default Healthy and Degraded.",
    {"type": "string", "pattern": f"^({_STATES})?(,({_STATES})?)*$"},
    explode=True,
)
_FILTERS = [
    _param(
        "service",
        "Logical service name, or a pattern with * and ? (service=pay*).",
        {"type": "string", "pattern": f"^({_L}|[-a-z0-9*?]*[*?][-a-z0-9*?]*)$", "maxLength": 63},
    ),
    _NS,
    _param(
        "capability",
        "Capability the instance must provide (repeatable; all must match).",
        {"type": "array", "items": _LABEL},
        explode=True,
    ),
    _TAG_P,
    _param("version", "Semantic version range, e.g. >=1.2,<2.", _RANGE_SCHEMA),
    _HEALTH_P,
]
_VERIFIED = _param(
    "verified",
    "true: only instances whose contract of each named capability passed when last checked "
    "(needs capability).",
    {"enum": ["true", "false"]},
)
_REF = "#/components/schemas/{model}"


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _schema(model)}}}


_ERROR = _json(wire.ErrorAnswer, "An error.")
# A request the HTTP layer cannot parse (a request line over 8 KiB, a malformed header) is
# refused before any route sees it, in aiohttp's plain text.
_UNPARSED = {
    "description": "A bad parameter (JSON), or a request the HTTP layer could not parse (plain text).",
    "content": {**_ERROR["content"], "text/plain": {"schema": {"type": "string"}}},
}
# A PATCH body: which spec fields may change and how is the registration model's business (the
# merged result is checked against it), so spec is any object here.
_MERGE_PATCH: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "spec": {"type": "object"},
        "labels": {
            "type": "object",
            "propertyNames": {"maxLength": 63},
            "additionalProperties": {"type": ["string", "null"], "maxLength": 63},
        },
    },
}
_ERRORS = {"400": _UNPARSED, "401": _ERROR, "403": _ERROR, "429": _ERROR, "503": _ERROR}


def _get(
    summary: str,
    parameters: list[dict[str, Any]],
    model: type[BaseModel],
    *,
    etag: bool = True,
    not_found: bool = False,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _json(model, summary), **_ERRORS}
    if not_found:
        responses["404"] = _ERROR
    if etag:
        responses["304"] = {"description": "Not modified (If-None-Match matched the ETag)."}
    return {
        "get": {
            "summary": summary,
            "parameters": parameters,
            "responses": responses,
            "security": [{"serviceAccountToken": []}],
        }
    }


def _components() -> dict[str, Any]:
    _, top = models_json_schema(
        [(m, "serialization") for m in wire.ANSWERS] + [(m, "validation") for m in wire.BODIES],
        ref_template=_REF,
    )
    schemas: dict[str, Any] = top.get("$defs", {})
    return schemas


def _plain(summary: str) -> dict[str, Any]:
    """A route with no authentication and a JSON body of its own shape."""
    answer = {"description": summary, "content": {"application/json": {"schema": {"type": "object"}}}}
    return {"get": {"summary": summary, "responses": {"200": answer, "503": answer}}}


_PATH_NS = _param("namespace", "Namespace.", _LABEL, "path", required=True)
_PATH_NAME = _param(
    "name",
    "Registration name.",
    {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", "maxLength": 253},
    "path",
    required=True,
)


@functools.cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "svcreg discovery API",
            "version": __version__,
            "description": (
                "Discovery answers for in-cluster callers. Authenticate with a ServiceAccount token "
                "(Authorization: Bearer); answers are limited to namespaces where RBAC lets you list "
                "serviceregistrations.svcreg.io."
            ),
        },
        "components": {
            "securitySchemes": {"serviceAccountToken": {"type": "http", "scheme": "bearer"}},
            "schemas": _components(),
        },
        "paths": {
            "/healthz": _plain("Liveness."),
            "/readyz": _plain("Readiness: the index has synced (details in the body; 503 until then)."),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text exposition format).",
                    "responses": {"200": {"description": "Metrics."}},
                }
            },
            "/openapi.json": _plain("This document."),
            "/ui/": {
                "get": {
                    "summary": "The read-only dashboard: a page that signs in with a token of its viewer's "
                    "and calls the routes below with it (no data in the page itself).",
                    "responses": {
                        "200": {
                            "description": "The page.",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/v1/services": _get(
                "Registered instances matching the filters. Metadata filters are meta.KEY=VALUE parameters "
                "(repeatable; all must match), e.g. meta.environment=production.",
                [
                    *_FILTERS,
                    _VERIFIED,
                    _param("select", "one: pick a single matching instance by weight.", {"enum": ["one"]}),
                    _INDEX,
                    _WAIT,
                ],
                wire.ServiceList,
                not_found=True,
            ),
            "/v1/explain": _get(
                "Why each candidate instance is or is not in the answer to the same query: every filter it "
                "fails, stale status, weight 0, the last probes; namespaces you may not read are neither "
                "named nor counted.",
                [*_FILTERS, _VERIFIED],
                wire.ExplainAnswer,
                etag=False,
            ),
            "/v1/consumers": _get(
                "Who asked for a service or a capability within the window: this process's traffic, "
                "merged with its replicas' (the discovery replicas) unless scope=local; only for "
                "callers who may read every registration of it.",
                [
                    _param("service", "Logical service name.", _LABEL),
                    _param("capability", "Capability name.", _LABEL),
                    _param(
                        "scope",
                        "all (default): merged with the replicas'; local: this process's only.",
                        {"type": "string", "enum": ["all", "local"]},
                    ),
                ],
                wire.ConsumerList,
                etag=False,
            ),
            "/v1/catalog": _get(
                "Every logical service you may read: its tags, versions, namespaces and instances by health.",
                [_NS, _INDEX, _WAIT],
                wire.Catalog,
            ),
            "/v1/services/{namespace}/{name}": {
                "get": {
                    "summary": "One registration as discovery sees it.",
                    "parameters": [_PATH_NS, _PATH_NAME],
                    "responses": {
                        "200": _json(wire.RegistrationAnswer, "The registration."),
                        "404": _ERROR,
                        **_ERRORS,
                    },
                    "security": [{"serviceAccountToken": []}],
                }
            },
            "/v1/capabilities": _get(
                "Each capability with its versions and instance counts by health.",
                [_NS, _INDEX, _WAIT],
                wire.CapabilityList,
            ),
            "/v1/capabilities/{name}": {
                "get": {
                    "summary": "Instances providing a capability; select=one picks one by weight.",
                    "parameters": [
                        _param("name", "Capability name.", _LABEL, "path", required=True),
                        _NS,
                        _param(
                            "version",
                            "Semver range on the capability's version.",
                            _RANGE_SCHEMA,
                        ),
                        _TAG_P,
                        _HEALTH_P,
                        _VERIFIED,
                        _param("select", "one: pick a single instance by weight.", {"enum": ["one"]}),
                        _INDEX,
                        _WAIT,
                    ],
                    "responses": {
                        "200": _json(wire.CapabilityAnswer, "Providers."),
                        "304": {"description": "Not modified."},
                        "404": _ERROR,
                        **_ERRORS,
                    },
                    "security": [{"serviceAccountToken": []}],
                }
            },
            "/v1/stats": _get(
                "Totals by health, unique capabilities, capabilities per service.", [_NS], wire.Stats
            ),
            "/v1/watch": {
                "get": {
                    "summary": "Server-sent events: registered, updated, deleted, health-changed, and reset; "
                    "each event's data is a WatchEvent.",
                    "parameters": [
                        *_FILTERS,
                        _VERIFIED,
                        _param(
                            "Last-Event-ID",
                            "Resume after this event id; an id this server does not know gets a reset event.",
                            {"type": "string"},
                            "header",
                        ),
                    ],
                    "responses": {
                        "200": {"description": "An event stream.", "content": {"text/event-stream": {}}},
                        **_ERRORS,
                    },
                    "security": [{"serviceAccountToken": []}],
                }
            },
            "/v1/heartbeat/{namespace}/{name}": {
                "post": {
                    "summary": "A ttl heartbeat; needs RBAC verb heartbeat on serviceregistrations; "
                    "409 when the registration is not type: ttl.",
                    "parameters": [_PATH_NS, _PATH_NAME],
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _schema(wire.HeartbeatBody)}},
                    },
                    "responses": {
                        "200": _json(wire.HeartbeatAnswer, "Accepted."),
                        "404": _ERROR,
                        "409": _ERROR,
                        **_ERRORS,
                    },
                    "security": [{"serviceAccountToken": []}],
                }
            },
            "/v1/report/{namespace}/{name}": {
                "post": {
                    "summary": "The outcome of one real call to an instance (passive health); needs RBAC "
                    "verb report on serviceregistrations. An instance that callers of several distinct "
                    "namespaces report failing within a minute is ejected for a back-off.",
                    "parameters": [_PATH_NS, _PATH_NAME],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _schema(wire.ReportBody)}},
                    },
                    "responses": {"202": _json(wire.ReportAnswer, "Accepted."), "404": _ERROR, **_ERRORS},
                    "security": [{"serviceAccountToken": []}],
                }
            },
            "/v1/registrations/{namespace}/{name}": {
                "put": {
                    "summary": "Create or replace a registration (RBAC create or update, checked for "
                    "the caller).",
                    "parameters": [_PATH_NS, _PATH_NAME],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _schema(wire.RegistrationBody)}},
                    },
                    "responses": {
                        "200": _json(wire.RegistrationWrite, "Updated."),
                        "201": _json(wire.RegistrationWrite, "Created."),
                        **_ERRORS,
                    },
                    "security": [{"serviceAccountToken": []}],
                },
                "patch": {
                    "summary": "Change part of a registration: a JSON merge patch (RFC 7386) of spec "
                    "and labels, null removing a key (RBAC patch, checked for the caller); 409 when "
                    "it changed meanwhile.",
                    "parameters": [_PATH_NS, _PATH_NAME],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/merge-patch+json": {"schema": _MERGE_PATCH},
                            "application/json": {"schema": _MERGE_PATCH},
                        },
                    },
                    "responses": {
                        "200": _json(wire.RegistrationWrite, "Updated."),
                        "404": _ERROR,
                        "409": _ERROR,
                        **_ERRORS,
                    },
                    "security": [{"serviceAccountToken": []}],
                },
                "delete": {
                    "summary": "Delete a registration (RBAC delete, checked for the caller).",
                    "parameters": [_PATH_NS, _PATH_NAME],
                    "responses": {
                        "200": _json(wire.RegistrationWrite, "Deleted."),
                        "404": _ERROR,
                        **_ERRORS,
                    },
                    "security": [{"serviceAccountToken": []}],
                },
            },
        },
    }
