"""``PUT``, ``PATCH`` and ``DELETE /v1/registrations/{namespace}/{name}``: self-registration
over HTTP for services that cannot talk to the Kubernetes API.

The resource stays the single source of truth: the facade writes the same ServiceRegistration a
``kubectl apply`` would, with server-side apply, only after a SubjectAccessReview says the
caller itself may create, update or delete registrations there. The write is made *as the
caller*: svcreg impersonates the calling ServiceAccount (constrained impersonation, granted only
for these verbs on serviceregistrations), so RBAC, admission policies, quotas and the audit log
see who asked, and svcreg's own ServiceAccount needs no write rights of its own. Callers that are
not ServiceAccounts cannot be impersonated that narrowly and are refused (403); with
impersonation turned off (``--no-impersonate-callers``) svcreg writes itself. Either way the
object is annotated with who asked. The body is validated by the same model as the CRD, so a bad
field is a 400 naming it before anything reaches the API server. ``PATCH`` is a JSON merge patch
(RFC 7386) of ``spec`` and ``labels``, checked against the model as merged and sent with the
resourceVersion it was merged onto, so a concurrent change of the spec or labels is a 409, never
lost; a resourceVersion moved only by a status write is read again and the patch made again.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from svcreg.core import model, wire
from svcreg.core.contracts import contract_problem
from svcreg.core.errors import BadParameter
from svcreg.core.mergepatch import merge_patch
from svcreg.core.refusals import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Refusal,
    TooManyRequests,
    Unavailable,
)
from svcreg.discovery.http.auth import Identity
from svcreg.discovery.http.bodies import parse_model
from svcreg.discovery.http.discovery import Discovery
from svcreg.discovery.http.serving import Serving
from svcreg.discovery.http.writes import open_write
from svcreg.discovery.index import dumps
from svcreg.kube import errors as kube_errors
from svcreg.kube.api import KubeApi

logger = logging.getLogger(__name__)

FIELD_MANAGER = "svcreg-registration-api"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
REGISTERED_BY = f"{model.GROUP}/registered-by"
PATCH_ATTEMPTS = 3  # reads and patches when only a status write moved the resourceVersion
MAX_BODY = 64 * 1024


def parse_body(raw: bytes) -> wire.RegistrationBody:
    """A PUT body ``{"spec": {...}, "labels": {...}}``, validated by the same model as the CRD,
    capability contracts included (each must be a valid JSON Schema)."""
    body = parse_model(wire.RegistrationBody, raw)
    problem = contract_problem(body.spec)
    if problem is not None:
        raise BadParameter(*problem)
    return body


async def _body(request: web.Request) -> bytes:
    """The request body, refused (400) past ``MAX_BODY`` before it is read."""
    if (request.content_length or 0) > MAX_BODY:
        raise BadParameter("body", f"at most {MAX_BODY} bytes")
    return await request.read()


def _write_failed(what: str, error: Exception) -> Refusal:
    """The API server refused the write or did not answer. What it refused for the caller's
    sake is passed back as the 4xx it is, with its reason: validation and admission (400),
    an existing object (409), quota and admission policies (403), rate limits (429).
    Anything else is not the caller's fault: 503."""
    if isinstance(error, kube_errors.Invalid | kube_errors.BadRequest):
        return Invalid("Invalid", error.message, parameter="spec")
    if isinstance(error, kube_errors.Conflict):
        return Conflict(error.reason or "Conflict", error.message)
    if isinstance(error, kube_errors.Forbidden) and " cannot " not in error.message:
        # Not RBAC ("... cannot patch resource ..." would be svcreg's own missing permission,
        # below): admission refused it, a ResourceQuota or a policy. The caller should see why.
        return Forbidden(error.reason or "Forbidden", error.message)
    if isinstance(error, kube_errors.TooManyRequests):
        return TooManyRequests("TooManyRequests", error.message, retry_after=1)
    logger.error("%s failed: %s", what, error)
    return Unavailable("WriteFailed", f"{what} failed; retry")


async def _context(request: web.Request) -> tuple[Discovery, str, str, Identity]:
    write = await open_write(request)
    return write.discovery, *write.key, write.identity


def _writer(discovery: Discovery, identity: Identity) -> str | None:
    """Whom the write is made as: the caller (None: svcreg itself, impersonation being off).
    Checked after the caller's rights, so a caller with none learns nothing here either."""
    if not discovery.impersonate:
        return None
    if not identity.username.startswith(SERVICE_ACCOUNT_PREFIX):
        raise Forbidden(
            "NotAServiceAccount",
            f"the registration API writes as the caller and impersonates only ServiceAccounts; "
            f"{identity.username} may apply the registration with kubectl instead",
        )
    return identity.username


def _answer(status: int, answer: wire.RegistrationWrite) -> web.Response:
    return web.Response(
        status=status,
        body=dumps(answer.model_dump(by_alias=True, exclude_none=True)),
        content_type="application/json",
    )


async def put_registration(request: web.Request) -> web.Response:
    """Create or update, as the caller may. RBAC is asked before anything is looked up (a caller
    with no rights learns nothing about the name), and about the verb actually performed: an
    update is a server-side apply, which is a ``patch``; a caller that may only ``create`` gets
    create-only semantics (409 when the name exists), never an overwrite."""
    discovery, namespace, name, identity = await _context(request)
    probing = discovery.probing
    if probing is None:
        return await discovery.elsewhere(request, "NotOperator", "this replica serves discovery only")
    api = probing.api
    raw = await _body(request)
    body = parse_body(raw)
    may_create = await discovery.auth.allowed(identity, "create", namespace)
    may_patch = await discovery.auth.allowed(identity, "patch", namespace, name)
    if not (may_create or may_patch):
        raise Forbidden(
            "Forbidden",
            f"{identity.username} may not create or patch serviceregistrations in {namespace}",
        )
    writer = _writer(discovery, identity)
    spec = json.loads(raw)["spec"]  # as the caller wrote it (validated above), as kubectl would
    labels = {**body.labels, "app.kubernetes.io/managed-by": FIELD_MANAGER}
    annotations = {REGISTERED_BY: identity.username}
    try:
        if may_patch:
            exists = await _exists(api, namespace, name)
            if not exists and not may_create:
                raise Forbidden(
                    "Forbidden",
                    f"{identity.username} may not create serviceregistrations in {namespace}",
                )
            stored = await api.apply_registration(
                namespace,
                name,
                spec,
                field_manager=FIELD_MANAGER,
                labels=labels,
                annotations=annotations,
                impersonate=writer,
            )
            creating = not exists
        else:
            stored = await api.create_registration(
                namespace, name, spec, labels=labels, annotations=annotations, impersonate=writer
            )
            creating = True
    except (kube_errors.KubeApiError, kube_errors.Unreachable) as error:
        raise _write_failed(f"writing {namespace}/{name}", error) from error
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


def parse_patch(raw: bytes) -> dict[str, dict[str, object]]:
    """A PATCH body ``{"spec": {...}, "labels": {...}}`` (either may be absent); 400 otherwise."""
    try:
        patch = json.loads(raw)
    except ValueError as error:
        raise BadParameter("body", "must be a JSON object (a JSON merge patch)") from error
    if not isinstance(patch, dict):
        raise BadParameter("body", "must be a JSON object (a JSON merge patch)")
    for key, value in patch.items():
        if key not in ("spec", "labels"):
            raise BadParameter(key, "unknown field; a patch may change spec and labels")
        if not isinstance(value, dict):
            raise BadParameter(key, "must be an object")
    return patch


async def patch_registration(request: web.Request) -> web.Response:
    """Change part of a registration, as the caller may (``patch`` on that name)."""
    discovery, namespace, name, identity = await _context(request)
    probing = discovery.probing
    if probing is None:
        return await discovery.elsewhere(request, "NotOperator", "this replica serves discovery only")
    api = probing.api
    patch = parse_patch(await _body(request))
    await discovery.auth.require(identity, "patch", namespace, name)
    writer = _writer(discovery, identity)
    path = KubeApi.registration_path(namespace, name)
    merged_onto: tuple[object, object] | None = None
    for _ in range(PATCH_ATTEMPTS):
        try:
            current = (await api.call("GET", path)).json()
        except kube_errors.NotFound:
            raise NotFound("NotFound", f"no registration {namespace}/{name}") from None
        except (kube_errors.KubeApiError, kube_errors.Unreachable) as error:
            raise _write_failed(f"reading {namespace}/{name}", error) from error
        metadata = current.get("metadata") or {}
        seen = (current.get("spec"), metadata.get("labels"))
        if merged_onto is not None and seen != merged_onto:
            # Someone else changed the spec or labels meanwhile: their change is not overwritten.
            raise Conflict("Conflict", f"{namespace}/{name} was changed meanwhile; read it again and retry")
        merged_onto = seen
        merged = {
            "spec": merge_patch(current.get("spec") or {}, patch.get("spec") or {}),
            "labels": merge_patch(metadata.get("labels") or {}, patch.get("labels") or {}),
        }
        parse_body(json.dumps(merged).encode())  # the result must be a valid registration: 400 else
        body = {
            "metadata": {
                "resourceVersion": metadata.get("resourceVersion"),
                "annotations": {REGISTERED_BY: identity.username},
                **({"labels": patch["labels"]} if "labels" in patch else {}),
            },
            **({"spec": patch["spec"]} if "spec" in patch else {}),
        }
        try:
            stored = await api.call(
                "PATCH", path, json=body, content_type="application/merge-patch+json", impersonate=writer
            )
            break
        except kube_errors.Conflict:
            # The resourceVersion moved: most often only the operator's status write. Read again;
            # the patch is made again only if the spec and labels it was merged onto are unchanged.
            continue
        except (kube_errors.KubeApiError, kube_errors.Unreachable) as error:
            raise _write_failed(f"patching {namespace}/{name}", error) from error
    else:
        raise Conflict("Conflict", f"{namespace}/{name} keeps changing; retry")
    return _answer(
        200,
        wire.RegistrationWrite(
            namespace=namespace,
            name=name,
            created=False,
            registered_by=identity.username,
            generation=stored.json().get("metadata", {}).get("generation", 0),
        ),
    )


async def _exists(api: KubeApi, namespace: str, name: str) -> bool:
    try:
        await api.call("GET", KubeApi.registration_path(namespace, name))
    except kube_errors.NotFound:
        return False
    return True


async def delete_registration(request: web.Request) -> web.Response:
    discovery, namespace, name, identity = await _context(request)
    probing = discovery.probing
    if probing is None:
        return await discovery.elsewhere(request, "NotOperator", "this replica serves discovery only")
    api = probing.api
    await discovery.auth.require(identity, "delete", namespace, name)
    writer = _writer(discovery, identity)
    try:
        await api.call("DELETE", KubeApi.registration_path(namespace, name), impersonate=writer)
    except kube_errors.NotFound:
        raise NotFound("NotFound", f"no registration {namespace}/{name}") from None
    except (kube_errors.KubeApiError, kube_errors.Unreachable) as error:
        raise _write_failed(f"deleting {namespace}/{name}", error) from error
    return _answer(200, wire.RegistrationWrite(namespace=namespace, name=name, deleted=True))


def add_routes(app: web.Application, serving: Serving) -> None:
    serving.add(app, "PUT", "/v1/registrations/{namespace}/{name}", put_registration)
    serving.add(app, "PATCH", "/v1/registrations/{namespace}/{name}", patch_registration)
    serving.add(app, "DELETE", "/v1/registrations/{namespace}/{name}", delete_registration)
