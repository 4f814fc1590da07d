"""A validating admission webhook: ``kubectl apply`` of a registration the models refuse is
refused at once, with the field named, instead of being stored and marked InvalidSpec later.

The CRD's schema and CEL rules already refuse most mistakes; what they cannot check (a
capability's ``inputSchema`` that is not valid JSON Schema, say) the models do, and this webhook
runs the same ``spec_problem`` the prober runs. It is served over HTTPS on its own port
(``--admission-port`` with ``--admission-cert-file``/``--admission-key-file``, reloaded when they
change) and registered by a ValidatingWebhookConfiguration with ``failurePolicy: Ignore``: when
the operator is down, applies still work and the prober still marks a bad spec InvalidSpec, so
the webhook can only add refusals, never block a cluster.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from svcreg.core.contracts import spec_problem

PATH = "/validate/serviceregistrations"
MAX_REVIEW_BYTES = 3 * 1024 * 1024  # an AdmissionReview carries the object (etcd's limit is 1.5 MiB)


def review(body: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview answer to one AdmissionReview request (pure)."""
    request = body.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    obj = request.get("object") or {}
    if request.get("operation") in ("CREATE", "UPDATE") and isinstance(obj, dict):
        spec = obj.get("spec")
        _, problem = spec_problem(spec if isinstance(spec, dict) else {})
        if problem is not None:
            name = (obj.get("metadata") or {}).get("name") or request.get("name") or ""
            response["allowed"] = False
            response["status"] = {
                "code": 422,
                "reason": "Invalid",
                "message": f'ServiceRegistration "{name}" is invalid: {problem}',
            }
    return {
        "apiVersion": body.get("apiVersion") or "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }


async def _validate(request: web.Request) -> web.Response:
    if (request.content_length or 0) > MAX_REVIEW_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_REVIEW_BYTES, actual_size=request.content_length or 0
        )
    try:
        body = json.loads(await request.read())
    except ValueError as error:
        raise web.HTTPBadRequest(text=f"not an AdmissionReview: {error}") from error
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="not an AdmissionReview")
    return web.json_response(review(body))


def build_app() -> web.Application:
    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app.router.add_post(PATH, _validate)
    return app
