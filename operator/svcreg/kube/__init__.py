"""The async Kubernetes API client svcreg's own calls go through (status patches, Events,
deletes, reviews, lists and watches of the discovery-only informer).

Errors are mapped once from the HTTP status into ``svcreg.kube.errors``; every call has a
deadline. Imports ``svcreg.core`` only.
"""
