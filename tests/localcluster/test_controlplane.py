"""The local control plane is a real Kubernetes control plane: version, RBAC/PodSecurity admission, KCM controllers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localcluster import build, controlplane
from localcluster import cluster as lc

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 60.0, interval: float = 0.25) -> float:
    """Poll ``cond`` until true; returns seconds taken, fails the test with ``what`` on timeout."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


def exists(c: lc.Cluster, *args: str) -> bool:
    proc = subprocess.run(["kubectl", f"--kubeconfig={c.kubeconfig}", "get", *args, "-o", "name"],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode == 0:
        return True
    assert "NotFound" in proc.stderr, proc.stderr
    return False


@pytest.fixture
def namespace(cluster: lc.Cluster) -> Iterator[str]:
    name = f"cp-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false")


def test_kubectl_lists_nodes_and_server_is_the_built_version(cluster: lc.Cluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json"))["items"]
    assert len(nodes) == cluster.nodes
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}.get("Ready")
        assert ready == "True", node["metadata"]["name"]
    server = json.loads(cluster.kubectl("version", "-o", "json"))["serverVersion"]
    assert server["gitVersion"] == build.k8s_version() == cluster.version
    assert (server["major"], server["minor"]) == tuple(build.k8s_version().lstrip("v").split(".")[:2])
    # The binary we run is the one we built, and it reports the same version itself.
    out = subprocess.run([str(build.binary("kube-apiserver")), "--version"], capture_output=True, text=True).stdout
    assert out.strip() == f"Kubernetes {build.k8s_version()}"
    # etcd is the release k8s.io/kubernetes itself requires (localcluster/go/etcd, generated from its go.mod).
    cp = controlplane.ControlPlane.load(cluster.state)
    assert cp is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{cp.etcd_port}/version", timeout=10) as resp:
        etcd = json.load(resp)
    required = re.search(r"go\.etcd\.io/etcd/server/v3 v(\S+)", (build.ETCD_MODULE_DIR / "go.mod").read_text())
    assert required and etcd["etcdserver"] == required.group(1)


def test_rbac_denies_an_unbound_service_account(cluster: lc.Cluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    who = f"system:serviceaccount:{namespace}:nobody"
    assert cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace, "--as", who, check=False).strip() == "no"
    cluster.kubectl("create", "rolebinding", "nobody-view", "-n", namespace, "--clusterrole=view",
                    f"--serviceaccount={namespace}:nobody")
    # `view` is an aggregated ClusterRole: its rules exist only because clusterrole-aggregation runs.
    wait_for("RBAC to allow listing pods via the aggregated view role", lambda: cluster.kubectl(
        "auth", "can-i", "list", "pods", "-n", namespace, "--as", who, check=False).strip() == "yes", timeout=30)


def _pod(name: str, *, privileged: bool) -> str:
    sc = ({"privileged": True} if privileged else
          {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1000,
           "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}})
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                                                "securityContext": sc}]}})


def test_pod_security_restricted_is_enforced(cluster: lc.Cluster, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    denied = subprocess.run(["kubectl", f"--kubeconfig={cluster.kubeconfig}", "apply", "-n", namespace, "-f", "-"],
                            input=_pod("root", privileged=True), capture_output=True, text=True, timeout=30)
    assert denied.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in denied.stderr
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_pod("compliant", privileged=False))
    assert exists(cluster, "pod", "compliant", "-n", namespace)


def test_deleted_namespace_really_disappears_with_its_pods(cluster: lc.Cluster) -> None:
    ns = f"gone-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    wait_for("the default ServiceAccount in the new namespace", lambda: exists(cluster, "sa", "default", "-n", ns))
    for i in range(3):
        cluster.kubectl("run", f"p{i}", "-n", ns, "--image=busybox", "--restart=Never", "--", "sleep", "3600")
    cluster.kubectl("create", "configmap", "cfg", "-n", ns, "--from-literal=k=v")
    assert len(cluster.kubectl("get", "pods", "-n", ns, "-o", "name").split()) == 3
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    took = wait_for(f"namespace {ns} to disappear", lambda: not exists(cluster, "namespace", ns), timeout=90)
    print(f"namespace deletion took {took:.1f} s")
    assert "No resources found" in subprocess.run(
        ["kubectl", f"--kubeconfig={cluster.kubeconfig}", "get", "pods", "-n", ns],
        capture_output=True, text=True).stderr


def test_owned_objects_are_garbage_collected(cluster: lc.Cluster, namespace: str) -> None:
    # Deployment -> ReplicaSet -> Pods (deployment and replicaset controllers), then the garbage collector removes
    # the ReplicaSet and its Pods once the Deployment is gone.
    cluster.kubectl("create", "deployment", "web", "-n", namespace, "--image=busybox", "--replicas=2", "--", "sleep",
                    "3600")
    wait_for("2 pods owned by the deployment's ReplicaSet", lambda: len(cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", "app=web", "-o", "name").split()) == 2)
    rs = json.loads(cluster.kubectl("get", "rs", "-n", namespace, "-l", "app=web", "-o", "json"))["items"]
    assert [o["kind"] for o in rs[0]["metadata"]["ownerReferences"]] == ["Deployment"]
    cluster.kubectl("delete", "deployment", "web", "-n", namespace, "--cascade=background", "--wait=false")
    wait_for("ReplicaSet and pods to be garbage-collected", lambda: not cluster.kubectl(
        "get", "rs,pods", "-n", namespace, "-o", "name").split(), timeout=60)


def test_orphan_propagation_keeps_dependents(cluster: lc.Cluster, namespace: str) -> None:
    owner = json.loads(cluster.kubectl("create", "configmap", "owner", "-n", namespace, "-o", "json"))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    for name in ("kept-a", "kept-b"):
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "ownerReferences": [ref]}}))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace, "--cascade=orphan")
    for name in ("kept-a", "kept-b"):
        wait_for(f"{name} to lose its ownerReference", lambda n=name: not json.loads(cluster.kubectl(
            "get", "configmap", n, "-n", namespace, "-o", "json"))["metadata"].get("ownerReferences"))
    # A fresh owner with a dependent, deleted in the background: the dependent goes.
    owner = json.loads(cluster.kubectl("create", "configmap", "owner2", "-n", namespace, "-o", "json"))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner2", "uid": owner["metadata"]["uid"]}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dependent", "ownerReferences": [ref]}}))
    cluster.kubectl("delete", "configmap", "owner2", "-n", namespace)
    wait_for("the dependent to be garbage-collected", lambda: not exists(cluster, "configmap", "dependent", "-n",
                                                                        namespace))


def test_python_client_factory_talks_to_the_cluster(cluster: lc.Cluster) -> None:
    from kubernetes import client

    with cluster.api_client() as api:
        names = [ns.metadata.name for ns in client.CoreV1Api(api).list_namespace().items]
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= set(names)
    cm = json.loads(cluster.kubectl("get", "configmap", "kube-root-ca.crt", "-n", "default", "-o", "json"))
    assert cm["data"]["ca.crt"] == (cluster.state / "pki" / "ca.crt").read_text()


def test_up_refuses_a_taken_api_port_and_leaves_nothing(cluster: lc.Cluster) -> None:
    """A second cluster never shares the first one's port: `up` fails before starting anything."""
    port = cluster.server.rsplit(":", 1)[1]
    state = cluster.state.with_name(cluster.state.name + "-port-clash")
    proc = subprocess.run([sys.executable, "-m", "localcluster", "--state", str(state), "up", "--nodes", "0",
                           "--api-port", port], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"127.0.0.1:{port} is in use" in proc.stderr
    assert lc.leftovers(state) == {"processes": [], "netns": [], "mounts": [], "dirs": []}
    assert json.loads(cluster.kubectl("version", "-o", "json"))["serverVersion"]["gitVersion"] == cluster.version
