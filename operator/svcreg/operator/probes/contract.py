"""Verified capability contracts: send a capability's ``contract`` request to an instance and
check that the answer validates against the capability's ``outputSchema``.

Same guarantees as a probe: the address is the one the SSRF policy checked (the request goes
to that IP, with the registration's host name in ``Host`` and for TLS), the whole exchange is
bounded by the contract's timeout, the answer by ``MAX_ANSWER_BYTES``, and every failure comes
back as a ``Verification`` with a CamelCase reason, never as an exception. The answer is judged
against the schema by ``judge.Judge``, in a worker process, never on the event loop. Redirects are not
followed: a contract names the path that answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from svcreg.core.hosts import bracketed
from svcreg.core.model import Contract
from svcreg.operator.probes import net
from svcreg.operator.probes.base import Context, Phase, Target
from svcreg.operator.probes.judge import Judge, Verification

MAX_ANSWER_BYTES = 1024 * 1024


async def verify(
    target: Target,
    contract: Contract,
    schema: dict[str, Any],
    context: Context,
    *,
    judge: Judge,
    namespace: str,
) -> Verification:
    """Send ``contract`` to ``target``'s address and have ``judge`` check the answer, the whole
    within the contract's timeout (the judgement gets what the exchange left of it)."""
    phase = Phase()
    started = time.monotonic()
    try:
        async with asyncio.timeout(contract.timeout_seconds):
            addresses = await context.policy.resolve(target.host, target.port)
            status, body = await _exchange(target, addresses[0], contract, context)
    except Exception as error:  # every failure is a verification result, by design
        outcome = net.outcome_for(error, target, phase)
        return Verification(False, str(outcome.reason), outcome.message)
    left = contract.timeout_seconds - (time.monotonic() - started)
    asked = f"{contract.method} {contract.path}"
    return await judge.verdict(namespace, status=status, body=body, schema=schema, asked=asked, seconds=left)


async def _exchange(target: Target, address: str, contract: Contract, context: Context) -> tuple[int, bytes]:
    scheme = "https" if target.tls else "http"
    host = bracketed(address)
    named = target.server_name or target.host
    authority = bracketed(named)
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
