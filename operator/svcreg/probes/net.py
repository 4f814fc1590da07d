"""Connecting to a policy-checked address, and turning network errors into outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ssl
import time

from svcreg.probes import policy as policy_mod
from svcreg.probes.base import Outcome, Reason, Target

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Phase:
    """Where a probe got to, so a timeout can say whether the target ever answered."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.connected = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started


async def open_checked(
    target: Target, policy: policy_mod.ProbePolicy, phase: Phase, ssl_context: ssl.SSLContext | None
) -> Streams:
    """Resolve, check every address with the policy, connect to the first checked one that answers."""
    addresses = await policy.resolve(target.host, target.port)
    last_error: OSError | None = None
    for address in addresses:
        try:
            streams = await asyncio.open_connection(
                address,
                target.port,
                ssl=ssl_context,
                server_hostname=target.host if ssl_context is not None else None,
                limit=16384,
            )
        except ssl.SSLError:
            raise
        except OSError as error:
            last_error = error
            continue
        phase.connected = True
        return streams
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
            return Outcome.fail(
                Reason.TIMEOUT,
                f"{where} accepted the connection but did not answer within {target.timeout:g}s",
                latency,
            )
        return Outcome.fail(
            Reason.TIMEOUT,
            f"connecting to {where} timed out after {target.timeout:g}s",
            latency,
            connection_level=True,
        )
    if isinstance(error, ssl.SSLError):
        return Outcome.fail(Reason.TLS_ERROR, f"TLS with {where} failed: {error.reason or error}", latency)
    if isinstance(error, ConnectionRefusedError):
        return Outcome.fail(
            Reason.CONNECTION_REFUSED, f"{where} refused the connection", latency, connection_level=True
        )
    if isinstance(error, ConnectionResetError | BrokenPipeError | asyncio.IncompleteReadError):
        return Outcome.fail(
            Reason.CONNECTION_RESET,
            f"{where} closed the connection before answering",
            latency,
            connection_level=not phase.connected,
        )
    if isinstance(error, OSError) and error.errno in (
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.EADDRNOTAVAIL,
    ):
        return Outcome.fail(
            Reason.NETWORK_UNREACHABLE,
            f"{where} is unreachable: {error.strerror}",
            latency,
            connection_level=True,
        )
    if isinstance(error, OSError):
        return Outcome.fail(
            Reason.CONNECTION_REFUSED if not phase.connected else Reason.CONNECTION_RESET,
            f"{where}: {error.strerror or error}",
            latency,
            connection_level=not phase.connected,
        )
    return Outcome.fail(Reason.PROTOCOL_ERROR, f"{where}: {error}", latency)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
