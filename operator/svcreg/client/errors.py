"""Every error the client raises, in one hierarchy rooted at ``SvcregError``."""

from __future__ import annotations

import httpx
import pydantic

from svcreg.core.wire import ErrorAnswer


class SvcregError(Exception):
    """Base of every error the client raises."""


class ApiError(SvcregError):
    """The discovery endpoint answered with an error: ``status``, ``code`` and ``message`` are
    its own (``{"error": {"code", "message"}}``)."""

    def __init__(self, status: int, code: str, message: str, parameter: str | None = None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message, self.parameter = status, code, message, parameter


class BadRequest(ApiError):
    """400: ``parameter`` names what was wrong."""


class Unauthorized(ApiError):
    """401: no token, a malformed or expired one, or one with the wrong audience."""


class Forbidden(ApiError):
    """403: RBAC lets the caller read nothing there (or not send this heartbeat)."""


class NotFound(ApiError):
    """404: no such registration."""


class Conflict(ApiError):
    """409: the request does not fit the registration (a heartbeat to one that is not ttl)."""


class TooManyRequests(ApiError):
    """429: over the caller's rate limit; ``retry_after`` says when to come back."""

    retry_after: float | None = None


class UnknownCapability(SvcregError, LookupError):
    """No readable registration provides the capability at all."""

    def __init__(self, capability: str) -> None:
        super().__init__(f"unknown capability {capability!r}: no registration provides it")
        self.capability = capability


class UnknownService(SvcregError, LookupError):
    """No readable registration belongs to the logical service at all."""

    def __init__(self, service: str) -> None:
        super().__init__(f"unknown service {service!r}: no registration belongs to it")
        self.service = service


class NoHealthyInstance(SvcregError, LookupError):
    """The capability or service exists, but no instance is served, matching and weighted
    above 0."""

    def __init__(self, target: str, version: str | None = None) -> None:
        wanted = f" (version {version})" if version else ""
        super().__init__(f"no healthy instance of {target!r}{wanted}")
        self.target, self.version = target, version


class AllInstancesFailed(SvcregError):
    """``request`` tried every attempt it was allowed and none answered without a connection
    error, timeout or 5xx. ``last`` is the final response, if there was one."""

    def __init__(self, target: str, attempts: int, last: httpx.Response | None, error: Exception | None):
        reason = f"HTTP {last.status_code}" if last is not None else repr(error)
        super().__init__(f"{target!r}: {attempts} attempts failed; last: {reason}")
        self.target, self.attempts, self.last, self.error = target, attempts, last, error


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: TooManyRequests,
}


def raise_for(response: httpx.Response) -> None:
    """Raise the typed error for an error answer; return for anything below 400."""
    if response.status_code < 400:
        return
    try:
        detail = ErrorAnswer.model_validate_json(response.content).error
        code, message, parameter = detail.code, detail.message, detail.parameter
    except (pydantic.ValidationError, ValueError):
        code, message, parameter = response.reason_phrase, response.text[:300], None
    error = _BY_STATUS.get(response.status_code, ApiError)(response.status_code, code, message, parameter)
    if isinstance(error, TooManyRequests):
        try:
            error.retry_after = float(response.headers.get("Retry-After", ""))
        except ValueError:
            error.retry_after = None
    raise error
