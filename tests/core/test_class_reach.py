"""`class_reach` (allowed destinations per source class as bit sets, read from the rules' side) says what the
pair-by-pair evaluators say: the index's class verdicts (allowed and deciding policies) and the engine's pod-by-pod
reference (`engine.Snapshot`), on random clusters of the property tests' universe (selectors, named ports, endPort,
ipBlock with except). Cluster policies are left out: with any, ``analyze`` does not use `class_reach`."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from test_index_properties import PORTS, key_of, ns_dict_st, parsed, pod_dict_st, policy_dict_st

from netpol_auditor.class_reach import ClassReach
from netpol_auditor.engine import Snapshot
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import KubeObject
from netpol_auditor.model import Namespace, ObjectKind

#: Pods, namespaces and NetworkPolicies of the property tests' universe (no cluster policies).
object_st = st.one_of(pod_dict_st(), pod_dict_st(), ns_dict_st, policy_dict_st(), policy_dict_st())


def _state(objects: list[dict[str, Any]]) -> list[KubeObject]:
    state: dict[tuple[ObjectKind, str | None, str], KubeObject] = {}
    for raw in objects:
        obj = parsed(raw)
        state[key_of(obj)] = obj
    return list(state.values())


@given(st.lists(object_st, min_size=3, max_size=24))
def test_class_bits_equal_class_verdicts(objects: list[dict[str, Any]]) -> None:
    index = ReachabilityIndex.from_objects(_state(objects))
    view = index.view()
    labels = {ns.name: ns.labels for ns in view.namespace_objects}
    records = view.class_records
    bit = {c.id: 1 << i for i, c in enumerate(records)}
    reach = ClassReach(records, lambda name: labels.get(name) or Namespace(name).labels, bit)
    for s in records:
        for port in PORTS:
            expected = sum(bit[d.id] for d in records if index.class_allowed(s.id, d.id, port))
            assert reach.allowed(s, port) == expected, (s.id, port)
            for d in records:
                verdict = index.class_verdict(s.id, d.id, port)
                assert reach.verdict(s, d, port) == (verdict.allowed, verdict.deciding_policies()), (s.id, d.id, port)


@given(st.lists(object_st, min_size=3, max_size=24))
def test_pod_bits_equal_reference_verdicts(objects: list[dict[str, Any]]) -> None:
    """One bit per pod (as ``analyze`` sets one per column), against the pod-by-pod reference evaluator."""
    state = _state(objects)
    index = ReachabilityIndex.from_objects(state)
    snap = Snapshot.from_objects(state)
    view = index.view()
    labels = {ns.name: ns.labels for ns in view.namespace_objects}
    pods = index.endpoints()
    masks: dict[str, int] = {}
    for j, ref in enumerate(pods):
        cls = index.class_of(ref)
        assert cls is not None
        masks[cls.id] = masks.get(cls.id, 0) | 1 << j
    records = {c.id: c for c in view.class_records}
    reach = ClassReach(records.values(), lambda name: labels.get(name) or Namespace(name).labels, masks)
    for (_, s), (j, d) in itertools.permutations(enumerate(pods), 2):
        cls = index.class_of(s)
        assert cls is not None
        for port in PORTS:
            got = bool(reach.allowed(records[cls.id], port) >> j & 1)
            assert got == snap.verdict(s, d, port).allowed, (s, d, port)
