"""The write path: watched registrations in, probes on schedule, status, Events and deletes out.

    Kopf watch -> prober (bookkeeping) -> scheduler -> probes -> health (pure) -> reconcile (pure)
               -> status writer -> API

Owns the Kopf handlers, the prober, the scheduler, the health state machine, status building,
targets and endpoints, the partition guard and the probe kinds (``probes/``). May import
``svcreg.core``, ``svcreg.kube`` and ``svcreg.telemetry``; never ``svcreg.discovery`` (the
process assembly in ``svcreg.main`` connects the two).
"""
