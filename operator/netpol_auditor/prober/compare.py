"""Observed vs predicted: judging one probed path, retrying while they disagree, and the mismatch state.

Retries are expectation-aware, as in upstream e2e (kubernetes/kubernetes test/e2e/network/netpol/kubemanager.go,
``probeConnectivity``: the probe is re-run only while the observed connectivity differs from the expected one, for
up to ``defaultPollTimeoutSeconds`` = 10 s), which absorbs the CNI's programming delay. A path whose verdict changed
less than ``settle_seconds`` ago is not judged at all ("too fresh"). Only then is a disagreement a mismatch:
``unexpectedly_allowed`` (a policy is not enforced) or ``unexpectedly_denied`` (traffic the policies allow is
dropped). Results that prove nothing (tool errors, no result, a refusal from a real workload that may simply not
listen) are *inconclusive*, counted apart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from netpol_auditor.engine import DirectionVerdict, PolicyKey, Verdict
from netpol_auditor.model import Direction, NetworkPolicy, PodRef, Protocol
from netpol_auditor.prober.plan import PathKey
from netpol_auditor.prober.script import ProbeResult
from netpol_auditor.selectors import compile_ip_block

__all__ = [
    "FEATURES",
    "Comparator",
    "Judgement",
    "Mismatch",
    "MismatchKind",
    "Outcome",
    "exercised_features",
]

FEATURES = ("ingress", "egress", "named_ports", "end_port", "sctp", "udp", "ipblock_except")


class MismatchKind(StrEnum):
    UNEXPECTEDLY_ALLOWED = "unexpectedly_allowed"
    UNEXPECTEDLY_DENIED = "unexpectedly_denied"


class Outcome(StrEnum):
    MATCH = "match"
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

    @property
    def policy_label(self) -> str:
        return f"{self.policies[0][0]}/{self.policies[0][1]}" if self.policies else ""

    def describe(self) -> str:
        predicted = "denied" if self.kind is MismatchKind.UNEXPECTEDLY_ALLOWED else "allowed"
        by = ", ".join(f"{ns}/{name}" for ns, name in self.policies)
        why = f"policy {by} predicts {predicted}" if by else f"no policy isolates it: predicted {predicted}"
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


def _port_spec(policies: Mapping[PolicyKey, NetworkPolicy], dv: DirectionVerdict) -> set[str]:
    """Special features of the admitting rules of one direction: named port, endPort, ipBlock with except."""
    out: set[str] = set()
    for ref in dv.admitted_by:
        policy = policies.get((ref.namespace, ref.policy))
        if policy is None:
            continue
        rule = policy.rules(ref.direction)[ref.rule]
        if ref.port is not None:
            spec = rule.ports[ref.port]
            if isinstance(spec.port, str):
                out.add("named_ports")
            if spec.end_port is not None:
                out.add("end_port")
        if ref.peer is not None:
            block = rule.peers[ref.peer].ip_block
            if block is not None and block.except_:
                out.add("ipblock_except")
    return out


def _excepted(policies: Mapping[PolicyKey, NetworkPolicy], dv: DirectionVerdict, other_ips: Iterable[str]) -> bool:
    """Whether an ipBlock ``except`` of the isolating policies is what denies: the other side's address is inside
    a rule's cidr but in one of its excepted ranges."""
    ips = tuple(other_ips)
    for key in dv.isolating_policies:
        policy = policies.get(key)
        if policy is None:
            continue
        for rule in policy.rules(dv.direction):
            for peer in rule.peers:
                block = peer.ip_block
                if block is None or not block.except_:
                    continue
                if compile_ip_block(type(block)(block.cidr)).matches_any(ips) and not compile_ip_block(
                    block
                ).matches_any(ips):
                    return True
    return False


def exercised_features(
    verdict: Verdict,
    policies: Mapping[PolicyKey, NetworkPolicy],
    src_node: str,
    dst_node: str,
    src_ips: Iterable[str] = (),
    dst_ips: Iterable[str] = (),
    *,
    failing_only: bool = False,
) -> frozenset[tuple[str, str, str]]:
    """(feature, node, direction) triples a probe of this path exercises. Ingress rules are enforced on the
    destination's node, egress rules on the source's. With ``failing_only``, only what a contradiction of this
    verdict points at: the denying directions when it predicts denied, the admitting rules' special features when
    it predicts allowed. UDP and SCTP paths also exercise their protocol on each isolated side."""
    out: set[tuple[str, str, str]] = set()
    sides = ((verdict.egress, src_node, tuple(dst_ips)), (verdict.ingress, dst_node, tuple(src_ips)))
    proto = {Protocol.UDP: "udp", Protocol.SCTP: "sctp"}.get(verdict.port.protocol)
    for dv, node, other_ips in sides:
        if dv is None or not dv.isolated:
            continue
        base = "ingress" if dv.direction is Direction.INGRESS else "egress"
        special = _port_spec(policies, dv)
        if not dv.allowed and _excepted(policies, dv, other_ips):
            special.add("ipblock_except")
        if failing_only:
            if verdict.allowed:
                picked = special or {base}
            elif dv.allowed:
                continue  # this side admits; the other one denies
            else:
                picked = {base} | (special & {"ipblock_except"})
        else:
            picked = {base} | special
        if proto:
            picked.add(proto)
        out.update((f, node, base) for f in picked)
    return frozenset(out)


@dataclass
class Comparator:
    """Judges observations and keeps the current mismatches (per path), feature and policy confirmations."""

    retry_window_seconds: float = 10.0
    max_attempts: int = 10
    settle_seconds: float = 5.0
    mismatches: dict[PathKey, Mismatch] = field(default_factory=dict)
    _first_disagreement: dict[PathKey, float] = field(default_factory=dict)
    _attempts: dict[PathKey, int] = field(default_factory=lambda: defaultdict(int))
    confirmed_features: dict[tuple[str, str, str], float] = field(default_factory=dict)
    confirmed_policies: dict[PolicyKey, float] = field(default_factory=dict)

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
    ) -> Judgement:
        if changed_at is not None and now - changed_at < self.settle_seconds:
            return Judgement(Outcome.TOO_FRESH, "too_fresh")
        if result is None:
            return Judgement(Outcome.INCONCLUSIVE, "no_result")
        if result is ProbeResult.ERROR:
            return Judgement(Outcome.INCONCLUSIVE, "probe_error")
        if prediction.allowed is None:
            return Judgement(Outcome.INCONCLUSIVE, "not_judged")
        if real_target and result is ProbeResult.REFUSED:
            # a real workload that does not listen refuses too: that proves nothing about the policy
            return Judgement(Outcome.INCONCLUSIVE, "real_target_refused")
        observed = result is ProbeResult.CONNECTED
        src_ips, dst_ips = tuple(src_ips), tuple(dst_ips)
        if observed == prediction.allowed:
            self._first_disagreement.pop(key, None)
            self._attempts.pop(key, None)
            features = exercised_features(prediction, policies, key.src_node, key.dst_node, src_ips, dst_ips)
            confirmed = prediction.deciding_policies()
            for f in features:
                self.confirmed_features[f] = now
            for p in confirmed:
                self.confirmed_policies[p] = now
            resolved = self.mismatches.pop(key, None)
            return Judgement(Outcome.MATCH, resolved=resolved, features=features, policies=confirmed)
        first = self._first_disagreement.setdefault(key, now)
        self._attempts[key] += 1
        if key not in self.mismatches and (
            now - first < self.retry_window_seconds and self._attempts[key] < self.max_attempts
        ):
            return Judgement(Outcome.RETRY, "observed differs from predicted; re-probing")
        kind = MismatchKind.UNEXPECTEDLY_DENIED if prediction.allowed else MismatchKind.UNEXPECTEDLY_ALLOWED
        features = exercised_features(
            prediction, policies, key.src_node, key.dst_node, src_ips, dst_ips, failing_only=True
        )
        previous = self.mismatches.get(key)
        mismatch = Mismatch(
            key, kind, source, destination, result, prediction.deciding_policies(), features,
            previous.detected_at if previous is not None and previous.kind is kind else now,
        )
        self.mismatches[key] = mismatch
        return Judgement(Outcome.MISMATCH, mismatch=mismatch, new=previous is None or previous.kind is not kind)

    def forget(self, keys: Iterable[PathKey]) -> list[Mismatch]:
        """Drop state of paths that no longer exist (their pods or policies are gone); returns the mismatches
        that disappear with them."""
        gone = []
        for key in keys:
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

    def feature_enforced(self) -> dict[tuple[str, str], int]:
        """Per (feature, node): 0 when the CNI does not enforce it there, 1 when probes confirmed it; absent until
        exercised.

        A UDP or SCTP mismatch blames its protocol only where TCP works in the same direction on that node (if TCP
        fails too, the direction is what is broken). A special feature (named ports, endPort, ipBlock except, a
        protocol) exercised only through a direction the CNI does not enforce on that node is not enforced either.
        """
        blamed: set[tuple[str, str]] = set()
        tcp_bases = {
            (f, node)
            for m in self.mismatches.values()
            if m.key.port.protocol is Protocol.TCP
            for f, node, d in m.features
            if f == d
        }
        for m in self.mismatches.values():
            tcp = m.key.port.protocol is Protocol.TCP
            for f, node, d in m.features:
                if f in ("udp", "sctp"):
                    if (d, node) not in tcp_bases:
                        blamed.add((f, node))
                elif tcp or (f != d) or (d, node) in tcp_bases:
                    blamed.add((f, node))
        bad_bases = {(f, node) for f, node in blamed if f in ("ingress", "egress")}
        out: dict[tuple[str, str], int] = {}
        for f, node, d in self.confirmed_features:
            if f != d and (d, node) in bad_bases:
                out.setdefault((f, node), 0)
            else:
                out[(f, node)] = 1
        for b in blamed:
            out[b] = 0
        return out
