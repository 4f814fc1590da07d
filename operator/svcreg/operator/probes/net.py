"""Connecting to a policy-checked address, and turning network errors into outcomes.

Contract: ``exchange`` connects only to addresses the policy returned (never re-resolving),
sends one request, returns the first line of the answer and closes; ``outcome_for`` maps every
exception a probe can raise to an Outcome, in this one place. A bare asyncio Protocol, not
streams (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import errno
import ssl

from svcreg.operator.probes import policy as policy_mod
from svcreg.operator.probes.base import Outcome, Phase, Reason, Target, TlsUnavailable

_MAX_LINE = 1024


class FirstLine(asyncio.Protocol):
    """Sends ``request`` (if any) once connected; resolves with the first line received, or
    with b"" when the peer closes first. With no request, resolves as soon as it connects."""

    def __init__(self, request: bytes | None, answer: asyncio.Future[bytes]) -> None:
        self.request = request
        self.answer = answer
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.request is None:
            self._finish(b"")
        else:
            self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\n")
        if end >= 0:
            self._finish(self.buffer[: end + 1])
        elif len(self.buffer) > _MAX_LINE:
            self._finish(self.buffer[:_MAX_LINE])

    def eof_received(self) -> bool:
        self._finish(self.buffer)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            if exc is not None and not self.buffer:
                self.answer.set_exception(exc)
            else:
                self.answer.set_result(self.buffer)

    def _finish(self, line: bytes) -> None:
        if not self.answer.done():
            self.answer.set_result(line)
        if self.transport is not None:
            self.transport.close()


async def exchange(
    target: Target,
    policy: policy_mod.ProbePolicy,
    phase: Phase,
    request: bytes | None,
    ssl_context: ssl.SSLContext | None,
) -> bytes:
    """Connect to the first checked address that accepts, send ``request``, return the first line."""
    addresses = await policy.resolve(target.host, target.port)
    loop = asyncio.get_running_loop()
    last_error: OSError | None = None
    for address in addresses:
        answer: asyncio.Future[bytes] = loop.create_future()
        try:
            transport, _ = await loop.create_connection(
                lambda answer=answer: FirstLine(request, answer),
                address,
                target.port,
                ssl=ssl_context,
                server_hostname=(target.server_name or target.host) if ssl_context is not None else None,
            )
        except ssl.SSLError:
            raise
        except OSError as error:
            last_error = error
            continue
        phase.connected = True
        try:
            return await answer
        finally:
            transport.close()
    assert last_error is not None
    raise last_error


def outcome_for(error: BaseException, target: Target, phase: Phase) -> Outcome:
    """The structured failure for an exception raised while probing ``target``."""
    latency = phase.elapsed()
    where = target.display
    if isinstance(error, policy_mod.TargetForbidden):
        return Outcome.fail(Reason.TARGET_FORBIDDEN, f"{target.host} refused by the probe policy: {error}")
    if isinstance(error, policy_mod.ResolutionFailed):
        return Outcome.fail(Reason.DNS_FAILURE, str(error), latency, connection_level=True)
    if isinstance(error, TimeoutError):
        if phase.connected:
            message = f"{where} accepted the connection but did not answer within {target.timeout:g}s"
            return Outcome.fail(Reason.TIMEOUT, message, latency)
        message = f"connecting to {where} timed out after {target.timeout:g}s"
        return Outcome.fail(Reason.TIMEOUT, message, latency, connection_level=True)
    if isinstance(error, ssl.SSLError):
        return Outcome.fail(Reason.TLS_ERROR, f"TLS with {where} failed: {error.reason or error}", latency)
    if isinstance(error, TlsUnavailable):
        return Outcome.fail(Reason.TLS_ERROR, str(error), latency)
    if isinstance(error, ConnectionRefusedError):
        message = f"{where} refused the connection"
        return Outcome.fail(Reason.CONNECTION_REFUSED, message, latency, connection_level=True)
    if isinstance(error, ConnectionResetError | BrokenPipeError):
        message = f"{where} closed the connection before answering"
        return Outcome.fail(Reason.CONNECTION_RESET, message, latency, connection_level=not phase.connected)
    unreachable = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL)
    if isinstance(error, OSError) and error.errno in unreachable:
        message = f"{where} is unreachable: {error.strerror}"
        return Outcome.fail(Reason.NETWORK_UNREACHABLE, message, latency, connection_level=True)
    if isinstance(error, OSError):
        reason = Reason.CONNECTION_RESET if phase.connected else Reason.CONNECTION_REFUSED
        message = f"{where}: {error.strerror or error}"
        return Outcome.fail(reason, message, latency, connection_level=not phase.connected)
    return Outcome.fail(Reason.PROTOCOL_ERROR, f"{where}: {error}", latency)
