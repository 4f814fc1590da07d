"""HTTPS for discovery: ``--tls-cert-file`` and ``--tls-key-file``, reloaded when they change.

A certificate issuer (cert-manager, say) rewrites the mounted Secret's files before the old
certificate expires; the kubelet swaps them in place. The files are checked every
``CHECK_SECONDS``, and a changed pair is loaded into the same SSL context, so new connections
get the new certificate with no restart and no dropped connection. A pair that fails to load
(a half-written swap) is logged and retried at the next check; the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl

logger = logging.getLogger(__name__)

CHECK_SECONDS = 10.0


class ServingTls:
    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._loaded = self._stamp()
        self.context.load_cert_chain(cert_file, key_file)
        self.reloads = 0

    def _stamp(self) -> tuple[float, int, float, int]:
        cert, key = os.stat(self.cert_file), os.stat(self.key_file)
        return (cert.st_mtime, cert.st_ino, key.st_mtime, key.st_ino)

    def reload_if_changed(self) -> bool:
        """Load the pair again when either file changed since the last load; whether it did."""
        try:
            stamp = self._stamp()
            if stamp == self._loaded:
                return False
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            logger.error(
                "TLS certificate %s not reloaded (the old one keeps serving): %s", self.cert_file, error
            )
            return False
        self._loaded = stamp
        self.reloads += 1
        logger.info("TLS certificate %s reloaded", self.cert_file)
        return True

    async def watch(self, every: float = CHECK_SECONDS) -> None:
        """Check for changed files every ``every`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(every)
            self.reload_if_changed()
