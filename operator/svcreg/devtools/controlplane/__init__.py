"""A real kube-apiserver and etcd on loopback, built from pinned Go modules.

Tests and ``svcreg dev`` use this instead of a mock so that CRD schemas, CEL rules, RBAC,
TokenReview, SubjectAccessReview and watches behave exactly as they do in a cluster.
"""
