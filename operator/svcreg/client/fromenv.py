"""A registration spec from environment variables, for ``SelfRegistration.from_env()``: the way
seed 001 registered from SERVICE_NAME, SERVICE_ADDRESS, SERVICE_PORT and SERVICE_TAGS, with the
downward API supplying the pod's address and name.

Variables (all optional but the port, which is needed unless SVCREG_SERVICE_ENDPOINT is set):

=============================== =====================================================
SVCREG_SERVICE_ENDPOINT         the whole endpoint URL (then address, port and scheme are unused)
SVCREG_SERVICE_ADDRESS          host; default POD_IP, else the host name
SVCREG_SERVICE_PORT             port
SVCREG_SERVICE_SCHEME           http (default), https, grpc or tcp
SVCREG_SERVICE_NAME             spec.service (the logical service)
SVCREG_SERVICE_DISPLAY_NAME     spec.displayName
SVCREG_SERVICE_VERSION          spec.version
SVCREG_SERVICE_CAPABILITIES     comma list of capability names
SVCREG_SERVICE_TAGS             comma list of tags
SVCREG_SERVICE_METADATA         comma list of key=value
SVCREG_SERVICE_WEIGHT           spec.weight
SVCREG_SERVICE_CHECK            healthCheck.type: http, tcp, grpc, ttl or none
SVCREG_SERVICE_CHECK_PATH       healthCheck.path (http)
SVCREG_SERVICE_TTL_SECONDS      healthCheck.ttlSeconds (ttl)
SVCREG_REGISTRATION_NAME        the object's name; default POD_NAME, else the host name
=============================== =====================================================

A value the registration model refuses raises ``ValueError`` naming the variable.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

import pydantic

from svcreg.core import model
from svcreg.core.hosts import bracketed

PREFIX = "SVCREG_SERVICE_"
_FIELDS = {  # spec path -> variable, to name the variable when the model refuses a value
    ("endpoint",): "ENDPOINT",
    ("service",): "NAME",
    ("displayName",): "DISPLAY_NAME",
    ("version",): "VERSION",
    ("capabilities",): "CAPABILITIES",
    ("tags",): "TAGS",
    ("metadata",): "METADATA",
    ("weight",): "WEIGHT",
    ("healthCheck", "type"): "CHECK",
    ("healthCheck", "path"): "CHECK_PATH",
    ("healthCheck", "ttlSeconds"): "TTL_SECONDS",
}


def _list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _int(environ: Mapping[str, str], name: str) -> int:
    value = environ[PREFIX + name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{PREFIX}{name}={value!r} is not an integer") from None


def spec_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The registration spec the variables describe; ValueError naming the variable at fault."""
    get = environ.get
    endpoint = get(PREFIX + "ENDPOINT")
    if not endpoint:
        if not get(PREFIX + "PORT"):
            raise ValueError(f"set {PREFIX}PORT (or {PREFIX}ENDPOINT) to say where the service listens")
        port = _int(environ, "PORT")
        host = get(PREFIX + "ADDRESS") or get("POD_IP") or socket.gethostname()
        host = bracketed(host)
        endpoint = f"{get(PREFIX + 'SCHEME') or 'http'}://{host}:{port}"
    spec: dict[str, Any] = {"endpoint": endpoint}
    for key, name in (("service", "NAME"), ("displayName", "DISPLAY_NAME"), ("version", "VERSION")):
        if get(PREFIX + name):
            spec[key] = get(PREFIX + name)
    for key, name in (("capabilities", "CAPABILITIES"), ("tags", "TAGS")):
        if get(PREFIX + name):
            spec[key] = _list(environ[PREFIX + name])
    if get(PREFIX + "METADATA"):
        pairs = [part.partition("=") for part in _list(environ[PREFIX + "METADATA"])]
        if any(not sep or not k for k, sep, _ in pairs):
            raise ValueError(f"{PREFIX}METADATA must be a comma list of key=value")
        spec["metadata"] = {k.strip(): v.strip() for k, _, v in pairs}
    if get(PREFIX + "WEIGHT"):
        spec["weight"] = _int(environ, "WEIGHT")
    check: dict[str, Any] = {}
    if get(PREFIX + "CHECK"):
        check["type"] = get(PREFIX + "CHECK")
    if get(PREFIX + "CHECK_PATH"):
        check["path"] = get(PREFIX + "CHECK_PATH")
    if get(PREFIX + "TTL_SECONDS"):
        check["ttlSeconds"] = _int(environ, "TTL_SECONDS")
    if check:
        spec["healthCheck"] = check
    _validate(spec)
    return spec


def _validate(spec: dict[str, Any]) -> None:
    try:
        model.ServiceRegistrationSpec.model_validate(spec)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        location = tuple(str(p) for p in first["loc"])
        variable = next(
            (PREFIX + name for path, name in _FIELDS.items() if location[: len(path)] == path),
            "the SVCREG_SERVICE_* variables",
        )
        raise ValueError(f"{variable}: {first['msg']}") from None


def name_from_env(environ: Mapping[str, str]) -> str:
    return (
        environ.get("SVCREG_REGISTRATION_NAME")
        or environ.get("POD_NAME")
        or socket.gethostname().split(".")[0].lower()
    )
