from __future__ import annotations

import pytest

from svcreg.operator.probes.policy import ProbePolicy, TargetForbidden


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.1.1",
        "fe80::1",
        "fd00:ec2::254",
        "100.100.100.200",
        "168.63.129.16",
        "fd20:ce::254",
        "::ffff:169.254.169.254",
    ],
)
def test_metadata_and_link_local_are_always_refused(address: str) -> None:
    wide_open = ProbePolicy(["0.0.0.0/0", "::/0"])
    assert wide_open.refusal(address) is not None


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "::1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "::ffff:127.0.0.1"]
)
def test_loopback_unspecified_and_multicast_need_probe_allow(address: str) -> None:
    assert "--probe-allow" in (ProbePolicy().refusal(address) or "")
    assert (
        ProbePolicy(["127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128", "224.0.0.0/4", "ff00::/8"]).refusal(
            address
        )
        is None
    )


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.10", "8.8.8.8", "2001:db8::1"])
def test_ordinary_addresses_may_be_probed(address: str) -> None:
    assert ProbePolicy().refusal(address) is None


async def test_names_are_checked_after_resolution() -> None:
    with pytest.raises(TargetForbidden, match="loopback"):
        await ProbePolicy().resolve("localhost", 80)
    assert "127.0.0.1" in await ProbePolicy(["127.0.0.0/8"]).resolve("localhost", 80)
