"""``PUT`` and ``DELETE /v1/registrations/{namespace}/{name}``: self-registration over HTTP for
services that cannot talk to the Kubernetes API.

The resource stays the single source of truth: the facade writes the same ServiceRegistration a
``kubectl apply`` would, with server-side apply, only after a SubjectAccessReview says the
caller itself may create, update or delete registrations there. svcreg's ServiceAccount makes
the write, and the object is annotated with who asked. The body is validated by the same model
as the CRD, so a bad field is a 400 naming it before anything reaches the API server.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from svcreg import model
from svcreg import query as query_mod
from svcreg.api.auth import Identity
from svcreg.api.discovery import DISCOVERY_KEY, Discovery
from svcreg.api.serving import Serving, error_response
from svcreg.index import dumps
from svcreg.kubeapi import KubeApi, Response

logger = logging.getLogger(__name__)

FIELD_MANAGER = "svcreg-registration-api"
REGISTERED_BY = f"{model.GROUP}/registered-by"
MAX_BODY = 64 * 1024
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _field(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def parse_body(raw: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """The spec (validated, as the API server will store it) and labels of a PUT body
    ``{"spec": {...}, "labels": {...}}``; BadQuery naming the field otherwise."""
    body = query_mod.json_object(raw, ("spec", "labels"), "a registration body has spec and labels")
    spec, labels = body.get("spec"), body.get("labels") or {}
    if not isinstance(spec, dict):
        raise query_mod.BadQuery("spec", "required: the ServiceRegistration spec as an object")
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 63 and len(v) <= 63 for k, v in labels.items()
    ):
        raise query_mod.BadQuery("labels", "must map strings to strings of at most 63 characters")
    try:
        model.ServiceRegistrationSpec.model_validate(spec)
    except ValidationError as error:
        first = error.errors()[0]
        where = "spec." + _field(tuple(_camel(p) if isinstance(p, str) else p for p in first["loc"]))
        raise query_mod.BadQuery(where.rstrip("."), first["msg"]) from error
    return spec, labels


def _check_name(kind: str, value: str) -> None:
    if not _DNS_NAME.match(value):
        raise query_mod.BadQuery(kind, "must be a lowercase DNS name")


def _write_failed(what: str, answer: Response) -> web.Response:
    """The API server refused svcreg's own write. 422 is the CRD's validation (CEL rules the
    model does not repeat): the caller's fault, 400. Anything else is ours: 403 means the chart's
    registration API permissions are missing."""
    try:
        message = str(answer.json().get("message") or answer.text)
    except ValueError:
        message = answer.text
    if answer.status_code in (400, 422):
        return error_response(400, "Invalid", message[:1000], parameter="spec")
    logger.error("%s failed with HTTP %d: %s", what, answer.status_code, message[:500])
    return error_response(503, "WriteFailed", f"{what} failed with HTTP {answer.status_code}")


async def _context(request: web.Request) -> tuple[Discovery, str, str, Identity]:
    discovery = request.app[DISCOVERY_KEY]
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    _check_name("namespace", namespace)
    _check_name("name", name)
    identity = await discovery.auth.identify(request.headers.get("Authorization"))
    return discovery, namespace, name, identity


async def put_registration(request: web.Request) -> web.Response:
    discovery, namespace, name, identity = await _context(request)
    api = discovery.api
    if api is None:
        return await discovery.elsewhere(request, "NotOperator", "this replica serves discovery only")
    if (request.content_length or 0) > MAX_BODY:
        raise query_mod.BadQuery("body", f"at most {MAX_BODY} bytes")
    spec, labels = parse_body(await request.read())
    existing = await api.request("GET", KubeApi.registration_path(namespace, name))
    if existing.status_code not in (200, 404):
        return _write_failed(f"reading {namespace}/{name}", existing)
    creating = existing.status_code == 404
    # RBAC ignores resource names for create, so only updates name the object.
    await discovery.auth.require(
        identity, "create" if creating else "update", namespace, None if creating else name
    )
    answer = await api.apply_registration(
        namespace,
        name,
        spec,
        field_manager=FIELD_MANAGER,
        labels={**labels, "app.kubernetes.io/managed-by": FIELD_MANAGER},
        annotations={REGISTERED_BY: identity.username},
    )
    if answer.status_code >= 300:
        return _write_failed(f"applying {namespace}/{name}", answer)
    stored = answer.json()
    return web.Response(
        status=201 if creating else 200,
        body=dumps(
            {
                "namespace": namespace,
                "name": name,
                "created": creating,
                "registeredBy": identity.username,
                "generation": stored.get("metadata", {}).get("generation", 0),
            }
        ),
        content_type="application/json",
    )


async def delete_registration(request: web.Request) -> web.Response:
    discovery, namespace, name, identity = await _context(request)
    api = discovery.api
    if api is None:
        return await discovery.elsewhere(request, "NotOperator", "this replica serves discovery only")
    await discovery.auth.require(identity, "delete", namespace, name)
    answer = await api.request("DELETE", KubeApi.registration_path(namespace, name))
    if answer.status_code == 404:
        return error_response(404, "NotFound", f"no registration {namespace}/{name}")
    if answer.status_code >= 300:
        return _write_failed(f"deleting {namespace}/{name}", answer)
    return web.Response(
        body=dumps({"namespace": namespace, "name": name, "deleted": True}), content_type="application/json"
    )


def add_routes(app: web.Application, serving: Serving) -> None:
    serving.add(app, "PUT", "/v1/registrations/{namespace}/{name}", put_registration)
    serving.add(app, "DELETE", "/v1/registrations/{namespace}/{name}", delete_registration)
