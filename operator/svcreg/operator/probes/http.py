"""HTTP(S) probes: one request on a fresh connection, judged by its status line.

A deliberately small HTTP/1.1 client: the probe needs only the status code, must connect to the
address the policy checked (not re-resolve), and has to be cheap at a thousand probes a second.
A fresh connection per probe (``Connection: close``) tests what a new caller would see, as the
kubelet's probes do.
"""

from __future__ import annotations

from svcreg.core.hosts import bracketed
from svcreg.operator.probes import net
from svcreg.operator.probes.base import Context, Outcome, Phase, Reason, Target

_MAX_STATUS_LINE = 1024


def request_bytes(target: Target) -> bytes:
    """The request line and headers. Control characters in the path or a header value are
    refused here too (the CRD and the model refuse them first): a line break would let a
    registration smuggle a second request to whatever the target is."""
    config = target.http
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in config.path):
        raise ValueError("healthCheck.path contains a space or control character")
    named = target.server_name or target.host  # a serviceRef pod is probed by IP, named as its certificate
    host = bracketed(named)
    default_port = 443 if target.tls else 80
    authority = host if target.port == default_port else f"{host}:{target.port}"
    lines = [
        f"{config.method} {config.path} HTTP/1.1",
        f"Host: {authority}",
        "User-Agent: svcreg-probe/1",
        "Accept: */*",
        "Connection: close",
    ]
    if config.method == "POST":
        lines.append("Content-Length: 0")
    for name, value in config.headers:
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
            raise ValueError(f"header {name} contains a control character")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_status(line: bytes) -> int:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ValueError(f"not an HTTP/1.x status line: {line[:80]!r}")
    return int(parts[1])


async def probe(target: Target, context: Context, phase: Phase) -> Outcome:
    tls = await context.tls_for(target) if target.tls else None
    line = await net.exchange(target, context.policy, phase, request_bytes(target), tls)
    latency = phase.elapsed()
    if not line:
        message = f"{target.display} closed the connection without a response"
        return Outcome.fail(Reason.CONNECTION_RESET, message, latency)
    if len(line) >= _MAX_STATUS_LINE or not line.endswith(b"\n"):
        return Outcome.fail(Reason.PROTOCOL_ERROR, f"{target.display} sent no HTTP status line", latency)
    try:
        status = parse_status(line)
    except ValueError as error:
        return Outcome.fail(Reason.PROTOCOL_ERROR, f"{target.display} {error}", latency)
    if any(low <= status <= high for low, high in target.http.expected):
        return Outcome.ok(latency, f"HTTP {status}")
    return Outcome.fail(
        Reason.BAD_STATUS, f"{target.http.method} {target.http.path} answered HTTP {status}", latency
    )
