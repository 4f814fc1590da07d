"""CA bundles for probes over TLS to private CAs: ``healthCheck.tls.caBundleRef`` names a ConfigMap
key or a Secret key in the registration's own namespace.

Contracts:

- A bundle is read with the operator's own RBAC (``get`` on the one object, never list or
  watch) and only from the registration's namespace: a tenant can point svcreg at nothing it
  could not read itself. Its content never appears in a message, a log line or an answer.
- Bundles are kept ``TTL_SECONDS`` (so a rotated CA is picked up within that time), at most
  ``MAX_BUNDLES`` of them, and one SSL context is built per distinct bundle (at most
  ``MAX_CONTEXTS``): a thousand registrations sharing a CA share one context.
- A missing object or key, a refused read or a bundle that is not PEM certificates is a
  ``TrustError`` saying which, which the probe reports as a TLSError outcome.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import logging
import ssl
import time
from collections.abc import Callable

from svcreg.kube import errors as kube_errors
from svcreg.kube.api import KubeApi
from svcreg.operator.probes.base import TlsUnavailable

TTL_SECONDS = 60.0
MAX_BUNDLES = 1000
MAX_CONTEXTS = 256
MAX_BUNDLE_BYTES = 256 * 1024
logger = logging.getLogger(__name__)

CaRef = tuple[str, str, str, str]  # namespace, "configmap" | "secret", name, key


class TrustError(TlsUnavailable):
    """The CA bundle cannot be had; the message names the object and key, never the content."""


def describe(ref: CaRef) -> str:
    namespace, kind, name, key = ref
    return f"{'ConfigMap' if kind == 'configmap' else 'Secret'} {namespace}/{name} key {key}"


class TrustStore:
    def __init__(self, api: KubeApi, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self._clock = clock
        self._bundles: collections.OrderedDict[CaRef, tuple[float, bytes]] = collections.OrderedDict()
        self._contexts: collections.OrderedDict[bytes, ssl.SSLContext] = collections.OrderedDict()
        self._inflight: dict[CaRef, asyncio.Future[bytes]] = {}

    async def bundle(self, ref: CaRef) -> bytes:
        """The PEM bundle ``ref`` names, from the cache while it is fresh."""
        cached = self._bundles.get(ref)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        pending = self._inflight.get(ref)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[ref] = future
        try:
            pem = await self._read(ref)
            self._bundles.pop(ref, None)
            self._bundles[ref] = (self._clock() + TTL_SECONDS, pem)
            while len(self._bundles) > MAX_BUNDLES:
                self._bundles.popitem(last=False)
            future.set_result(pem)
            return pem
        except BaseException as error:
            future.set_exception(error)
            future.exception()
            raise
        finally:
            del self._inflight[ref]

    async def context(self, ref: CaRef) -> ssl.SSLContext:
        """A client SSL context trusting exactly the bundle ``ref`` names."""
        pem = await self.bundle(ref)
        digest = hashlib.sha256(pem).digest()
        context = self._contexts.get(digest)
        if context is None:
            context = ssl.create_default_context(cadata=pem.decode("ascii", errors="replace"))
            self._contexts[digest] = context
            while len(self._contexts) > MAX_CONTEXTS:
                self._contexts.popitem(last=False)
        return context

    async def _read(self, ref: CaRef) -> bytes:
        namespace, kind, name, key = ref
        plural = "configmaps" if kind == "configmap" else "secrets"
        try:
            found = (await self.api.call("GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}")).json()
        except kube_errors.NotFound:
            raise TrustError(f"CA bundle {describe(ref)}: no such {kind}") from None
        except (kube_errors.KubeApiError, kube_errors.Unreachable) as error:
            # A 403 here names svcreg's missing permission (chart: probeCaBundles); never content.
            logger.warning("CA bundle %s could not be read: %s", describe(ref), error)
            raise TrustError(f"CA bundle {describe(ref)} could not be read: {error}") from None
        data = found.get("data") or {}
        if key not in data:
            raise TrustError(f"CA bundle {describe(ref)}: the key is missing")
        raw = data[key]
        pem = base64.b64decode(raw) if kind == "secret" else str(raw).encode()
        if len(pem) > MAX_BUNDLE_BYTES or b"-----BEGIN CERTIFICATE-----" not in pem:
            raise TrustError(f"CA bundle {describe(ref)} is not PEM certificates (at most 256 KiB)")
        try:
            ssl.create_default_context(cadata=pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError):
            raise TrustError(f"CA bundle {describe(ref)} is not PEM certificates") from None
        return pem
