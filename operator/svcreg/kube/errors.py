"""Kubernetes API errors, mapped once from the HTTP status of an answer.

Callers catch the case they handle (``NotFound`` after a concurrent delete, ``Conflict`` on a
precondition, ``Invalid`` for what admission refused) instead of comparing status codes.
``Unreachable`` covers the transport: a refused connection, a reset, or the call's deadline.
"""

from __future__ import annotations

import json
from typing import Any


class KubeApiError(RuntimeError):
    """An answer of 400 or more from the API server; ``status``, ``reason`` and ``message``
    are the API's own (from its ``Status`` object when it sent one)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"HTTP {status}{' ' + reason if reason else ''}: {message}")
        self.status, self.message, self.reason = status, message, reason


class BadRequest(KubeApiError):
    """400."""


class Unauthorized(KubeApiError):
    """401: svcreg's own credentials were refused."""


class Forbidden(KubeApiError):
    """403: RBAC refused the call (for svcreg's own identity, a chart permission is missing)."""


class NotFound(KubeApiError):
    """404: the object (or its namespace) is not there."""


class Conflict(KubeApiError):
    """409: a precondition (uid, resourceVersion) did not hold, or the object already exists."""


class Gone(KubeApiError):
    """410: a watch's resourceVersion is too old; list again."""


class Invalid(KubeApiError):
    """422: the object failed validation (schema, CEL rules, admission)."""


class TooManyRequests(KubeApiError):
    """429: the API server asks the caller to slow down (API Priority and Fairness)."""


class ServerError(KubeApiError):
    """5xx: the API server (or something in front of it) failed; worth retrying."""


class Unreachable(RuntimeError):
    """The call did not get an answer: connection refused or reset, or its deadline passed."""


_BY_STATUS: dict[int, type[KubeApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}


def error_for(status: int, content: bytes) -> KubeApiError:
    """The typed error for an answer with ``status`` >= 400 and body ``content``."""
    message, reason = content.decode("utf-8", errors="replace")[:500], ""
    try:
        body: Any = json.loads(content)
        if isinstance(body, dict):
            message = str(body.get("message") or message)[:1000]
            reason = str(body.get("reason") or "")
    except ValueError:
        pass
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else KubeApiError)
    return kind(status, message, reason)


RETRYABLE: tuple[type[Exception], ...] = (ServerError, TooManyRequests, Conflict, Unreachable)
"""Errors after which the same write may succeed if made again later."""
