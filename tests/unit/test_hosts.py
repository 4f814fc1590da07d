"""One helper brackets IPv6 hosts wherever svcreg writes a URL or an authority."""

from __future__ import annotations

from svcreg.core.hosts import authority, bracketed


def test_an_ipv6_host_is_bracketed_once_and_others_are_left_alone() -> None:
    assert bracketed("fd00::1") == "[fd00::1]"
    assert bracketed("[fd00::1]") == "[fd00::1]"
    assert bracketed("10.0.0.1") == "10.0.0.1"
    assert bracketed("orders.team-a.svc") == "orders.team-a.svc"
    assert authority("fd00::1", 8080) == "[fd00::1]:8080"
    assert authority("10.0.0.1", "443") == "10.0.0.1:443"
