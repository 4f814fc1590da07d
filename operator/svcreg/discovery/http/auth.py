"""Who is calling, and which namespaces may they read: TokenReview and SubjectAccessReview.

Callers present their ServiceAccount token; the API server says who it belongs to
(TokenReview, with the configured audiences) and whether that identity may ``list``
serviceregistrations in a namespace (SubjectAccessReview), so ordinary RBAC decides. Answers
are cached briefly, keyed by a hash of the token (the token itself is never stored or
logged): positive reviews at most 60 s and never past the token's own expiry, negative ones a
few seconds. Concurrent identical reviews share one API call, and an entry still in use is refreshed in
the background before it expires, so a steady caller never waits on the API server. While the
API server cannot answer a review (unreachable, failing, a partition), the last answer stands
for up to ``STALE_ON_OUTAGE`` seconds past its lifetime, never past the token's own expiry:
callers already served keep being served, and a right revoked meanwhile lasts at most that
much longer; a caller never reviewed gets 503. What a
token may read is remembered on top (``Authorizer.reader``) only while every review behind it
is fresh, so a caller's cost does not grow with the number of namespaces.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from svcreg.core.refusals import Forbidden, Refusal, TooManyRequests, Unauthenticated, Unavailable
from svcreg.core.slots import KeyedSlots
from svcreg.discovery.http.cache import MISSING, RefreshAheadCache
from svcreg.discovery.http.ratelimit import TokenBuckets
from svcreg.kube.api import KubeApi
from svcreg.kube.errors import KubeApiError, Unreachable
from svcreg.telemetry.metrics import Metrics

logger = logging.getLogger(__name__)

POSITIVE_TTL = 60.0
NEGATIVE_TTL = 5.0
MAX_TOKEN_LENGTH = 16384
# The user extra each ServiceAccount token carries of its own (its JWT id): no RBAC rule reads it.
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"
# Namespaces whose list review a reader was denied are not asked again for this long, and a
# reader's rebuild re-asks at most DENIALS_RECHECKED of those past it (the oldest first): a
# steady caller's reviews do not grow with the namespaces it cannot read.
DENIAL_KEPT = POSITIVE_TTL
DENIALS_RECHECKED = 16
REVIEWS_PER_USER = 16  # SubjectAccessReviews in flight at once for one user, all its tokens together
REVIEW_DEADLINE = 10.0  # seconds; a review that takes longer answers the caller 503
STALE_ON_OUTAGE = 300.0  # seconds past its lifetime a review answers while none can be made


@dataclass(frozen=True)
class Identity:
    username: str
    uid: str
    groups: tuple[str, ...]
    extra: tuple[tuple[str, tuple[str, ...]], ...]

    def __post_init__(self) -> None:
        # Every cached review is keyed by its identity: hash the fields once, not per lookup.
        object.__setattr__(self, "_hash", hash((self.username, self.uid, self.groups, self.extra)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined,no-any-return]

    @property
    def principal(self) -> tuple[str, str, tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
        """Who this is for authorization, the key of its cached SubjectAccessReviews: the
        identity without the token's own credential id, which every token of one
        ServiceAccount carries differently and RBAC never reads, so a caller's fresh tokens
        share one set of reviews instead of each costing a review per namespace."""
        return (
            self.username,
            self.uid,
            self.groups,
            tuple((k, v) for k, v in self.extra if k != CREDENTIAL_ID),
        )

    @property
    def tenant(self) -> str:
        """Whose caller this is, for evidence that must come from several tenants (passive
        health): a ServiceAccount's namespace, or the user itself."""
        parts = self.username.split(":")
        if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
            return f"namespace:{parts[2]}"
        return f"user:{self.username}"

    def subject(self) -> dict[str, Any]:
        return {
            "user": self.username,
            "uid": self.uid,
            "groups": list(self.groups),
            "extra": {k: list(v) for k, v in self.extra},
        }


def token_expiry(authorization: str | None) -> float | None:
    """When the bearer token in ``authorization`` expires (wall-clock seconds), if it says."""
    if not authorization:
        return None
    return _token_expiry(authorization.partition(" ")[2].strip())


def _claims(token: str) -> dict[str, Any]:
    """A JWT's claims, read without verifying ({} when it is not one): never trusted, only
    used to bound caches and budgets."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, TypeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying (only to bound the cache lifetime)."""
    try:
        return float(_claims(token)["exp"])
    except (KeyError, ValueError, TypeError):
        return None


def _bearer(authorization: str | None) -> tuple[str, bytes]:
    """The token from ``Authorization: Bearer`` and the hash the caches key it by; 401 when
    missing or malformed."""
    if not authorization:
        raise Unauthenticated("Unauthenticated", "missing Authorization: Bearer <ServiceAccount token>")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH or " " in token:
        raise Unauthenticated("Unauthenticated", "malformed Authorization header; expected Bearer <token>")
    return token, hashlib.sha256(token.encode()).digest()


async def _review(api: KubeApi, kind: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a review and return its ``status``. A refusal or no answer within
    ``REVIEW_DEADLINE`` is logged (a 403 here means svcreg's own RBAC lacks ``create`` on the
    review resource) and answered to the caller as 503: the caller is not at fault. The API
    server's message names the missing permission and never contains the reviewed token."""
    try:
        answer = await api.call("POST", path, json=body, deadline_seconds=min(REVIEW_DEADLINE, api.deadline))
    except (KubeApiError, Unreachable) as error:
        logger.error("%s failed: %s", kind, error)
        raise Unavailable("ReviewUnavailable", f"{kind} failed; retry") from error
    status: dict[str, Any] = answer.json().get("status") or {}
    return status


def _review_unavailable(error: BaseException) -> bool:
    """Whether a review failed because the API server could not answer (not the caller)."""
    return isinstance(error, Unavailable)


@dataclass(frozen=True)
class _Reader:
    """What one token may read, and until when that answer holds (see Authorizer.reader)."""

    identity: Identity
    readable: frozenset[str] | None
    namespaces_version: int
    fresh_until: float
    reviews: int  # SubjectAccessReview cache lookups the answer stands for


class Authorizer:
    def __init__(
        self,
        api: KubeApi,
        audiences: Iterable[str] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        positive_ttl: float = POSITIVE_TTL,
    ) -> None:
        self.api = api
        self.audiences = tuple(audiences)
        # How long a granted review is trusted: the bound on how late a revocation is noticed.
        self.positive_ttl = positive_ttl
        self._wall = wall
        self._clock = clock
        # A token review's negative answer is the rejection message (a str); an access review's
        # is False. Each kind is bounded apart (see RefreshAheadCache).
        self.tokens = RefreshAheadCache(
            clock,
            metrics,
            "tokenreview",
            is_negative=lambda value: isinstance(value, str),
            stale_for=STALE_ON_OUTAGE,
            unavailable=_review_unavailable,
        )
        self.reviews = RefreshAheadCache(
            clock,
            metrics,
            "subjectaccessreview",
            is_negative=lambda value: value is False,
            stale_for=STALE_ON_OUTAGE,
            unavailable=_review_unavailable,
        )
        self._readers: dict[bytes, _Reader] = {}
        # Rejected tokens per client address and the subject the token claims: 20 a second,
        # bursts of 100. A flood of bogus tokens spends its own bucket; an honest caller behind
        # the same address (a node, a gateway) presents a token of another subject, or one
        # already reviewed, and is never refused for it.
        self.review_budget = TokenBuckets(rate=20.0, burst=100.0, clock=clock)
        # Per principal: the namespaces its list review was denied in, and when each was asked.
        self._denials: collections.OrderedDict[Any, dict[str, float]] = collections.OrderedDict()
        self._user_reviews = KeyedSlots(REVIEWS_PER_USER)

    async def identify(self, authorization: str | None, client: str | None = None) -> Identity:
        """The caller's identity from ``Authorization: Bearer``; Unauthenticated otherwise, and
        429 when ``client`` (its address) has spent its budget of reviews of unknown tokens."""
        return await self._identity(*_bearer(authorization), client)

    async def reader(
        self,
        authorization: str | None,
        namespaces: Collection[str],
        namespaces_version: int,
        client: str | None = None,
        admit: Callable[[Identity], None] | None = None,
    ) -> tuple[Identity, frozenset[str] | None]:
        """``identify``, ``admit`` (the caller's rate: it may refuse), then ``readable``,
        remembered per token while every grant behind the answer is fresh.

        The answer is kept until the earliest refresh point (or expiry) of the token's review
        and the grants it was built from, and only while the set of namespaces is the one it
        was worked out over (``namespaces_version``). So no grant is served past its lifetime,
        their refresh-ahead still starts on time, and a steady caller costs one hash and one
        lookup per request however many namespaces it may read. Denials do not shorten it (see
        ``readable``). ``admit`` runs before any access review, so a caller over its rate costs
        none.
        """
        token, key = _bearer(authorization)
        remembered = self._remembered(key, namespaces_version)
        if remembered is not None:
            if admit is not None:
                admit(remembered[0])
            return remembered
        identity = await self._identity(token, key, client)
        if admit is not None:
            admit(identity)
        readable = await self.readable(identity, namespaces)
        consulted = [_access(identity, "list", "")] if readable is None else []
        if readable is not None:
            consulted += [_access(identity, "list", namespace) for namespace in readable]
        fresh_until = min([self.tokens.fresh_until(key), *(self.reviews.fresh_until(k) for k in consulted)])
        if len(self._readers) >= 50_000:
            del self._readers[next(iter(self._readers))]  # the oldest; only good tokens are here
        # The memo stands for the cluster-wide lookup and one per namespace, denied ones included.
        lookups = 1 + (len(namespaces) if readable is not None else 0)
        self._readers[key] = _Reader(identity, readable, namespaces_version, fresh_until, lookups)
        return identity, readable

    def remembered_reader(
        self, authorization: str | None, namespaces_version: int
    ) -> tuple[Identity, frozenset[str] | None] | None:
        """What ``reader`` would answer from its memo, without any review; None when it would
        have to look (an unknown, malformed or missing token, or a memo past its freshness)."""
        try:
            _, key = _bearer(authorization)
        except Refusal:
            return None
        return self._remembered(key, namespaces_version)

    def remembered_lister(self, authorization: str | None, namespace: str) -> Identity | None:
        """The caller, when its cached reviews say it may list registrations in ``namespace``
        (what ``identify`` then ``require`` would find, without looking); None when either
        would have to look, or refuses."""
        try:
            token, key = _bearer(authorization)
        except Refusal:
            return None
        identity = self.tokens.peek(key, self._review_token, token)
        if not isinstance(identity, Identity):
            return None  # MISSING, or a rejection message
        if (
            self.reviews.peek(
                _access(identity, "list", namespace), self._review_access, identity, "list", namespace, None
            )
            is not True
        ):
            return None
        return identity

    def _remembered(
        self, key: bytes, namespaces_version: int
    ) -> tuple[Identity, frozenset[str] | None] | None:
        memo = self._readers.get(key)
        if (
            memo is not None
            and memo.namespaces_version == namespaces_version
            and self._clock() < memo.fresh_until
        ):
            self.tokens.count_hits(1)
            self.reviews.count_hits(memo.reviews)
            return memo.identity, memo.readable
        return None

    async def _identity(self, token: str, key: bytes, client: str | None = None) -> Identity:
        result: Identity | str = self.tokens.peek(key, self._review_token, token)
        if result is MISSING:
            # A rejected token costs a review through the shared API connection pool: each
            # address may cost a bounded number of those (failures spend its budget, good tokens
            # never do), so a flood of bogus tokens cannot crowd out everyone's reviews.
            budget = (client, claimed_subject(token))
            wait = self.review_budget.wait(budget) if client is not None else 0.0
            if wait:
                raise TooManyRequests(
                    "TooManyRejectedTokens",
                    "too many rejected tokens from this address",
                    retry_after=wait,
                )
            try:
                result = await self.tokens.get(key, self._review_token, token)
            except Refusal as error:
                # No review can be made and none is kept (a review kept through an outage never
                # outlives its token): an expired token is still the caller's problem, a 401.
                expiry = _token_expiry(token)
                if isinstance(error, Unavailable) and expiry is not None and expiry <= self._wall():
                    raise Unauthenticated("Unauthenticated", "token rejected: expired") from None
                raise
            if isinstance(result, str) and client is not None:
                self.review_budget.take(budget)
        if isinstance(result, str):
            raise Unauthenticated("Unauthenticated", result)
        return result

    async def _review_token(self, token: str) -> tuple[Identity | str, float] | tuple[Identity, float, float]:
        spec: dict[str, Any] = {"token": token}
        if self.audiences:
            spec["audiences"] = list(self.audiences)
        status = await _review(
            self.api,
            "TokenReview",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
        )
        if not status.get("authenticated"):
            # The API server's reason may name the audience problem; it never contains the token.
            reason = str(status.get("error") or "token not accepted")[:300]
            return f"token rejected: {reason}", NEGATIVE_TTL
        if self.audiences and not set(self.audiences) & set(status.get("audiences") or ()):
            # An authenticator that ignores the requested audiences must not let a token meant
            # for another service through.
            return "token rejected: not issued for this audience", NEGATIVE_TTL
        user = status.get("user") or {}
        identity = Identity(
            username=str(user.get("username", "")),
            uid=str(user.get("uid", "")),
            groups=tuple(user.get("groups") or ()),
            extra=tuple(sorted((k, tuple(v)) for k, v in (user.get("extra") or {}).items())),
        )
        ttl = self.positive_ttl
        expiry = _token_expiry(token)
        if expiry is None:
            return identity, ttl
        # Neither fresh nor kept through an outage past the token's own expiry.
        left = max(0.0, expiry - self._wall())
        return identity, min(ttl, left), left

    async def allowed(self, identity: Identity, verb: str, namespace: str, name: str | None = None) -> bool:
        """Whether RBAC lets ``identity`` do ``verb`` on serviceregistrations in ``namespace``
        ("" asks cluster-wide)."""
        key = _access(identity, verb, namespace, name)
        allowed: bool = self.reviews.peek(key, self._review_access, identity, verb, namespace, name)
        if allowed is MISSING:
            async with self._user_reviews.hold(identity.username):
                allowed = await self.reviews.get(key, self._review_access, identity, verb, namespace, name)
        return allowed

    async def require(self, identity: Identity, verb: str, namespace: str, name: str | None = None) -> None:
        """``allowed``, or Forbidden saying who may not do what where."""
        if not await self.allowed(identity, verb, namespace, name):
            raise Forbidden(
                "Forbidden", f"{identity.username} may not {verb} serviceregistrations in {namespace}"
            )

    async def _review_access(
        self, identity: Identity, verb: str, namespace: str, name: str | None
    ) -> tuple[bool, float]:
        attributes: dict[str, Any] = {"group": "svcreg.io", "resource": "serviceregistrations", "verb": verb}
        if namespace:
            attributes["namespace"] = namespace
        if name:
            attributes["name"] = name
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {**identity.subject(), "resourceAttributes": attributes},
        }
        what = f"SubjectAccessReview ({verb} in {namespace or 'every namespace'})"
        status = await _review(self.api, what, "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)
        allowed = bool(status.get("allowed"))
        return allowed, self.positive_ttl if allowed else NEGATIVE_TTL

    async def readable(self, identity: Identity, namespaces: Iterable[str]) -> frozenset[str] | None:
        """Namespaces among ``namespaces`` the caller may list registrations in; None means all
        (a cluster-wide grant).

        Cached answers are read synchronously; only namespaces without one are reviewed, at most
        ``REVIEWS_PER_USER`` at a time for one user whatever its tokens. A namespace denied
        within ``DENIAL_KEPT`` is not asked again; of those denied longer ago, at most
        ``DENIALS_RECHECKED`` are asked again per call (the oldest first) and the others stay
        denied. So a caller's reviews do not grow with the namespaces it may not read, and a
        grant in one of them is noticed within ``DENIAL_KEPT`` plus one call per
        ``DENIALS_RECHECKED`` denied namespaces (a query naming the namespace asks at once).
        """
        if await self.allowed(identity, "list", ""):
            return None
        now = self._clock()
        denied = self._denied(identity)
        readable: set[str] = set()
        unknown: list[str] = []
        stale: list[tuple[float, str]] = []
        for namespace in namespaces:
            found = self.reviews.peek(
                _access(identity, "list", namespace), self._review_access, identity, "list", namespace, None
            )
            if found is MISSING:
                asked = denied.get(namespace)
                if asked is None:
                    unknown.append(namespace)
                elif now - asked >= DENIAL_KEPT:
                    stale.append((asked, namespace))
            elif found:
                readable.add(namespace)
            else:
                denied[namespace] = denied.get(namespace, now)
        unknown += [namespace for _, namespace in sorted(stale)[:DENIALS_RECHECKED]]
        if unknown:
            answers = await asyncio.gather(*(self.allowed(identity, "list", ns) for ns in unknown))
            for namespace, ok in zip(unknown, answers, strict=True):
                if ok:
                    readable.add(namespace)
                    denied.pop(namespace, None)
                else:
                    denied[namespace] = self._clock()
        return frozenset(readable)

    def _denied(self, identity: Identity) -> dict[str, float]:
        """The namespaces ``identity`` was denied in (most recently used principals kept)."""
        principal = identity.principal
        denied = self._denials.pop(principal, None)
        if denied is None:
            denied = {}
        self._denials[principal] = denied
        while len(self._denials) > 10_000:
            self._denials.popitem(last=False)
        return denied


def _access(identity: Identity, verb: str, namespace: str, name: str | None = None) -> tuple[Any, ...]:
    """The key of one SubjectAccessReview in the cache: by principal, not by token."""
    return identity.principal, verb, namespace, name


def claimed_subject(token: str) -> str | None:
    """The ``sub`` a JWT claims, unverified (at most 256 characters), or None: only to keep one
    subject's rejected tokens from spending another's review budget."""
    subject = _claims(token).get("sub")
    return subject[:256] if isinstance(subject, str) else None
