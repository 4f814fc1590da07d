"""``PUT`` and ``DELETE /v1/registrations/{namespace}/{name}``: self-registration over HTTP for
services that cannot talk to the Kubernetes API.

The resource stays the single source of truth: the facade writes the same ServiceRegistration a
``kubectl apply`` would, with server-side apply, only after a SubjectAccessReview says the
caller itself may create, update or delete registrations there. svcreg's ServiceAccount makes
the write, and the object is annotated with who asked. The body is validated by the same model
as the CRD, so a bad field is a 400 naming it before anything reaches the API server.
"""

from __future__ import annotations

import json
import logging
import re

from aiohttp import web

from svcreg.core import model, wire
from svcreg.core.errors import BadParameter
from svcreg.discovery.http.auth import Identity
from svcreg.discovery.http.bodies import parse_model
from svcreg.discovery.http.discovery import DISCOVERY_KEY, Discovery
from svcreg.discovery.http.serving import Serving, error_response
from svcreg.discovery.index import dumps
from svcreg.kube import errors as kube_errors
from svcreg.kube.api import KubeApi

logger = logging.getLogger(__name__)

FIELD_MANAGER = "svcreg-registration-api"
REGISTERED_BY = f"{model.GROUP}/registered-by"
MAX_BODY = 64 * 1024
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def parse_body(raw: bytes) -> wire.RegistrationBody:
    """A PUT body ``{"spec": {...}, "labels": {...}}``, validated by the same model as the CRD."""
    return parse_model(wire.RegistrationBody, raw)


def _check_name(kind: str, value: str) -> None:
    if not _DNS_NAME.match(value):
        raise BadParameter(kind, "must be a lowercase DNS name")


def _write_failed(what: str, error: Exception) -> web.Response:
    """The API server refused svcreg's write or did not answer. Invalid (422) and BadRequest are
    the CRD's validation or admission (CEL rules the model does not repeat): the caller's fault,
    400. Anything else is not: 403 means the chart's registration API permissions are missing."""
    if isinstance(error, kube_errors.Invalid | kube_errors.BadRequest):
        return error_response(400, "Invalid", error.message, parameter="spec")
    logger.error("%s failed: %s", what, error)
    return error_response(503, "WriteFailed", f"{what} failed; retry")


async def _context(request: web.Request) -> tuple[Discovery, str, str, Identity]:
    discovery = request.app[DISCOVERY_KEY]
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    _check_name("namespace", namespace)
    _check_name("name", name)
    identity = await discovery.auth.identify(request.headers.get("Authorization"))
    return discovery, namespace, name, identity


def _answer(status: int, answer: wire.RegistrationWrite) -> web.Response:
    return web.Response(
        status=status,
        body=dumps(answer.model_dump(by_alias=True, exclude_none=True)),
        content_type="application/json",
    )


async def put_registration(request: web.Request) -> web.Response:
    discovery, namespace, name, identity = await _context(request)
    api = discovery.api
    if api is None:
        return await discovery.elsewhere(request, "NotOperator", "this replica serves discovery only")
    if (request.content_length or 0) > MAX_BODY:
        raise BadParameter("body", f"at most {MAX_BODY} bytes")
    raw = await request.read()
    body = parse_body(raw)
    try:
        await api.call("GET", KubeApi.registration_path(namespace, name))
        creating = False
    except kube_errors.NotFound:
        creating = True
    except (kube_errors.KubeApiError, kube_errors.Unreachable) as error:
        return _write_failed(f"reading {namespace}/{name}", error)
    # RBAC ignores resource names for create, so only updates name the object.
    await discovery.auth.require(
        identity, "create" if creating else "update", namespace, None if creating else name
    )
    try:
        stored = await api.apply_registration(
            namespace,
            name,
            json.loads(raw)["spec"],  # as the caller wrote it (validated above), as kubectl would
            field_manager=FIELD_MANAGER,
            labels={**body.labels, "app.kubernetes.io/managed-by": FIELD_MANAGER},
            annotations={REGISTERED_BY: identity.username},
        )
    except (kube_errors.KubeApiError, kube_errors.Unreachable) as error:
        return _write_failed(f"applying {namespace}/{name}", error)
    return _answer(
        201 if creating else 200,
        wire.RegistrationWrite(
            namespace=namespace,
            name=name,
            created=creating,
            registered_by=identity.username,
            generation=stored.get("metadata", {}).get("generation", 0),
        ),
    )


async def delete_registration(request: web.Request) -> web.Response:
    discovery, namespace, name, identity = await _context(request)
    api = discovery.api
    if api is None:
        return await discovery.elsewhere(request, "NotOperator", "this replica serves discovery only")
    await discovery.auth.require(identity, "delete", namespace, name)
    try:
        await api.call("DELETE", KubeApi.registration_path(namespace, name))
    except kube_errors.NotFound:
        return error_response(404, "NotFound", f"no registration {namespace}/{name}")
    except (kube_errors.KubeApiError, kube_errors.Unreachable) as error:
        return _write_failed(f"deleting {namespace}/{name}", error)
    return _answer(200, wire.RegistrationWrite(namespace=namespace, name=name, deleted=True))


def add_routes(app: web.Application, serving: Serving) -> None:
    serving.add(app, "PUT", "/v1/registrations/{namespace}/{name}", put_registration)
    serving.add(app, "DELETE", "/v1/registrations/{namespace}/{name}", delete_registration)
