"""The read path: watched registrations in, an in-memory index, answers to authorized callers.

    watch (Kopf's, or the informer on --discovery-only replicas) -> index -> query -> HTTP answer

Owns the index, query parsing, the informer and the HTTP API (``http/``: routes, auth,
serving, OpenAPI). May import ``svcreg.core``, ``svcreg.kube`` and ``svcreg.telemetry``; never
``svcreg.operator``: what it needs from the prober (a place to record heartbeats) is a
protocol it declares, which ``svcreg.main`` fills.
"""
