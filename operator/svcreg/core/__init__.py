"""The vocabulary every other package shares: the ServiceRegistration model, the health values
and which of them are served, the discovery wire format, and input errors.

Owns no I/O. Imports only the standard library and pydantic, so the client can depend on it
without pulling in anything server-side.
"""
