"""Verified capability contracts: send a capability's ``contract`` request to an instance and
check that the answer validates against the capability's ``outputSchema``.

Same guarantees as a probe: the address is the one the SSRF policy checked (the request goes
to that IP, with the registration's host name in ``Host`` and for TLS), the whole exchange is
bounded by the contract's timeout, the answer by ``MAX_ANSWER_BYTES``, and every failure comes
back as a ``Verification`` with a CamelCase reason, never as an exception. Redirects are not
followed: a contract names the path that answers.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx

from svcreg.core.model import Contract
from svcreg.operator.probes import net
from svcreg.operator.probes.base import Context, Phase, Target

MAX_ANSWER_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Verification:
    """One contract check: passed, with a reason (condition style) and a message."""

    passed: bool
    reason: str
    message: str


def judge(status: int, body: bytes, schema: dict[str, Any], contract: Contract) -> Verification:
    """Whether an answer keeps the contract (pure): a 2xx whose body is JSON valid against
    ``schema``."""
    from jsonschema import Draft202012Validator  # noqa: PLC0415 - the operator extra only

    asked = f"{contract.method} {contract.path}"
    if not 200 <= status <= 299:
        return Verification(False, "BadStatus", f"{asked} answered HTTP {status}")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return Verification(False, "NotJson", f"{asked} answered with a body that is not JSON ({error})")
    errors = sorted(Draft202012Validator(schema).iter_errors(document), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(the document)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return Verification(False, "SchemaViolation", f"{asked}: at {where}: {first.message}"[:900] + more)
    return Verification(
        True, "ContractKept", f"{asked} answered HTTP {status} with a document valid against outputSchema"
    )


async def verify(
    target: Target, contract: Contract, schema: dict[str, Any], context: Context
) -> Verification:
    """Send ``contract`` to ``target``'s address and judge the answer."""
    phase = Phase()
    try:
        async with asyncio.timeout(contract.timeout_seconds):
            addresses = await context.policy.resolve(target.host, target.port)
            status, body = await _exchange(target, addresses[0], contract, context)
    except Exception as error:  # every failure is a verification result, by design
        outcome = net.outcome_for(error, target, phase)
        return Verification(False, str(outcome.reason), outcome.message)
    return judge(status, body, schema, contract)


async def _exchange(target: Target, address: str, contract: Contract, context: Context) -> tuple[int, bytes]:
    scheme = "https" if target.tls else "http"
    host = f"[{address}]" if ":" in address else address
    named = target.server_name or target.host
    authority = f"[{named}]" if ":" in named else named
    verify = await context.tls_for(target) if target.tls else False
    headers = {
        "Host": f"{authority}:{target.port}",
        "User-Agent": "svcreg-contract/1",
        "Accept": "application/json",
    }
    content = None
    if contract.body is not None:
        content = json.dumps(contract.body).encode()
        headers["Content-Type"] = "application/json"
    async with (
        httpx.AsyncClient(verify=verify, trust_env=False, follow_redirects=False, timeout=None) as client,
        client.stream(
            contract.method,
            f"{scheme}://{host}:{target.port}{contract.path}",
            headers=headers,
            content=content,
            extensions={"sni_hostname": named} if target.tls else {},
        ) as response,
    ):
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise ValueError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
        return response.status_code, body
