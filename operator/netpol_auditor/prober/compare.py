"""Observed vs predicted: judging one probed path, retrying while they disagree, and the mismatch state.

Retries are expectation-aware, as in upstream e2e (kubernetes/kubernetes test/e2e/network/netpol/kubemanager.go,
``probeConnectivity``: the probe is re-run only while the observed connectivity differs from the expected one, for
up to ``defaultPollTimeoutSeconds`` = 10 s), which absorbs the CNI's programming delay. A path whose verdict changed
less than ``settle_seconds`` ago is not judged at all ("too fresh"). Only then is a disagreement a mismatch:
``unexpectedly_allowed`` (a policy is not enforced) or ``unexpectedly_denied`` (traffic the policies allow is
dropped). Results that prove nothing (tool errors, no result, a refusal from a real workload that may simply not
listen) are *inconclusive*, counted apart.

A CNI that programs rules late looks broken to a probe made too early, and every probe pod is a fresh pod. So a
disagreeing path is probed again once the retry window has passed since its pod started (the same pod connects
again; prober/script.py), or by a new pod that waits that long: agreeing then, the path converged within the window
and is a plain match. Before a disagreement that outlived the window becomes a mismatch, the path is probed once more
``late_seconds`` after its pod started (its own rules, and the responder's, have had that long to land). If that
probe agrees, the path is *late* (reason ``programming_late``): enforced, but slower than the window. If it still
disagrees, or waiting is off (``late_seconds`` 0), it is a mismatch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from netpol_auditor.cluster_policy import ClusterPolicyKind
from netpol_auditor.engine import PolicyKey, Verdict
from netpol_auditor.model import NetworkPolicy, PodRef, Protocol
from netpol_auditor.prober.features import CLUSTER_FEATURES, FEATURES, deciding_cluster_rule, exercised_features
from netpol_auditor.prober.plan import PathKey
from netpol_auditor.prober.script import ProbeResult

__all__ = [
    "FEATURES",
    "Comparator",
    "Judgement",
    "Mismatch",
    "MismatchKind",
    "Outcome",
    "exercised_features",
    "is_cluster_policy_key",
]

_CLUSTER_KINDS = frozenset(k.value for k in ClusterPolicyKind)


def is_cluster_policy_key(key: PolicyKey) -> bool:
    """Whether a policy key is a cluster policy's (kind, name) rather than a NetworkPolicy's (namespace, name);
    kinds are never valid namespace names."""
    return key[0] in _CLUSTER_KINDS

_CLUSTER_FEATURE_NAMES = frozenset(CLUSTER_FEATURES.values())


class MismatchKind(StrEnum):
    UNEXPECTEDLY_ALLOWED = "unexpectedly_allowed"
    UNEXPECTEDLY_DENIED = "unexpectedly_denied"


class Outcome(StrEnum):
    MATCH = "match"
    LATE = "late"
    MISMATCH = "mismatch"
    RETRY = "retry"
    INCONCLUSIVE = "inconclusive"
    TOO_FRESH = "too_fresh"


@dataclass(frozen=True)
class Mismatch:
    """A path whose observation contradicts the policies, with the concrete example pair."""

    key: PathKey
    kind: MismatchKind
    source: PodRef  # the real pods the probe stood in for
    destination: PodRef
    result: ProbeResult
    policies: tuple[PolicyKey, ...]  # those that predict the opposite of what happened
    features: frozenset[tuple[str, str, str]]  # (feature, node, direction) this path's failure points at
    detected_at: float
    cluster_rules: tuple[str, ...] = ()  # the cluster policy rules that decide, in words (tiers.ClusterRuleRef)

    @property
    def policy_label(self) -> str:
        """``namespace/name`` of a NetworkPolicy, ``Kind/name`` of a cluster policy (the first that decides)."""
        return f"{self.policies[0][0]}/{self.policies[0][1]}" if self.policies else ""

    def describe(self) -> str:
        predicted = "denied" if self.kind is MismatchKind.UNEXPECTEDLY_ALLOWED else "allowed"
        by = ", ".join(f"{k} {name}" if is_cluster_policy_key((k, name)) else f"{k}/{name}"
                       for k, name in self.policies)
        why = f"policy {by} predicts {predicted}" if by else f"no policy isolates it: predicted {predicted}"
        if self.cluster_rules:
            why += f" (decided by {'; '.join(self.cluster_rules)})"
        return (
            f"{self.source} → {self.destination}:{self.key.port} {self.result.value.replace('_', ' ')}; {why} "
            f"(probed from node {self.key.src_node} to node {self.key.dst_node})"
        )


@dataclass(frozen=True)
class Judgement:
    outcome: Outcome
    reason: str = ""  # for inconclusive / too fresh
    mismatch: Mismatch | None = None  # set for MISMATCH
    new: bool = False  # a mismatch not current before
    resolved: Mismatch | None = None  # a current mismatch that this match heals
    features: frozenset[tuple[str, str, str]] = frozenset()  # (feature, node, direction) a MATCH confirms
    policies: tuple[PolicyKey, ...] = ()  # policies a MATCH confirms
    wait: float = 0.0  # for RETRY: how long the next probe pod of this path waits before connecting


@dataclass
class Comparator:
    """Judges observations and keeps the current mismatches (per path), feature and policy confirmations."""

    retry_window_seconds: float = 10.0
    max_attempts: int = 10
    late_seconds: float = 20.0
    settle_seconds: float = 5.0
    mismatches: dict[PathKey, Mismatch] = field(default_factory=dict)
    _first_disagreement: dict[PathKey, float] = field(default_factory=dict)
    _attempts: dict[PathKey, int] = field(default_factory=lambda: defaultdict(int))
    _late_check: set[PathKey] = field(default_factory=set)  # re-probed after waiting `late_seconds`
    confirmed_features: dict[tuple[str, str, str], float] = field(default_factory=dict)
    confirmed_policies: dict[PolicyKey, float] = field(default_factory=dict)
    #: (feature, node, direction, the mismatch kind it would cause if broken) -> paths whose latest observation
    #: agreed and proves it works
    _proofs: dict[tuple[tuple[str, str, str], MismatchKind], set[PathKey]] = field(
        default_factory=lambda: defaultdict(set))
    _proved_by: dict[PathKey, tuple[tuple[tuple[str, str, str], MismatchKind], ...]] = field(default_factory=dict)

    def judge(
        self,
        key: PathKey,
        prediction: Verdict,
        result: ProbeResult | None,
        now: float,
        *,
        source: PodRef,
        destination: PodRef,
        policies: Mapping[PolicyKey, NetworkPolicy],
        changed_at: float | None = None,
        real_target: bool = False,
        src_ips: Iterable[str] = (),
        dst_ips: Iterable[str] = (),
        waited: float = 0.0,
    ) -> Judgement:
        """``waited``: how long the probe pod waited before connecting."""
        if changed_at is not None and now - changed_at < self.settle_seconds:
            return Judgement(Outcome.TOO_FRESH, "too_fresh")
        if result is None:
            return Judgement(Outcome.INCONCLUSIVE, "no_result")
        if result is ProbeResult.ERROR:
            return Judgement(Outcome.INCONCLUSIVE, "probe_error")
        if prediction.allowed is None:
            return Judgement(Outcome.INCONCLUSIVE, "out_of_model" if prediction.out_of_model else "not_judged")
        if real_target and result is ProbeResult.REFUSED:
            # a real workload that does not listen refuses too: that proves nothing about the policy
            return Judgement(Outcome.INCONCLUSIVE, "real_target_refused")
        observed = result is ProbeResult.CONNECTED
        src_ips, dst_ips = tuple(src_ips), tuple(dst_ips)
        if observed == prediction.allowed:
            late = key in self._late_check and waited >= self.late_seconds
            self._late_check.discard(key)
            self._first_disagreement.pop(key, None)
            self._attempts.pop(key, None)
            shown = exercised_features(prediction, policies, key.src_node, key.dst_node, src_ips, dst_ips,
                                       proven=True)
            # a cluster policy kind is confirmed only where ignoring it would have shown (features.py)
            features = frozenset(f for f in exercised_features(prediction, policies, key.src_node, key.dst_node,
                                                               src_ips, dst_ips)
                                 if f[0] not in _CLUSTER_FEATURE_NAMES or f in shown)
            confirmed = prediction.deciding_policies()
            for f in features:
                self.confirmed_features[f] = now
            for p in confirmed:
                self.confirmed_policies[p] = now
            would_be = MismatchKind.UNEXPECTEDLY_DENIED if prediction.allowed else MismatchKind.UNEXPECTEDLY_ALLOWED
            self._unprove(key)
            proofs = tuple((f, would_be) for f in shown)
            for proof in proofs:
                self._proofs[proof].add(key)
            self._proved_by[key] = proofs
            resolved = self.mismatches.pop(key, None)
            if late:
                return Judgement(Outcome.LATE, "programming_late", resolved=resolved, features=features,
                                 policies=confirmed)
            return Judgement(Outcome.MATCH, resolved=resolved, features=features, policies=confirmed)
        first = self._first_disagreement.setdefault(key, now)
        self._attempts[key] += 1
        self._unprove(key)
        # how long the rules have had to land: since the first disagreement (re-probed by new pods), or since this
        # pod started (a pod that re-checks in place)
        landing = max(waited, now - first)
        if key not in self.mismatches and (
            landing < self.retry_window_seconds and self._attempts[key] < self.max_attempts
        ):
            # a fresh probe pod sees the rules as they are a moment after it started: the re-probe waits out the
            # window first, so a CNI that programs within it is never flagged
            wait = self.retry_window_seconds if waited < self.retry_window_seconds else 0.0
            return Judgement(Outcome.RETRY, "observed differs from predicted; re-probing", wait=wait)
        if key not in self.mismatches and self.late_seconds > 0 and waited < self.late_seconds:
            self._late_check.add(key)
            return Judgement(Outcome.RETRY, "still differs; re-probing after the rules had time to land",
                             wait=self.late_seconds)
        self._late_check.discard(key)
        kind = MismatchKind.UNEXPECTEDLY_DENIED if prediction.allowed else MismatchKind.UNEXPECTEDLY_ALLOWED
        features = exercised_features(
            prediction, policies, key.src_node, key.dst_node, src_ips, dst_ips, failing_only=True
        )
        previous = self.mismatches.get(key)
        rules = tuple(str(r) for dv in (prediction.egress, prediction.ingress)
                      if dv is not None and (prediction.allowed or not dv.allowed)
                      and (r := deciding_cluster_rule(dv)) is not None)
        mismatch = Mismatch(
            key, kind, source, destination, result, prediction.deciding_policies(), features,
            previous.detected_at if previous is not None and previous.kind is kind else now, rules,
        )
        self.mismatches[key] = mismatch
        return Judgement(Outcome.MISMATCH, mismatch=mismatch, new=previous is None or previous.kind is not kind)

    def restart(self, keys: Iterable[PathKey]) -> None:
        """Forget the disagreement history of paths whose prediction (or what decides it) changed, or that left
        the plan: a disagreement with the old prediction says nothing of the new one. Current mismatches stay
        until their paths are judged again or are gone (`forget`)."""
        for key in keys:
            self._late_check.discard(key)
            self._first_disagreement.pop(key, None)
            self._attempts.pop(key, None)

    def forget(self, keys: Iterable[PathKey]) -> list[Mismatch]:
        """Drop state of paths that no longer exist (their pods or policies are gone); returns the mismatches
        that disappear with them."""
        gone = []
        for key in keys:
            self._unprove(key)
            self._late_check.discard(key)
            self._first_disagreement.pop(key, None)
            self._attempts.pop(key, None)
            m = self.mismatches.pop(key, None)
            if m is not None:
                gone.append(m)
        return gone

    # -- aggregates for the exporters --------------------------------------------------------------------------

    def policy_enforced(self, known: Iterable[PolicyKey]) -> dict[PolicyKey, int]:
        """Per policy: 0 while a current mismatch implicates it, 1 once a match confirmed it; absent otherwise."""
        known_set = set(known)
        out: dict[PolicyKey, int] = {}
        for p in self.confirmed_policies:
            if p in known_set:
                out[p] = 1
        for m in self.mismatches.values():
            for p in m.policies:
                if p in known_set:
                    out[p] = 0
        return out

    def _unprove(self, key: PathKey) -> None:
        for proof in self._proved_by.pop(key, ()):
            paths = self._proofs.get(proof)
            if paths is not None:
                paths.discard(key)
                if not paths:
                    del self._proofs[proof]

    def _suspects(self, m: Mismatch) -> frozenset[tuple[str, str, str]]:
        """The features a mismatch points at, less those that another path's latest observation proves working
        in the way this mismatch would need them broken (a path is decided by egress on one node and ingress on
        another: the side that works for other paths is not what failed). All of them when each one is proven
        working elsewhere (nothing tells them apart)."""
        left = frozenset(f for f in m.features if (f, m.kind) not in self._proofs)
        return left or m.features

    def feature_enforced(self) -> dict[tuple[str, str], int]:
        """Per (feature, node): 0 when the CNI does not enforce it there, 1 when probes confirmed it; absent until
        exercised.

        A UDP or SCTP mismatch blames its protocol only where TCP works in the same direction on that node (if TCP
        fails too, the direction is what is broken). A special feature (named ports, endPort, ipBlock except, a
        protocol) exercised only through a direction the CNI does not enforce on that node is not enforced either;
        a cluster policy kind stands on its own (its rules are not NetworkPolicy rules of that direction).
        """
        blamed: set[tuple[str, str]] = set()
        suspects = {key: self._suspects(m) for key, m in self.mismatches.items()}
        tcp_bases = {
            (f, node)
            for key, m in self.mismatches.items()
            if m.key.port.protocol is Protocol.TCP
            for f, node, d in suspects[key]
            if f == d
        }
        for key, m in self.mismatches.items():
            tcp = m.key.port.protocol is Protocol.TCP
            for f, node, d in suspects[key]:
                if f in ("udp", "sctp"):
                    if (d, node) not in tcp_bases:
                        blamed.add((f, node))
                elif tcp or (f != d) or (d, node) in tcp_bases:
                    blamed.add((f, node))
        bad_bases = {(f, node) for f, node in blamed if f in ("ingress", "egress")}
        out: dict[tuple[str, str], int] = {}
        for f, node, d in self.confirmed_features:
            if f != d and f not in _CLUSTER_FEATURE_NAMES and (d, node) in bad_bases:
                out.setdefault((f, node), 0)
            else:
                out[(f, node)] = 1
        for b in blamed:
            out[b] = 0
        return out
