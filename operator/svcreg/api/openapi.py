"""The OpenAPI 3.1 document of the discovery API, served at ``/openapi.json``.

Written by hand next to the routes it describes; tests compare it with real answers.
"""

from __future__ import annotations

from typing import Any

from svcreg import __version__
from svcreg.model import Health

_HEALTH = [h.value for h in Health]


def _param(
    name: str, description: str, schema: dict[str, Any], where: str = "query", **extra: Any
) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description, "schema": schema, **extra}


_LABEL = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
_NS = _param("namespace", "Only this namespace.", _LABEL)
_INDEX = _param(
    "index",
    "The index of the answer you have; with wait, block until the index passes it.",
    {"type": "string", "pattern": "^[0-9]{1,18}$"},
)
_WAIT = _param(
    "wait",
    "Long-poll duration, e.g. 30s (at most 300s; a server may hold it less, see --max-wait); needs index.",
    {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(ms|s|m)?$"},
)
_HEALTH_P = _param(
    "health",
    "Health states to include (repeatable or comma-separated); 'any' for all. Default Healthy and Degraded.",
    {"type": "string"},
    explode=True,
)
_FILTERS = [
    _param("service", "Logical service name.", _LABEL),
    _NS,
    _param(
        "capability",
        "Capability the instance must provide (repeatable; all must match).",
        {"type": "array", "items": _LABEL},
        explode=True,
    ),
    _param(
        "tag",
        "Tag the instance must have (repeatable; all must match).",
        {"type": "array", "items": _LABEL},
        explode=True,
    ),
    _param("version", "Semantic version range, e.g. >=1.2,<2.", {"type": "string"}),
    _HEALTH_P,
]
_ERROR = {
    "description": "An error.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_ERRORS = {"400": _ERROR, "401": _ERROR, "403": _ERROR}


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _get(summary: str, parameters: list[dict[str, Any]], schema: str, *, etag: bool = True) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _ok(schema, summary), **_ERRORS}
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


REGISTRATION: dict[str, Any] = {
    "type": "object",
    "required": [
        "namespace",
        "name",
        "service",
        "capabilities",
        "tags",
        "metadata",
        "weight",
        "maintenance",
        "health",
        "ready",
        "instances",
        "generation",
    ],
    "properties": {
        "namespace": {"type": "string"},
        "name": {"type": "string"},
        "service": {"type": "string"},
        "version": {"type": ["string", "null"]},
        "endpoint": {"type": ["string", "null"]},
        "serviceRef": {"type": ["object", "null"]},
        "capabilities": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "description": {"type": "string"},
                },
            },
        },
        "tags": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "weight": {"type": "integer", "minimum": 0, "maximum": 10000},
        "maintenance": {"type": "boolean"},
        "health": {"type": "string", "enum": _HEALTH},
        "ready": {"type": "boolean"},
        "instances": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "address": {"type": "string"},
                    "port": {"type": "integer"},
                    "health": {"type": "string"},
                },
            },
        },
        "generation": {"type": "integer"},
    },
}


def document() -> dict[str, Any]:
    index = {"type": "integer", "description": "The discovery index's change counter at answer time."}
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
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "parameter": {"type": "string"},
                            },
                        }
                    },
                },
                "Registration": REGISTRATION,
                "RegistrationAnswer": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Registration"},
                        {"type": "object", "required": ["index"], "properties": {"index": index}},
                    ]
                },
                "Services": {
                    "type": "object",
                    "required": ["index", "count", "items"],
                    "properties": {
                        "index": index,
                        "count": {"type": "integer"},
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Registration"}},
                    },
                },
                "Capability": {
                    "type": "object",
                    "required": ["index", "capability"],
                    "properties": {
                        "index": index,
                        "capability": {"type": "string"},
                        "count": {"type": "integer"},
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Registration"}},
                        "selected": {"$ref": "#/components/schemas/Registration"},
                    },
                },
                "Capabilities": {
                    "type": "object",
                    "required": ["index", "count", "capabilities"],
                    "properties": {
                        "index": index,
                        "count": {"type": "integer"},
                        "capabilities": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "versions", "instances", "total"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "versions": {"type": "array", "items": {"type": "string"}},
                                    "instances": {
                                        "type": "object",
                                        "additionalProperties": {"type": "integer"},
                                    },
                                    "total": {"type": "integer"},
                                },
                            },
                        },
                    },
                },
                "Stats": {
                    "type": "object",
                    "required": [
                        "index",
                        "total",
                        "byHealth",
                        "services",
                        "namespaces",
                        "uniqueCapabilities",
                        "capabilitiesPerService",
                    ],
                    "properties": {
                        "index": index,
                        "total": {"type": "integer"},
                        "byHealth": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "services": {"type": "integer"},
                        "namespaces": {"type": "integer"},
                        "uniqueCapabilities": {"type": "integer"},
                        "capabilitiesPerService": {
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                        },
                    },
                },
                "RegistrationWrite": {
                    "type": "object",
                    "required": ["namespace", "name"],
                    "properties": {
                        "namespace": {"type": "string"},
                        "name": {"type": "string"},
                        "created": {"type": "boolean"},
                        "deleted": {"type": "boolean"},
                        "registeredBy": {"type": "string"},
                        "generation": {"type": "integer"},
                    },
                },
                "Heartbeat": {
                    "type": "object",
                    "required": ["namespace", "name", "status", "accepted"],
                    "properties": {
                        "namespace": {"type": "string"},
                        "name": {"type": "string"},
                        "status": {"type": "string"},
                        "accepted": {"type": "boolean"},
                    },
                },
            },
        },
        "paths": {
            "/v1/services": _get(
                "Registered instances matching the filters.", [*_FILTERS, _INDEX, _WAIT], "Services"
            ),
            "/v1/services/{namespace}/{name}": {
                "get": {
                    "summary": "One registration as discovery sees it.",
                    "parameters": [
                        _param("namespace", "Namespace.", {"type": "string"}, "path", required=True),
                        _param("name", "Registration name.", {"type": "string"}, "path", required=True),
                    ],
                    "responses": {
                        "200": _ok("RegistrationAnswer", "The registration."),
                        "404": _ERROR,
                        **_ERRORS,
                    },
                    "security": [{"serviceAccountToken": []}],
                }
            },
            "/v1/capabilities": _get(
                "Each capability with its versions and instance counts by health.",
                [_NS, _INDEX, _WAIT],
                "Capabilities",
            ),
            "/v1/capabilities/{name}": {
                "get": {
                    "summary": "Instances providing a capability; select=one picks one by weight.",
                    "parameters": [
                        _param("name", "Capability name.", {"type": "string"}, "path", required=True),
                        _NS,
                        _param("version", "Semver range on the capability's version.", {"type": "string"}),
                        _param(
                            "tag",
                            "Tag filter (repeatable).",
                            {"type": "array", "items": _LABEL},
                            explode=True,
                        ),
                        _HEALTH_P,
                        _param("select", "one: pick a single instance by weight.", {"enum": ["one"]}),
                        _INDEX,
                        _WAIT,
                    ],
                    "responses": {
                        "200": _ok("Capability", "Providers."),
                        "304": {"description": "Not modified."},
                        "404": _ERROR,
                        **_ERRORS,
                    },
                    "security": [{"serviceAccountToken": []}],
                }
            },
            "/v1/stats": _get(
                "Totals by health, unique capabilities, capabilities per service.", [_NS], "Stats"
            ),
            "/v1/watch": {
                "get": {
                    "summary": "Server-sent events: registered, updated, deleted, health-changed, and reset.",
                    "parameters": [
                        *_FILTERS,
                        _param("Last-Event-ID", "Resume after this event id.", {"type": "string"}, "header"),
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
                    "summary": "A ttl heartbeat; needs RBAC verb heartbeat on serviceregistrations.",
                    "parameters": [
                        _param("namespace", "Namespace.", {"type": "string"}, "path", required=True),
                        _param("name", "Registration name.", {"type": "string"}, "path", required=True),
                    ],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "status": {"enum": ["passing", "warning", "critical"]},
                                        "note": {"type": "string", "maxLength": 512},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _ok("Heartbeat", "Accepted."),
                        "404": _ERROR,
                        "503": _ERROR,
                        **_ERRORS,
                    },
                    "security": [{"serviceAccountToken": []}],
                }
            },
            "/v1/registrations/{namespace}/{name}": {
                "parameters": [
                    _param("namespace", "Namespace.", {"type": "string"}, "path", required=True),
                    _param("name", "Registration name.", {"type": "string"}, "path", required=True),
                ],
                "put": {
                    "summary": "Create or update a ServiceRegistration on the caller's behalf (server-side "
                    "apply); needs RBAC create (new) or update (existing) on serviceregistrations.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["spec"],
                                    "properties": {
                                        "spec": {
                                            "type": "object",
                                            "description": "The ServiceRegistration spec, as in the CRD.",
                                        },
                                        "labels": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string", "maxLength": 63},
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _ok("RegistrationWrite", "Updated."),
                        "201": _ok("RegistrationWrite", "Created."),
                        "503": _ERROR,
                        **_ERRORS,
                    },
                    "security": [{"serviceAccountToken": []}],
                },
                "delete": {
                    "summary": "Delete a ServiceRegistration; needs RBAC delete on serviceregistrations.",
                    "responses": {
                        "200": _ok("RegistrationWrite", "Deleted."),
                        "404": _ERROR,
                        "503": _ERROR,
                        **_ERRORS,
                    },
                    "security": [{"serviceAccountToken": []}],
                },
            },
            "/healthz": {"get": {"summary": "Liveness.", "responses": {"200": {"description": "Alive."}}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: the index has synced (and no partition is suspected).",
                    "responses": {"200": {"description": "Ready."}, "503": {"description": "Not ready."}},
                }
            },
            "/metrics": {
                "get": {"summary": "Prometheus metrics.", "responses": {"200": {"description": "Metrics."}}}
            },
        },
    }
