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
    INSTALL_LABEL,
    INSTANCE_LABEL,
    MESH_OPT_OUT_ANNOTATIONS,
    MESH_OPT_OUT_LABELS,
    READINESS_GATE,
    RUN_LABEL,
    PodOptions,
    RunOwner,
    asked_containers,
    clone_conflict,
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
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsUser"] != 0
        # small resources, with a limit/request ratio that common LimitRanges (maxLimitRequestRatio 2) accept
        assert c["resources"] == {"requests": {"cpu": "50m", "memory": "32Mi"},
                                  "limits": {"cpu": "100m", "memory": "64Mi"}}
        assert c["terminationMessagePolicy"] == "File"
    # only on Linux nodes, and a Windows kubelet refuses the pod at once
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"} and spec["os"] == {"name": "linux"}
    # meshes are asked not to inject a sidecar
    assert MESH_OPT_OUT_LABELS.items() <= meta["labels"].items()
    assert MESH_OPT_OUT_ANNOTATIONS.items() <= meta["annotations"].items()
    # whose pod it is: the sweep of another install never touches it
    assert meta["labels"][INSTANCE_LABEL] == "netpol-auditor"


def test_responder_declares_named_ports_and_every_probed_port_in_one_container_per_protocol() -> None:
    pod = _responder()
    by_name = {c["name"]: c for c in pod["spec"]["containers"]}
    assert set(by_name) == {"responder-tcp", "responder-udp"}
    ports = [p for c in by_name.values() for p in c["ports"]]
    assert {"containerPort": 9090, "protocol": "TCP", "name": "http"} in by_name["responder-tcp"]["ports"]
    assert {"containerPort": 53, "protocol": "UDP", "name": "dns"} in by_name["responder-udp"]["ports"]
    assert {"containerPort": 7000, "protocol": "TCP"} in by_name["responder-tcp"]["ports"]
    assert len({(p["containerPort"], p["protocol"]) for p in ports}) == len(ports)
    # below 1024 without a capability: the safe sysctl
    assert pod["spec"]["securityContext"]["sysctls"] == [{"name": "net.ipv4.ip_unprivileged_port_start",
                                                          "value": "0"}]
    tcp, udp = by_name["responder-tcp"]["command"][2], by_name["responder-udp"]["command"][2]
    assert "listen tcp 7000" in tcp and "listen udp 53" in udp and "udp" not in tcp.split("listen()")[0]
    # each container proves its own listeners from inside the pod before the prober aims at it
    check = by_name["responder-tcp"]["readinessProbe"]
    assert check["periodSeconds"] == 1 and "nc -z" in check["exec"]["command"][2]
    assert all(f" {port}" in check["exec"]["command"][2] for port in (80, 7000, 9090))
    assert "UDP:$b:53" in by_name["responder-udp"]["readinessProbe"]["exec"]["command"][2]
    assert asked_containers(pod) == {"responder-tcp", "responder-udp"}


def test_pod_options_reach_every_probe_pod() -> None:
    options = PodOptions(
        image="registry.example/netshoot@sha256:" + "a" * 64,
        node_selector={"pool": "probes"},
        tolerations=({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},),
        labels={"team": "platform"},
        annotations={"owner": "platform"},
        image_pull_secrets=("mirror",),
        priority_class_name="low",
        resources={"requests": {"cpu": "10m"}},
        mesh_opt_out=False,
        instance="np-prod",
        install_id="0123456789ab",
    )
    for pod in (probe_pod(OWNER, API, "n", 1, "true", options),
                responder_pod(OWNER, API, "n", 2, [PortProtocol(8080)], options)):
        meta, spec = pod["metadata"], pod["spec"]
        assert {c["image"] for c in spec["containers"]} == {options.image}
        assert spec["nodeSelector"] == {"pool": "probes"}
        assert spec["tolerations"] == [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
        assert spec["imagePullSecrets"] == [{"name": "mirror"}] and spec["priorityClassName"] == "low"
        assert {c["resources"]["requests"]["cpu"] for c in spec["containers"]} == {"10m"}
        assert meta["labels"]["team"] == "platform" and meta["annotations"]["owner"] == "platform"
        assert meta["labels"][INSTANCE_LABEL] == "np-prod" and meta["labels"][INSTALL_LABEL] == "0123456789ab"
        assert not MESH_OPT_OUT_LABELS.keys() & meta["labels"].keys()
    assert {"team", INSTANCE_LABEL, INSTALL_LABEL, RUN_LABEL} <= options.label_keys()
    assert MESH_OPT_OUT_LABELS.keys() <= PodOptions().label_keys()


def test_without_a_probe_run_the_namespace_is_the_controller() -> None:
    ownerless = RunOwner("", "", "abcd1234")
    pod = probe_pod(ownerless, API, "n", 1, "true", namespace_uid="ns-uid")
    (ref,) = pod["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("Namespace", "shop", "ns-uid", True)
    assert "ownerReferences" not in probe_pod(ownerless, API, "n", 1, "true")["metadata"]


def test_probe_pod_without_low_ports_has_no_sysctl() -> None:
    pod = responder_pod(OWNER, API.__class__(**{**API.__dict__, "container_ports": ()}), "n", 3, [PortProtocol(8080)])
    assert "sysctls" not in pod["spec"]["securityContext"]


def test_probe_run_owner_object() -> None:
    run = probe_run_object("abcd1234", "operator-0")
    assert run["kind"] == "ProbeRun" and "namespace" not in run["metadata"]
    assert run["metadata"]["labels"][RUN_LABEL] == "abcd1234"


def _svc(name: str, selector: dict[str, str], publish: bool) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": name},
            "spec": {"selector": selector, "publishNotReadyAddresses": publish}}


def _pdb(name: str, selector: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": name}, "spec": {"selector": selector, **spec}}


def test_clone_conflicts_with_services_and_disruption_budgets() -> None:
    labels = {"tier": "api", "app.kubernetes.io/managed-by": "netpol-auditor"}
    # an ordinary Service lists the never-ready clone as not ready/not serving: harmless
    assert clone_conflict("shop", labels, [_svc("api", {"tier": "api"}, False)], []) is None
    # one that publishes not-ready addresses would send traffic (and DNS answers) to it
    assert "publishes not-ready" in (clone_conflict("shop", labels, [_svc("peers", {"tier": "api"}, True)], []) or "")
    # ... but only if it selects the clone, in the same namespace
    assert clone_conflict("shop", labels, [_svc("peers", {"tier": "db"}, True)], []) is None
    assert clone_conflict("other", labels, [_svc("peers", {"tier": "api"}, True)], []) is None
    # a PDB with an integer minAvailable counts Ready pods only: harmless; maxUnavailable or a percentage needs the
    # controller's scale of every selected pod: conflict
    assert clone_conflict("shop", labels, [], [_pdb("a", {"matchLabels": {"tier": "api"}}, minAvailable=1)]) is None
    assert clone_conflict("shop", labels, [], [_pdb("b", {"matchLabels": {"tier": "api"}}, maxUnavailable=1)])
    assert clone_conflict("shop", labels, [], [_pdb("c", {"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["api", "web"]}]}, minAvailable="50%")])
    assert clone_conflict("shop", labels, [], [_pdb("d", {"matchLabels": {"tier": "db"}}, maxUnavailable=1)]) is None
