"""gRPC probes through the standard ``grpc.health.v1.Health/Check``.

grpcio-health-checking is a dependency for the generated health stubs: writing the protobuf
framing by hand would be more code than this whole module.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from svcreg.core.hosts import authority
from svcreg.operator.probes.base import Context, Outcome, Phase, Reason, Target


async def probe(target: Target, context: Context, phase: Phase) -> Outcome:
    addresses = await context.policy.resolve(target.host, target.port)
    address = addresses[0]
    dial = authority(address, target.port)
    options: list[tuple[str, str | int]] = [
        ("grpc.default_authority", target.display),
        ("grpc.enable_retries", 0),
    ]
    if target.tls:
        # Over TLS: the CA bundle the registration names (else the system's roots), checked for
        # serverName when given (a serviceRef pod is dialled by IP).
        roots = await context.trust.bundle(target.ca) if target.ca and context.trust else None
        if target.server_name:
            options.append(("grpc.ssl_target_name_override", target.server_name))
        channel = grpc.aio.secure_channel(dial, grpc.ssl_channel_credentials(roots), options=options)
    else:
        channel = grpc.aio.insecure_channel(dial, options=options)
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = await stub.Check(
                health_pb2.HealthCheckRequest(service=target.grpc.service), timeout=target.timeout
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            latency = phase.elapsed()
            if code == grpc.StatusCode.UNAVAILABLE:
                return Outcome.fail(
                    Reason.CONNECTION_REFUSED,
                    f"{target.display} unavailable: {error.details()}",
                    latency,
                    connection_level=True,
                )
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return Outcome.fail(
                    Reason.TIMEOUT, f"{target.display} did not answer within {target.timeout:g}s", latency
                )
            if code == grpc.StatusCode.NOT_FOUND:
                return Outcome.fail(
                    Reason.NOT_SERVING,
                    f"{target.display} does not know service {target.grpc.service!r}",
                    latency,
                )
            return Outcome.fail(
                Reason.PROTOCOL_ERROR, f"{target.display} health check failed: {code.name}", latency
            )
    latency = phase.elapsed()
    if answer.status == health_pb2.HealthCheckResponse.SERVING:
        return Outcome.ok(latency, "SERVING")
    status_name = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return Outcome.fail(Reason.NOT_SERVING, f"{target.display} reports {status_name}", latency)
