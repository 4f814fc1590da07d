"""Prometheus metrics and event-loop measurements shared by the operator and discovery.

Imports only the standard library and prometheus_client.
"""
