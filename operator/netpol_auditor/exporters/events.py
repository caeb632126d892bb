"""Kubernetes Events on notable index changes, rate-limited and deduplicated.

Notable changes (compared between two debounced snapshots of the index):

* a namespace's pods become isolated / partially isolated / unisolated for a direction (involvedObject: Namespace);
* a NetworkPolicy selects no pods (involvedObject: the NetworkPolicy);
* a NetworkPolicy rule's peer selects no pods (involvedObject: the NetworkPolicy).

Events are core/v1 Events as client-go's EventRecorder writes them: for a cluster-scoped involved object (a
Namespace) the Event goes to the ``default`` namespace (client-go tools/record/event.go, makeEvent). Identical
Events (same object, reason and message) are posted once per dedup window; a token bucket caps the rate.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from netpol_auditor.exporters.metrics import Aggregates
from netpol_auditor.index_view import IndexView
from netpol_auditor.model import Direction, NetworkPolicy, NetworkPolicyPeer
from netpol_auditor.selectors import compile_selector

__all__ = ["EventPoster", "IndexFacts", "InvolvedObject", "Notice", "WarningGate", "collect_facts", "detect_notices"]

logger = logging.getLogger(__name__)

COMPONENT = "netpol-auditor"


@dataclass(frozen=True)
class InvolvedObject:
    api_version: str
    kind: str
    namespace: str | None
    name: str
    uid: str = ""


@dataclass(frozen=True)
class Notice:
    """One Event to post."""

    involved: InvolvedObject
    reason: str
    message: str
    type: str = "Normal"  # or "Warning"


@dataclass
class IndexFacts:
    """What the notices are derived from, for one index snapshot."""

    # (namespace, direction) -> "isolated" | "partially isolated" | "unisolated"
    isolation: dict[tuple[str, str], str] = field(default_factory=dict)
    # (namespace, name) -> selected pods
    policy_pods: dict[tuple[str, str], int] = field(default_factory=dict)
    # (namespace, name) -> descriptions of peers that select no pods
    empty_peers: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    namespace_uids: dict[str, str] = field(default_factory=dict)
    policy_uids: dict[tuple[str, str], str] = field(default_factory=dict)


def _isolation_state(isolated: int, unisolated: int) -> str:
    if isolated and not unisolated:
        return "isolated"
    if isolated:
        return "partially isolated"
    return "unisolated"


def _describe_peer(peer: NetworkPolicyPeer) -> str:
    parts = []
    if peer.namespace_selector is not None:
        parts.append(f"namespaceSelector {peer.namespace_selector}")
    if peer.pod_selector is not None:
        parts.append(f"podSelector {peer.pod_selector}")
    return " and ".join(parts)


def _empty_peers(policy: NetworkPolicy, namespaces: dict[str, Any], classes: Sequence[Any]) -> tuple[str, ...]:
    """Peers (not ipBlocks) of *policy* that select no endpoint pod right now."""
    found: list[str] = []
    for direction in (Direction.INGRESS, Direction.EGRESS):
        if not policy.affects(direction):
            continue
        for r, rule in enumerate(policy.rules(direction)):
            for p, peer in enumerate(rule.peers):
                if peer.ip_block is not None:
                    continue
                if peer.namespace_selector is None:
                    chosen = {policy.namespace}
                else:
                    ns_matcher = compile_selector(peer.namespace_selector)
                    chosen = {name for name, labels in namespaces.items() if ns_matcher.matches(labels)}
                pod_matcher = compile_selector(peer.pod_selector) if peer.pod_selector is not None else None
                if not any(c.namespace in chosen and (pod_matcher is None or pod_matcher.matches(c.labels))
                           for c in classes):
                    found.append(f"{direction.value.lower()} rule {r} peer {p} ({_describe_peer(peer)})")
    return tuple(found)


def collect_facts(index: IndexView, aggregates: Aggregates) -> IndexFacts:
    """Gather the facts notices are computed from (cost: policies x peers x equivalence classes; pure: run it in a
    worker thread)."""
    namespaces = {ns.name: ns.labels for ns in index.namespaces()}
    classes = index.class_records
    facts = IndexFacts(
        isolation={k: _isolation_state(*v) for k, v in aggregates.isolation.items()},
        policy_pods=dict(aggregates.policy_pods),
        namespace_uids={ns.name: ns.uid for ns in index.namespaces()},
    )
    for policy in index.policies():
        key = (policy.namespace, policy.name)
        facts.policy_uids[key] = policy.uid
        empty = _empty_peers(policy, namespaces, classes)
        if empty:
            facts.empty_peers[key] = empty
    return facts


def detect_notices(before: IndexFacts | None, after: IndexFacts) -> list[Notice]:
    """Notices for what changed from *before* to *after* (*before* None: the first snapshot, a baseline).

    At the baseline only the standing warnings (policies or peers selecting nothing) are reported.
    """
    notices: list[Notice] = []
    if before is not None:
        for (namespace, direction), state in sorted(after.isolation.items()):
            previous = before.isolation.get((namespace, direction), "unisolated")
            if state == previous:
                continue
            reason = "Namespace" + state.title().replace(" ", "")
            notices.append(Notice(
                InvolvedObject("v1", "Namespace", None, namespace, after.namespace_uids.get(namespace, "")),
                reason,
                f"{direction.capitalize()} isolation of the namespace's pods changed from {previous} to {state}"))
    for key, count in sorted(after.policy_pods.items()):
        was = before.policy_pods.get(key) if before is not None else None
        if count == 0 and was != 0:
            notices.append(Notice(_policy_ref(after, key), "PolicySelectsNoPods",
                                  "the policy's podSelector selects no pods in the namespace", "Warning"))
    for key, peers in sorted(after.empty_peers.items()):
        old = set(before.empty_peers.get(key, ())) if before is not None else set()
        for description in peers:
            if description not in old:
                notices.append(Notice(_policy_ref(after, key), "PolicyPeerSelectsNothing",
                                      f"{description} selects no pods", "Warning"))
    return notices


class WarningGate:
    """Holds back the standing warnings (a policy or a peer selecting nothing) until they have lasted *grace*
    seconds: a policy applied a moment before its pods start is normal, not a warning. Transitions (isolation
    changes) pass at once."""

    STANDING = ("PolicySelectsNoPods", "PolicyPeerSelectsNothing")

    def __init__(self, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._grace = grace
        self._clock = clock
        self._pending: dict[tuple[InvolvedObject, str, str], tuple[float, Notice]] = {}

    def filter(self, notices: Iterable[Notice], facts: IndexFacts) -> list[Notice]:
        """The notices to post now, given the new *notices* and the current *facts*."""
        now = self._clock()
        out: list[Notice] = []
        for notice in notices:
            if notice.reason in self.STANDING and self._grace > 0:
                self._pending.setdefault((notice.involved, notice.reason, notice.message), (now, notice))
            else:
                out.append(notice)
        for key, (since, notice) in list(self._pending.items()):
            if not _still_true(notice, facts):
                del self._pending[key]
            elif now - since >= self._grace:
                del self._pending[key]
                out.append(notice)
        return out

    def next_due(self) -> float | None:
        """Seconds until the earliest held warning is due (None: nothing held)."""
        if not self._pending:
            return None
        return max(0.0, min(since for since, _ in self._pending.values()) + self._grace - self._clock())


def _still_true(notice: Notice, facts: IndexFacts) -> bool:
    key = (notice.involved.namespace or "", notice.involved.name)
    if notice.reason == "PolicySelectsNoPods":
        return facts.policy_pods.get(key) == 0
    if notice.reason == "PolicyPeerSelectsNothing":
        return any(f"{d} selects no pods" == notice.message for d in facts.empty_peers.get(key, ()))
    return True


def _policy_ref(facts: IndexFacts, key: tuple[str, str]) -> InvolvedObject:
    return InvolvedObject("networking.k8s.io/v1", "NetworkPolicy", key[0], key[1], facts.policy_uids.get(key, ""))


class EventPoster:
    """Posts Notices as core/v1 Events, at most *per_minute* a minute, each identical one once per *dedup_seconds*.

    ``admit`` decides (pure, testable with a fake clock); ``run`` drains the queue and posts through the
    kubernetes client (a blocking client, so the calls go to a thread).
    """

    def __init__(self, api_client: Any | None, *, per_minute: int, dedup_seconds: float,
                 clock: Callable[[], float] = time.monotonic, instance: str | None = None) -> None:
        self._api_client = api_client
        self._per_minute = per_minute
        self._dedup_seconds = dedup_seconds
        self._clock = clock
        self._tokens = float(per_minute)
        self._refilled = clock()
        self._posted: dict[tuple[InvolvedObject, str, str], float] = {}
        self._queue: asyncio.Queue[Notice] = asyncio.Queue(maxsize=1000)
        self.instance = instance or os.environ.get("HOSTNAME", "") or COMPONENT
        self.dropped_rate_limited = 0
        self.dropped_duplicates = 0
        self.posted = 0
        self.failed = 0

    def admit(self, notice: Notice) -> bool:
        """Whether *notice* may be posted now (consumes a token and records it when it may)."""
        now = self._clock()
        key = (notice.involved, notice.reason, notice.message)
        last = self._posted.get(key)
        if last is not None and now - last < self._dedup_seconds:
            self.dropped_duplicates += 1
            return False
        self._tokens = min(float(self._per_minute), self._tokens + (now - self._refilled) * self._per_minute / 60.0)
        self._refilled = now
        if self._tokens < 1.0:
            self.dropped_rate_limited += 1
            logger.debug("event rate limit reached; dropping %s %s", notice.reason, notice.involved.name)
            return False
        self._tokens -= 1.0
        self._posted[key] = now
        if len(self._posted) > 10_000:
            self._posted = {k: t for k, t in self._posted.items() if now - t < self._dedup_seconds}
        return True

    def submit(self, notices: Iterable[Notice]) -> list[Notice]:
        """Queue the admitted notices for posting; returns them."""
        admitted = []
        for notice in notices:
            if not self.admit(notice):
                continue
            try:
                self._queue.put_nowait(notice)
            except asyncio.QueueFull:
                self.dropped_rate_limited += 1
                continue
            admitted.append(notice)
        return admitted

    async def run(self, stopped: asyncio.Event) -> None:
        """Post queued notices until *stopped* is set."""
        while not stopped.is_set():
            getter = asyncio.ensure_future(self._queue.get())
            stopper = asyncio.ensure_future(stopped.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if getter not in done:
                getter.cancel()
                break
            await self.post(getter.result())

    async def post(self, notice: Notice) -> None:
        body = self.event_body(notice)
        try:
            await asyncio.to_thread(self._create, body["metadata"]["namespace"], body)
            self.posted += 1
        except Exception as exc:  # an Event is best effort: never let it stop the operator
            self.failed += 1
            logger.warning("could not post Event %s on %s %s: %s", notice.reason, notice.involved.kind,
                           notice.involved.name, exc)

    def _create(self, namespace: str, body: Any) -> None:
        from kubernetes import client

        client.CoreV1Api(self._api_client).create_namespaced_event(namespace, body)

    def event_body(self, notice: Notice) -> dict[str, Any]:
        now = datetime.datetime.now(datetime.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        involved = notice.involved
        namespace = involved.namespace or "default"
        involved_dict: dict[str, Any] = {"apiVersion": involved.api_version, "kind": involved.kind,
                                         "name": involved.name}
        if involved.namespace:
            involved_dict["namespace"] = involved.namespace
        if involved.uid:
            involved_dict["uid"] = involved.uid
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{involved.name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": involved_dict,
            "reason": notice.reason,
            "message": notice.message,
            "type": notice.type,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
