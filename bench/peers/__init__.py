"""svcreg beside a registry users would pick instead: ``python -m bench.peers`` (see __main__)."""
