"""The chart's ValidatingAdmissionPolicy against the real API server of the local cluster (session ``cluster``).

The chart is rendered by the real ``helm``; its ServiceAccount, ClusterRole(Binding) and the policy with its binding
are applied; then pods are created impersonating the operator's ServiceAccount (which the ClusterRole lets create
pods anywhere): the probe and responder pods the operator builds (operator/netpol_auditor/prober/podspec.py) are
admitted, each way of making one dangerous or foreign is denied with the message of the rule it breaks, and the
admin's own pods are not matched at all.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, run_helm, set_args

from netpol_auditor.model import Labels, PortProtocol
from netpol_auditor.prober.plan import ProbeGroup
from netpol_auditor.prober.podspec import PodOptions, RunOwner, probe_pod, responder_pod

pytestmark = [pytest.mark.cluster]

RELEASE = "vapaudit"
RELEASE_NS = "chart-vap"
PROBED_NS = "chart-vap-shop"
FULLNAME = f"{RELEASE}-netpol-auditor"
POLICY = f"{FULLNAME}-probe-pods"
SA_USER = f"system:serviceaccount:{RELEASE_NS}:{FULLNAME}"
INSTALL_ID = hashlib.sha256(f"{RELEASE_NS}/{RELEASE}".encode()).hexdigest()[:12]
PROBE_IMAGE = "nicolaka/netshoot:v0.13"
#: A node that does not exist: admitted pods stay Pending and run nothing.
NODE = "vap-no-such-node"
APPLIED_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                 "ValidatingAdmissionPolicyBinding")


def kubectl(cluster: Any, *args: str, input: str | None = None, as_operator: bool = False,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    who = [f"--as={SA_USER}", "--as-group=system:serviceaccounts",
           f"--as-group=system:serviceaccounts:{RELEASE_NS}"] if as_operator else []
    return subprocess.run(["kubectl", f"--kubeconfig={cluster.kubeconfig}", *who, *args], input=input,
                          capture_output=True, text=True, timeout=timeout)


def _render(helm: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    proc = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", RELEASE_NS, *set_args(values))
    return [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] in APPLIED_KINDS]


def _apply(cluster: Any, docs: list[dict[str, Any]]) -> None:
    proc = kubectl(cluster, "apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    assert proc.returncode == 0, proc.stderr


def _group(namespace: str = PROBED_NS) -> ProbeGroup:
    return ProbeGroup(id="g-web", namespace=namespace, labels=Labels({"app": "web", "tier": "front"}),
                      container_ports=(), members_by_node={})


#: What the chart's default values make the operator put on its pods (NETPOL_AUDITOR_PROBE_*).
OPTIONS = PodOptions(image=PROBE_IMAGE, instance=RELEASE, install_id=INSTALL_ID)


@pytest.fixture(scope="module")
def owner(cluster: Any) -> Iterator[RunOwner]:
    """A real ProbeRun (the chart's CRD) owning the test's pods, as the operator's are owned."""
    proc = kubectl(cluster, "apply", "--server-side", "-f", str(CHART / "crds" / "proberuns.yaml"))
    assert proc.returncode == 0, proc.stderr
    proc = kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s", "crd/proberuns.netpol-auditor.io")
    assert proc.returncode == 0, proc.stderr
    run = {"apiVersion": "netpol-auditor.io/v1alpha1", "kind": "ProbeRun",
           "metadata": {"name": "netpol-auditor-vaptest", "labels": {"app.kubernetes.io/managed-by": "netpol-auditor"}},
           "spec": {"runId": "vaptest", "holder": "test"}}
    proc = kubectl(cluster, "apply", "-f", "-", "-o", "json", input=json.dumps(run))
    assert proc.returncode == 0, proc.stderr
    yield RunOwner(name="netpol-auditor-vaptest", uid=json.loads(proc.stdout)["metadata"]["uid"], run_id="vaptest")
    kubectl(cluster, "delete", "proberun", "netpol-auditor-vaptest", "--wait=false")


def _probe(owner: RunOwner, namespace: str = PROBED_NS, seq: int = 0) -> dict[str, Any]:
    return probe_pod(owner, _group(namespace), NODE, seq, "exit 0", OPTIONS)


def _responder(owner: RunOwner, seq: int = 0) -> dict[str, Any]:
    return responder_pod(owner, _group(), NODE, seq, [PortProtocol.parse("80/TCP"), PortProtocol.parse("53/UDP")],
                         OPTIONS)


def _wait_in_force(cluster: Any, owner: RunOwner, namespace: str = PROBED_NS) -> None:
    """The API server takes up a new or changed policy asynchronously: wait (dry runs) until a probe pod in
    *namespace* is admitted and the same pod with another image is denied."""
    good = _probe(owner, namespace=namespace, seq=99)
    bad = copy.deepcopy(good)
    bad["spec"]["containers"][0]["image"] = "busybox"
    deadline = time.monotonic() + 60
    while True:
        admitted = kubectl(cluster, "create", "--dry-run=server", "-f", "-", input=json.dumps(good), as_operator=True)
        denied = kubectl(cluster, "create", "--dry-run=server", "-f", "-", input=json.dumps(bad), as_operator=True)
        if admitted.returncode == 0 and denied.returncode != 0 and POLICY in denied.stderr:
            return
        assert time.monotonic() < deadline, f"the policy is not in force: {admitted.stderr}{denied.stderr}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def policy(cluster: Any, helm: Path, owner: RunOwner) -> Iterator[Any]:
    """The chart's ServiceAccount, RBAC and admission policy (default values) applied and in force."""
    for ns in (RELEASE_NS, PROBED_NS):
        # left by an interrupted run on a reused cluster (its pods are bound to no node: force them out)
        kubectl(cluster, "delete", "pods", "--all", "-n", ns, "--force", "--grace-period=0", "--ignore-not-found")
        kubectl(cluster, "delete", "namespace", ns, "--ignore-not-found", "--timeout=120s", timeout=150)
        proc = kubectl(cluster, "create", "namespace", ns)
        assert proc.returncode == 0, proc.stderr
    docs = _render(helm)
    assert {d["kind"] for d in docs} == set(APPLIED_KINDS)
    _apply(cluster, docs)
    _wait_in_force(cluster, owner)
    yield cluster
    kubectl(cluster, "delete", "--wait=false", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    for ns in (RELEASE_NS, PROBED_NS, "kube-system"):
        kubectl(cluster, "delete", "pods", "-n", ns, "-l", "netpol-auditor.io/run=vaptest", "--force",
                "--grace-period=0")
    kubectl(cluster, "delete", "namespace", RELEASE_NS, PROBED_NS, "--wait=false")


def _create(cluster: Any, pod: dict[str, Any], as_operator: bool = True) -> subprocess.CompletedProcess[str]:
    return kubectl(cluster, "create", "-f", "-", "-o", "name", input=json.dumps(pod), as_operator=as_operator)


def _admitted(cluster: Any, pod: dict[str, Any], as_operator: bool = True) -> None:
    proc = _create(cluster, pod, as_operator)
    assert proc.returncode == 0, proc.stderr
    kubectl(cluster, "delete", "pod", "-n", pod["metadata"]["namespace"], pod["metadata"]["name"], "--wait=false",
            "--grace-period=0", "--force")


def test_the_operators_probe_and_responder_pods_are_admitted(policy: Any, owner: RunOwner) -> None:
    _admitted(policy, _probe(owner, seq=1))
    responder = _responder(owner, seq=1)
    assert responder["spec"]["securityContext"]["sysctls"][0]["name"] == "net.ipv4.ip_unprivileged_port_start"
    _admitted(policy, responder)


def test_probe_pods_with_every_probe_value_set_are_admitted(policy: Any, owner: RunOwner) -> None:
    """What the chart's probe.* values add to a probe pod (tolerations, nodeSelector, priority class, pull
    secrets, extra labels and annotations, the mesh opt-outs) is nothing the policy refuses."""
    options = PodOptions(image=PROBE_IMAGE, instance=RELEASE, install_id=INSTALL_ID,
                         tolerations=({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},),
                         labels={"team": "netsec"}, annotations={"example.com/owner": "netsec"},
                         image_pull_secrets=("regcred",), priority_class_name="system-node-critical")
    pod = probe_pod(owner, _group(), NODE, 2, "exit 0", options)
    assert pod["spec"]["tolerations"] and pod["spec"]["imagePullSecrets"] and pod["spec"]["nodeSelector"]
    assert pod["metadata"]["annotations"]["linkerd.io/inject"] == "disabled"
    _admitted(policy, pod)


def _with(change: Callable[[dict[str, Any]], None]) -> Callable[[RunOwner], dict[str, Any]]:
    def build(owner: RunOwner) -> dict[str, Any]:
        pod = copy.deepcopy(_probe(owner, seq=3))
        change(pod)
        return pod
    return build


def _set_sc(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda pod: pod["spec"]["containers"][0]["securityContext"].__setitem__(key, value)


def _privileged(pod: dict[str, Any]) -> None:
    """privileged: true (pod validation refuses it together with allowPrivilegeEscalation: false)."""
    sc = pod["spec"]["containers"][0]["securityContext"]
    sc.pop("allowPrivilegeEscalation")
    sc["privileged"] = True


def _drop_label(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda pod: pod["metadata"]["labels"].pop(key)


def _set_spec(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda pod: pod["spec"].update(fields)


def _init_container(pod: dict[str, Any]) -> None:
    init = copy.deepcopy(pod["spec"]["containers"][0])
    pod["spec"]["initContainers"] = [dict(init, name="init", image="busybox:1.36")]


def _host_port(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 8080, "hostPort": 8080}]


def _host_path(pod: dict[str, Any]) -> None:
    pod["spec"]["volumes"] = [{"name": "root", "hostPath": {"path": "/"}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "root", "mountPath": "/host"}]


def _secret_volume(pod: dict[str, Any]) -> None:
    pod["spec"]["volumes"] = [{"name": "s", "secret": {"secretName": "anything"}}]


def _pod_sysctl(pod: dict[str, Any]) -> None:
    pod["spec"]["securityContext"]["sysctls"] = [{"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}]


def _root(pod: dict[str, Any]) -> None:
    pod["spec"]["securityContext"]["runAsUser"] = 0
    pod["spec"]["containers"][0]["securityContext"].update({"runAsUser": 0, "runAsNonRoot": False})


DENIED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "another-image": (lambda pod: pod["spec"]["containers"][0].__setitem__("image", "busybox:1.36"),
                      f"probe-image: every container, init container and ephemeral container must run the probe "
                      f"image {PROBE_IMAGE}"),
    "init-container-image": (_init_container, "probe-image:"),
    "privileged": (_privileged, "no-privileged: probe pod containers must not be privileged"),
    "privilege-escalation": (_set_sc("allowPrivilegeEscalation", True), "no-privilege-escalation:"),
    "added-capability": (_set_sc("capabilities", {"add": ["NET_ADMIN"]}),
                         "no-added-capabilities: probe pod containers must not add capabilities"),
    "root": (_root, "non-root:"),
    "host-network": (_set_spec(hostNetwork=True),
                     "no-host-namespaces: probe pods must not use hostNetwork, hostPID or hostIPC"),
    "host-pid": (_set_spec(hostPID=True), "no-host-namespaces:"),
    "host-ipc": (_set_spec(hostIPC=True), "no-host-namespaces:"),
    "host-port": (_host_port, "no-host-ports: probe pod containers must not declare a hostPort"),
    "host-path-volume": (_host_path, "no-volumes: probe pods mount nothing (no volumes of any kind)"),
    "secret-volume": (_secret_volume, "no-volumes:"),
    # The ServiceAccount admission plugin (mutating, so before the policy) has added the token's projected volume;
    # the policy reports the first rule that fails, in its order.
    "service-account-token": (_set_spec(automountServiceAccountToken=True), "no-volumes:"),
    "other-sysctl": (_pod_sysctl, "sysctls: the only sysctl a probe pod may set is "
                                  "net.ipv4.ip_unprivileged_port_start"),
    "no-managed-by-label": (_drop_label("app.kubernetes.io/managed-by"),
                            f"label-managed-by: {SA_USER} may only create pods labelled "
                            "app.kubernetes.io/managed-by=netpol-auditor (probe pods)"),
    "no-instance-label": (_drop_label("netpol-auditor.io/instance"),
                          f"label-instance: probe pods of this release must be labelled "
                          f"netpol-auditor.io/instance={RELEASE}"),
    "another-instance": (lambda pod: pod["metadata"]["labels"].__setitem__("netpol-auditor.io/instance", "other"),
                         "label-instance:"),
    "no-install-label": (_drop_label("netpol-auditor.io/install"),
                         f"label-install: probe pods of this release must be labelled "
                         f"netpol-auditor.io/install={INSTALL_ID}"),
}


@pytest.mark.parametrize("case", DENIED)
def test_pods_unlike_probe_pods_are_denied_with_the_rule(policy: Any, owner: RunOwner, case: str) -> None:
    change, message = DENIED[case]
    pod = _with(change)(owner)
    proc = _create(policy, pod)
    assert proc.returncode != 0, f"{case} was admitted"
    assert f"ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request" in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "is forbidden" in proc.stderr, proc.stderr


@pytest.mark.parametrize("namespace", ["kube-system", RELEASE_NS])
def test_no_probe_pods_in_system_namespaces(policy: Any, owner: RunOwner, namespace: str) -> None:
    proc = _create(policy, _probe(owner, namespace=namespace, seq=4))
    assert proc.returncode != 0
    assert (f"namespace: no probe pods in kube-system or {RELEASE_NS} (set probe.systemNamespaces=true to allow "
            "them)") in proc.stderr, proc.stderr


def test_the_admins_own_pods_are_not_matched(policy: Any, owner: RunOwner) -> None:
    """The matchCondition selects the operator's ServiceAccount only: the same pods, as the admin, are admitted."""
    for case in ("another-image", "privileged", "host-path-volume", "no-managed-by-label"):
        pod = _with(DENIED[case][0])(owner)
        pod["metadata"]["name"] = f"admin-{case}"
        _admitted(policy, pod, as_operator=False)
    _admitted(policy, _probe(owner, namespace="kube-system", seq=5), as_operator=False)


def test_system_namespaces_value_lifts_only_the_namespace_rule(policy: Any, helm: Path, owner: RunOwner) -> None:
    """probe.systemNamespaces=true: probe pods may run in kube-system; every other rule still holds. Runs last: it
    changes the policy in force."""
    _apply(policy, _render(helm, {"probe.systemNamespaces": True}))
    _wait_in_force(policy, owner, namespace="kube-system")
    _admitted(policy, _probe(owner, namespace="kube-system", seq=6))
    _admitted(policy, _probe(owner, namespace=RELEASE_NS, seq=6))
    privileged = _probe(owner, namespace="kube-system", seq=7)
    _privileged(privileged)
    proc = _create(policy, privileged)
    assert proc.returncode != 0 and "no-privileged:" in proc.stderr, proc.stderr
