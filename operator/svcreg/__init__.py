"""svcreg: a Kubernetes-native service registry.

ServiceRegistration resources are the single source of truth; the operator probes them and
writes health back as status, and the discovery endpoint serves an index built from them.
"""

__version__ = "0.1.0"
