"""Health probes: one interface, ``async probe(target) -> Outcome``, per check kind."""
