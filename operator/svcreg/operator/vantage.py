"""Multi-vantage quorum: a failure counts only when enough members of the prober group see it.

With ``healthCheck.quorum`` N > 1, the owner of a registration that is about to turn an
instance Unhealthy first asks N-1 other members (the next ones in the key's rendezvous order)
to probe it at once, over HTTP between members, authenticated by the members' shared
ServiceAccount. The failure counts when N members (the owner included) saw it; otherwise the
owner keeps the instance's state, records a ``VantageDisagreement`` condition naming who saw
what, and asks again next round. Nothing goes through the API server in steady state. The
quorum is capped at the members that answer: a lone member, or one whose fellow members cannot be
reached, decides alone (its own network is the partition guard's concern), so a failure is
never hidden because no one else could be asked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from svcreg.core.keys import Key
from svcreg.kube.api import KubeApi
from svcreg.members.client import MemberClient, MemberUnreachable
from svcreg.operator.membership import Member, Membership

logger = logging.getLogger(__name__)

PATH = "/internal/v1/vantage"


@dataclass(frozen=True)
class Decision:
    held: frozenset[str]  # instances whose failure is not confirmed
    message: str  # why, for the VantageDisagreement condition ("" when nothing is held)


def decide(
    quorum: int, me: str, failing: Mapping[str, str], answers: Mapping[str, Mapping[str, bool] | None]
) -> Decision:
    """Which of ``failing`` (instance -> the reason this member saw) the quorum confirms.
    ``answers`` maps each member asked to what its probe saw (instance -> passed), or None when
    it did not answer: a member that did not answer is not counted either way."""
    answered = [m for m, seen in answers.items() if seen is not None]
    needed = min(quorum, 1 + len(answered))
    held, notes = set(), []
    for iid, reason in sorted(failing.items()):
        saw_fail = [m for m, seen in answers.items() if seen is not None and seen.get(iid) is False]
        if 1 + len(saw_fail) >= needed:
            continue
        held.add(iid)
        passed = sorted(m for m, seen in answers.items() if seen is not None and seen.get(iid) is True)
        notes.append(f"{me} saw {iid or 'the endpoint'} fail ({reason}); {', '.join(passed)} saw it pass")
    if not held:
        return Decision(frozenset(), "")
    return Decision(frozenset(held), "; ".join(notes) + f": not Unhealthy until {needed} members agree")


class Vantages(Protocol):
    def vantages(self, key: Key, count: int) -> list[Member]: ...

    async def ask(self, member: Member, key: Key) -> dict[str, bool] | None: ...


class VantageClient:
    """Asks other members to probe a registration now, as this member's ServiceAccount."""

    def __init__(
        self,
        membership: Membership,
        api: KubeApi,
        ca_file: str | None = None,
        server_name: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.membership, self.api = membership, api
        self.client = MemberClient(ca_file=ca_file, server_name=server_name, timeout=timeout, limit=50)

    def vantages(self, key: Key, count: int) -> list[Member]:
        return self.membership.vantages(key, count)

    async def ask(self, member: Member, key: Key) -> dict[str, bool] | None:
        authorization = self.api.authorization()
        if not authorization or not member.url:
            return None
        url = f"{member.url.rstrip('/')}{PATH}/{key[0]}/{key[1]}"
        try:
            answer = await self.client.call("POST", url, headers={"Authorization": authorization})
        except MemberUnreachable as error:
            logger.info("vantage %s not reached for %s/%s: %s", member.identity, *key, error.reason)
            return None
        if answer.status != 200:
            logger.info("vantage %s answered %d for %s/%s", member.identity, answer.status, *key)
            return None
        body = answer.json()
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(instances, dict):
            return None
        return {str(k): bool(v) for k, v in instances.items()}

    async def close(self) -> None:
        await self.client.close()
