"""Probe and responder pod manifests: every safety property of the issue, checked on the manifest itself.

The same properties are checked against a real API server (restricted Pod Security admission, garbage collection,
EndpointSlices) in test_prober_cluster.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from netpol_auditor.model import ContainerPort, Labels, PortProtocol, Protocol
from netpol_auditor.prober.plan import ProbeGroup
from netpol_auditor.prober.podspec import (
    READINESS_GATE,
    RUN_LABEL,
    RunOwner,
    probe_pod,
    probe_run_object,
    responder_pod,
)
from netpol_auditor.prober.script import ScriptTarget, probe_script

OWNER = RunOwner(name="netpol-auditor-abcd1234", uid="0000-1111", run_id="abcd1234")
API = ProbeGroup(
    id="g1",
    namespace="shop",
    labels=Labels({"tier": "api"}),
    container_ports=(ContainerPort(9090, Protocol.TCP, "http"), ContainerPort(53, Protocol.UDP, "dns")),
    members_by_node={"node-a": ()},
)


def _probe() -> dict[str, Any]:
    return probe_pod(OWNER, API, "node-a", 1, probe_script([ScriptTarget("10.0.0.1", 80)]), deadline_seconds=60)


def _responder() -> dict[str, Any]:
    return responder_pod(OWNER, API, "node-b", 2, [PortProtocol(9090), PortProtocol(80), PortProtocol(7000)])


@pytest.mark.parametrize("make", [_probe, _responder], ids=["probe", "responder"])
def test_safety_properties(make: Any) -> None:
    pod = make()
    meta, spec = pod["metadata"], pod["spec"]
    # identity: the cloned labels plus ours
    assert meta["labels"]["tier"] == "api"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "netpol-auditor"
    assert meta["labels"][RUN_LABEL] == "abcd1234"
    # a controller ownerReference to the run: never adopted, garbage-collected with the run
    (ref,) = meta["ownerReferences"]
    assert ref["controller"] is True and ref["kind"] == "ProbeRun" and ref["uid"] == "0000-1111"
    # never Ready
    assert spec["readinessGates"] == [{"conditionType": READINESS_GATE}]
    # bounded life
    assert spec["activeDeadlineSeconds"] > 0 and spec["restartPolicy"] == "Never"
    # no credentials, no host network, placed on the real pod's node
    assert spec["automountServiceAccountToken"] is False
    assert spec["hostNetwork"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["nodeName"] in ("node-a", "node-b")
    # restricted Pod Security
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsUser"] != 0
    # small resources
    assert c["resources"]["limits"] == {"cpu": "200m", "memory": "64Mi"}
    assert c["terminationMessagePolicy"] == "File"


def test_responder_declares_named_ports_and_every_probed_port() -> None:
    pod = _responder()
    ports = pod["spec"]["containers"][0]["ports"]
    assert {"containerPort": 9090, "protocol": "TCP", "name": "http"} in ports
    assert {"containerPort": 53, "protocol": "UDP", "name": "dns"} in ports
    assert {"containerPort": 7000, "protocol": "TCP"} in ports
    assert len({(p["containerPort"], p["protocol"]) for p in ports}) == len(ports)
    # below 1024 without a capability: the safe sysctl
    assert pod["spec"]["securityContext"]["sysctls"] == [{"name": "net.ipv4.ip_unprivileged_port_start",
                                                          "value": "0"}]
    script = pod["spec"]["containers"][0]["command"][2]
    assert "TCP-LISTEN:7000," in script and "UDP-RECVFROM:53," in script


def test_probe_pod_without_low_ports_has_no_sysctl() -> None:
    pod = responder_pod(OWNER, API.__class__(**{**API.__dict__, "container_ports": ()}), "n", 3, [PortProtocol(8080)])
    assert "sysctls" not in pod["spec"]["securityContext"]


def test_probe_run_owner_object() -> None:
    run = probe_run_object("abcd1234", "operator-0")
    assert run["kind"] == "ProbeRun" and "namespace" not in run["metadata"]
    assert run["metadata"]["labels"][RUN_LABEL] == "abcd1234"
