"""Hosts in URLs and authorities: an IPv6 address is bracketed there (RFC 3986 section 3.2.2)."""

from __future__ import annotations


def bracketed(host: str) -> str:
    """``host`` as it is written in a URL: ``[::1]`` for an IPv6 address, else unchanged."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def authority(host: str, port: int | str) -> str:
    """``host:port`` with the host bracketed when it is an IPv6 address."""
    return f"{bracketed(host)}:{port}"
