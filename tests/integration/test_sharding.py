"""Operators without --standalone share probing: one Lease per member, one owner per registration.

Three members probe 30 registrations: each registration is probed by exactly one of them; a
member killed with SIGKILL has its share taken over with nothing lost; a member that arrives
takes only its own share; a heartbeat sent to any member reaches the owner.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from svcreg.devtools.controlplane.cluster import Cluster
from svcreg.operator import sharding
from tests.targets import HttpTarget, http_target

from .kubehelpers import Kube, registration
from .operator_process import OperatorProcess

AUDIENCE = "svcreg"
COUNT = 30


@pytest.fixture
def web() -> Iterator[HttpTarget]:
    with http_target() as target:
        yield target


class Group:
    def __init__(self, k8s: Kube, control_plane: Cluster, tmp_path: Path, namespace: str) -> None:
        self.k8s, self.control_plane, self.tmp_path, self.namespace = k8s, control_plane, tmp_path, namespace
        self.members: list[OperatorProcess] = []
        self.last_shares: list[float] = []
        k8s.create_service_account(namespace, "reader")
        k8s.grant(namespace, "reader", ["get", "list", "watch", "heartbeat"])
        self.headers = {"Authorization": f"Bearer {k8s.token(namespace, 'reader', [AUDIENCE])}"}

    def add(self, *, blocked: bool = False, kubeconfig: Path | None = None) -> OperatorProcess:
        """A new member; ``blocked``: its path to the targets is closed (the SSRF policy refuses
        loopback), as a member with a bad network path."""
        n = len(self.members)
        allow = () if blocked else ("--probe-allow", "127.0.0.0/8")
        process = OperatorProcess(
            self.control_plane, self.tmp_path / f"member-{n}.log",
            "--namespace", self.namespace, "--lease-namespace", self.namespace,
            "--prober-group", "test", *allow, "--token-audience", AUDIENCE,
            standalone=False,
        )  # fmt: skip
        if kubeconfig is not None:
            process.env = {**process.env, "KUBECONFIG": str(kubeconfig)}
        process.start()
        self.members.append(process)
        return process

    def live(self) -> list[OperatorProcess]:
        return [m for m in self.members if m.process is not None and m.process.poll() is None]

    def identities(self) -> dict[str, str]:
        """Lease holder -> advertised URL, as the API server has them."""
        leases = json.loads(
            self.k8s.kubectl("get", "leases", "-n", self.namespace, "-l", "svcreg.io/prober-group=test",
                             "-o", "json").stdout
        )  # fmt: skip
        return {
            lease["spec"]["holderIdentity"]: lease["metadata"]["annotations"]["svcreg.io/url"]
            for lease in leases["items"]
        }

    def shares(self) -> list[float]:
        return [m.metric("svcreg_prober_share") for m in self.live()]

    def settled(self, count: int = COUNT + 1) -> bool:
        """Every live member probes a share, and the shares add up to every registration."""
        shares = self.last_shares = self.shares()
        return all(s > 0 for s in shares) and sum(shares) == count

    def wait_settled(self, count: int, what: str, timeout: float = 90) -> None:
        """``settled``, waited for; a timeout says what the shares were."""
        try:
            self.members[0].wait_until(lambda: self.settled(count), what, timeout)
        except AssertionError as error:
            raise AssertionError(f"shares of {count}: {self.last_shares}\n{error}") from None

    def prober_of(self, name: str, via: OperatorProcess) -> str | None:
        answer = httpx.get(f"{via.url}/v1/services/{self.namespace}/{name}", headers=self.headers, timeout=10)
        probes = answer.json().get("lastProbes") or []
        return probes[0].get("prober") if probes else None

    def listed(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(
            self.k8s.kubectl("get", "svcreg", "-n", self.namespace, "-o", "json").stdout
        )["items"]
        return items

    def healthy(self) -> int:
        """Healthy probed registrations (the ttl one's health follows the test's heartbeats)."""
        return sum(
            1
            for item in self.listed()
            if item["metadata"]["name"] != "beat" and (item.get("status") or {}).get("health") == "Healthy"
        )

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def test_members_share_probing_and_hand_over_without_loss(
    k8s: Kube, control_plane: Cluster, tmp_path: Path, web: HttpTarget
) -> None:
    namespace = k8s.create_namespace("shard")
    check = {"intervalSeconds": 1, "timeoutSeconds": 0.5}
    for i in range(COUNT):
        k8s.apply(registration(f"r{i}", {"endpoint": web.url, "healthCheck": check}), namespace)
    ttl = {"type": "ttl", "ttlSeconds": 5, "intervalSeconds": 1, "timeoutSeconds": 0.5}
    k8s.apply(registration("beat", {"endpoint": "http://10.0.0.5:80", "healthCheck": ttl}), namespace)
    group = Group(k8s, control_plane, tmp_path, namespace)
    try:
        for _ in range(3):
            group.add()
        first = group.members[0]
        first.wait_until(group.settled, "three members to share the registrations", 90)
        first.wait_until(lambda: group.healthy() == COUNT, "every registration to be Healthy", 90)

        # Exactly one owner per registration, the one rendezvous hashing names, whichever
        # member is asked (a member asks the owner for what it does not probe).
        urls = group.identities()
        assert len(urls) == 3

        def owners() -> dict[str, str | None]:
            return {f"r{i}": group.prober_of(f"r{i}", first) for i in range(COUNT)}

        def expected() -> dict[str, str | None]:
            live = list(group.identities())
            return {f"r{i}": sharding.owner((namespace, f"r{i}"), live) for i in range(COUNT)}

        first.wait_until(lambda: owners() == expected(), "each registration probed by its owner")
        before = owners()
        assert len(set(before.values())) == 3
        for member in group.members[1:]:
            assert {f"r{i}": group.prober_of(f"r{i}", member) for i in range(COUNT)} == before

        # A heartbeat sent to a member that does not own the ttl registration reaches the owner.
        owner = sharding.owner((namespace, "beat"), list(urls))
        stranger = next(m for m in group.members if _identity(group, m) != owner)

        def beat_healthy() -> bool:
            answer = httpx.post(
                f"{stranger.url}/v1/heartbeat/{namespace}/beat", headers=group.headers, timeout=10
            )
            assert answer.status_code == 200, answer.text
            return group.k8s.get_registration(namespace, "beat")["status"].get("health") == "Healthy"

        stranger.wait_until(beat_healthy, "heartbeats through a non-owner to count")

        # SIGKILL one member: its Lease is not released; after its duration the others take its
        # share over, nothing is lost and nothing turns Unhealthy.
        killed = group.members[1]
        killed_identity = _identity(group, killed)
        assert killed.process is not None
        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait()
        first.wait_until(
            lambda: sum(group.shares()) == COUNT + 1 and all(
                group.prober_of(f"r{i}", first) not in (None, killed_identity) for i in range(COUNT)
            ),
            "the survivors to take the killed member's share over",
            90,
        )  # fmt: skip
        moved = {name for name, who in before.items() if who == killed_identity}
        after_kill = owners()
        assert {n for n in before if before[n] != after_kill[n]} == moved  # only its share moved
        assert group.healthy() == COUNT
        assert (
            len(json.loads(k8s.kubectl("get", "svcreg", "-n", namespace, "-o", "json").stdout)["items"])
            == COUNT + 1
        )

        # A new member takes only what it wins.
        arrived = group.add()
        first.wait_until(group.settled, "the new member to take its share", 90)
        arrived_identity = _identity(group, arrived)
        first.wait_until(
            lambda: (
                all(group.prober_of(f"r{i}", first) is not None for i in range(COUNT))
                and owners() == expected()
            ),
            "the new member's share to be probed by it",
        )
        after_join = owners()
        assert {after_join[n] for n in after_join if after_join[n] != after_kill[n]} == {arrived_identity}
        assert group.healthy() == COUNT
    finally:
        group.stop()
    for member in group.members:
        assert "Traceback" not in member.log_text(), member.log_text()[-3000:]


def _identity(group: Group, member: OperatorProcess) -> str:
    """The identity a member holds its Lease under: the one advertising its port."""
    return next(i for i, url in group.identities().items() if url.endswith(f":{member.port}"))


def test_quorum_keeps_an_instance_healthy_until_two_members_see_it_fail(
    k8s: Kube, control_plane: Cluster, tmp_path: Path
) -> None:
    """healthCheck.quorum 2 with three members: a member whose path to the targets is closed
    cannot turn what it owns Unhealthy alone; it records VantageDisagreement (condition and
    Event) and the instances stay Healthy. When the targets really fail, two members agree."""
    namespace = k8s.create_namespace("quorum")
    web = HttpTarget()  # closed by the test: the failure every member then sees
    count = 20
    check = {"intervalSeconds": 1, "timeoutSeconds": 0.5, "failureThreshold": 1, "quorum": 2}
    for i in range(count):
        k8s.apply(registration(f"q{i}", {"endpoint": web.url, "healthCheck": check}), namespace)
    # Members prove themselves to each other with their ServiceAccount's token, as in a pod.
    k8s.create_service_account(namespace, "operator")
    k8s.rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=f"{namespace}-operator"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="operator", namespace=namespace)],
        )
    )  # fmt: skip
    kubeconfig = k8s.kubeconfig_as(namespace, "operator", tmp_path / "operator.kubeconfig")
    group = Group(k8s, control_plane, tmp_path, namespace)
    try:
        for _ in range(3):
            group.add(kubeconfig=kubeconfig)
        first = group.members[0]
        group.wait_settled(count, "three members to share the registrations")
        first.wait_until(lambda: group.healthy() == count, "every registration to be Healthy", 90)

        # One member's path goes bad: replaced by one whose probes of the targets all fail.
        group.members[2].stop()
        blocked = group.add(blocked=True, kubeconfig=kubeconfig)
        first.wait_until(lambda: group.settled(count) and blocked.metric("svcreg_prober_share") > 0,
                         "the blocked member to probe its share", 90)  # fmt: skip

        def disagreements() -> list[str]:
            return [
                item["metadata"]["name"]
                for item in group.listed()
                for c in (item.get("status") or {}).get("conditions", [])
                if c["type"] == "VantageDisagreement" and c["status"] == "True"
            ]

        first.wait_until(lambda: len(disagreements()) >= blocked.metric("svcreg_prober_share") > 0,
                         "the blocked member's share to record the disagreement")  # fmt: skip
        assert group.healthy() == count  # nothing turned Unhealthy on one vantage
        name = disagreements()[0]
        condition = next(
            c
            for c in k8s.get_registration(namespace, name)["status"]["conditions"]
            if c["type"] == "VantageDisagreement"
        )
        assert "saw it pass" in condition["message"] and "until 2 members agree" in condition["message"]
        events = k8s.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        assert "VantageDisagreement" in {e.reason for e in events.items}

        # The targets really fail: two members see it, and every registration turns Unhealthy.
        web.close()
        first.wait_until(
            lambda: all((i.get("status") or {}).get("health") == "Unhealthy" for i in group.listed()),
            "every registration to turn Unhealthy once two members agree",
            90,
        )
    finally:
        group.stop()
