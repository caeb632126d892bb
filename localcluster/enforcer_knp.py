"""kube-network-policies (sigs.k8s.io/kube-network-policies v0.8.0) per node, and the cluster policy CRDs it reads.

kube-network-policies decides in user space: the first packet of each new connection goes to an nfqueue, the
process evaluates AdminNetworkPolicy (v1alpha1) → NetworkPolicy (networking.k8s.io/v1) → BaselineAdminNetworkPolicy
(v1alpha1), for the source's egress and the destination's ingress, and answers accept or drop (v0.8.0
``pkg/networkpolicy/controller.go``, ``evaluatePacket``). What it needs here (localcluster/README.md, "Enforcers"):

* **In-cluster config only** (v0.8.0 ``cmd/main.go`` calls ``rest.InClusterConfig``, it has no ``--kubeconfig``):
  ``KUBERNETES_SERVICE_HOST=127.0.0.1``, ``KUBERNETES_SERVICE_PORT=<api port>`` (the socat bridge in the node netns)
  and a ServiceAccount token + CA under ``/var/run/secrets/kubernetes.io/serviceaccount``, which it gets on a private
  tmpfs over ``/run`` in its own mount namespace (``ip netns exec`` gives it one; nothing reaches the host's ``/run``).
  The ServiceAccount ``kube-system/kube-network-policies`` has upstream's ClusterRole (``install-anp.yaml``) and a
  TokenRequest token, as the DaemonSet's pods would.
* **The queue rule, installed by us**: upstream installs ``table inet kube-network-policies`` with chain
  ``postrouting`` (hook postrouting, priority srcnat - 5): ``ip6 icmpv6 accept``, ``meta skuid 0 accept``, ``ct
  state established,related accept``, then ``queue num 100`` — every other packet when the admin policies are
  enabled (without them only packets of pods selected by a NetworkPolicy, through a set). This kernel lacks the
  nftables ``queue`` expression, so that transaction fails as a whole (logged by the process at every sync; it
  carries on and reads the queue anyway), and localcluster installs the same four rules with iptables-nft in
  ``mangle POSTROUTING`` (chain ``KNP-POSTROUTING``), where ``-j NFQUEUE`` is the xtables target, which this
  kernel has. The differences: priority mangle (-150) instead of srcnat - 5 (no NAT happens in a node netns, so no
  verdict changes), and the admin policies are always on (``--admin-network-policy --baseline-admin-network-policy``,
  so every packet is queued, as upstream does with those flags).
* ``--disable-nri`` (no container runtime), ``--netfilter-bug-1766-fix=false`` (its DNS workaround is for kernels
  before 6.12; it would add a second queue rule), ``--metrics-bind-address=127.0.0.1:9080`` in the node netns.
* Its DNS snooper for ``domainNames`` peers (queue 101) is kept from starting: ``nfqueue_hold.py`` binds that queue
  first (its own nftables rule cannot be installed here, and upstream's failure path then spins a core; see there).
  ``domainNames`` peers (the experimental-channel CRDs accept them) are therefore never matched here.
* ``--disable-nri`` is passed but v0.8.0's ``cmd/main.go`` never copies it into the controller's Config: its NRI
  plugin tries ``/var/run/nri/nri.sock``, fails and exits ("nri plugin exited"), which changes nothing (pod IPs
  come from the API server, as with NRI off).
* No ``--fail-open``: a queued packet with no reader is dropped, as upstream's default. So the queue rule is
  installed only once the process has bound the queue (which it does after its informer caches synced), and
  removed before the process is stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from localcluster import network
from localcluster.controlplane import process_alive, spawn, stop_process

__all__ = ["CRD_NAMES", "DNS_QUEUE_ID", "QUEUE_CHAIN", "QUEUE_ID", "argv", "crd_files", "holder_name", "install_crds",
           "install_queue_rules", "process_name", "queue_bound", "remove_queue_rules", "secrets_dir",
           "service_account_secrets", "start", "stop", "wait"]

QUEUE_ID = 100
DNS_QUEUE_ID = QUEUE_ID + 1  # its domainNames DNS snooper's queue (NewDomainCache(config.QueueID + 1))
QUEUE_CHAIN = "KNP-POSTROUTING"
METRICS_ADDRESS = "127.0.0.1:9080"
NPA_MODULE = "sigs.k8s.io/network-policy-api"
CRD_NAMES = ("adminnetworkpolicies.policy.networking.k8s.io",
             "baselineadminnetworkpolicies.policy.networking.k8s.io")
SERVICE_ACCOUNT = ("kube-system", "kube-network-policies")
TOKEN_DURATION = "168h"
#: upstream's ClusterRole (install-anp.yaml at v0.8.0)
CLUSTER_ROLE_RULES = [
    {"apiGroups": [""], "resources": ["pods", "namespaces", "nodes"], "verbs": ["list", "watch"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]},
    {"apiGroups": ["policy.networking.k8s.io"], "resources": ["adminnetworkpolicies", "baselineadminnetworkpolicies"],
     "verbs": ["list", "watch"]},
]
SA_DIR = "/run/secrets/kubernetes.io/serviceaccount"


def process_name(node: str) -> str:
    return f"nodes.kube-network-policies-{node}"


def holder_name(node: str) -> str:
    return f"nodes.nfqueue-hold-{node}"


def crd_files() -> list[Path]:
    """The experimental-channel CRDs of the network-policy-api version kube-network-policies' go.mod requires, as its
    README and CI install them: the standard channel of that version lacks the ``networks``, ``nodes`` and
    ``namedPort`` fields it enforces."""
    from localcluster.build import KNP_MODULE, KNP_VERSION, module_dir, required_version

    npa = module_dir(NPA_MODULE, required_version(module_dir(KNP_MODULE, KNP_VERSION), NPA_MODULE))
    return [npa / "config" / "crd" / "experimental" / f"policy.networking.k8s.io_{name.split('.')[0]}.yaml"
            for name in CRD_NAMES]


def _kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    proc = subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True,
                          input=input, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def install_crds(kubeconfig: Path) -> None:
    """Apply the CRDs (server-side: they are larger than the last-applied annotation allows) and wait until the
    API server serves them."""
    for f in crd_files():
        _kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(f))
    _kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
             *(f"crd/{name}" for name in CRD_NAMES))


def secrets_dir(state: Path) -> Path:
    return state / "nodes" / "kube-network-policies-serviceaccount"


def service_account_secrets(state: Path, kubeconfig: Path, ca: Path) -> Path:
    """ServiceAccount, ClusterRole and binding as upstream's manifest, a token; returns the directory that is
    mounted as the pod's ``serviceaccount`` directory (``token``, ``ca.crt``, ``namespace``)."""
    ns, name = SERVICE_ACCOUNT
    objs = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": CLUSTER_ROLE_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]},
    ]
    _kubectl(kubeconfig, "apply", "-f", "-", input="\n".join(json.dumps(o) for o in objs))
    token = _kubectl(kubeconfig, "create", "token", name, "-n", ns, f"--duration={TOKEN_DURATION}").strip()
    d = secrets_dir(state)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    (d / "token").write_text(token)
    (d / "ca.crt").write_bytes(ca.read_bytes())
    (d / "namespace").write_text(ns)
    return d


def argv(binary: Path, node: network.NodeNet, api_port: int, secrets: Path) -> list[str]:
    script = (f'mount -t tmpfs -o mode=0755,size=1m knp-run /run && mkdir -p {SA_DIR} && cp "$1"/token "$1"/ca.crt '
              f'"$1"/namespace {SA_DIR}/ && shift && exec "$@"')
    return [
        "ip", "netns", "exec", node.netns,
        "env", "KUBERNETES_SERVICE_HOST=127.0.0.1", f"KUBERNETES_SERVICE_PORT={api_port}",
        "sh", "-c", script, "kube-network-policies", str(secrets),
        str(binary), f"--hostname-override={node.name}", f"--nfqueue-id={QUEUE_ID}",
        "--admin-network-policy=true", "--baseline-admin-network-policy=true", "--disable-nri=true",
        "--netfilter-bug-1766-fix=false", f"--metrics-bind-address={METRICS_ADDRESS}", "--v=2",
    ]


def queue_bound(netns: str, queue: int = QUEUE_ID) -> bool:
    """A process reads the queue: it is listed in the netns' ``/proc/net/netfilter/nfnetlink_queue``."""
    out = network.run(["cat", "/proc/net/netfilter/nfnetlink_queue"], netns=netns, check=False)
    return any(line.split()[:1] == [str(queue)] for line in out.splitlines())


def _queue_rules(family: int) -> str:
    rules = [f":{QUEUE_CHAIN} - [0:0]",
             f'-A POSTROUTING -m comment --comment "kube-network-policies queue" -j {QUEUE_CHAIN}']
    if family == 6:
        rules.append(f"-A {QUEUE_CHAIN} -p ipv6-icmp -j ACCEPT")  # neighbour discovery
    rules += [f"-A {QUEUE_CHAIN} -m owner --uid-owner 0 -j ACCEPT",  # the node's own root processes
              f"-A {QUEUE_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
              f"-A {QUEUE_CHAIN} -j NFQUEUE --queue-num {QUEUE_ID}"]
    return "*mangle\n" + "\n".join(rules) + "\nCOMMIT\n"


def install_queue_rules(netns: str) -> None:
    """The rules upstream's ``syncNFTablesRules`` installs with admin policies on, in iptables-nft (see above)."""
    remove_queue_rules(netns)
    for family, tool in ((4, "iptables-restore"), (6, "ip6tables-restore")):
        network.run([tool, "--noflush"], netns=netns, input=_queue_rules(family))


def remove_queue_rules(netns: str) -> None:
    for tool in ("iptables", "ip6tables"):
        def call(*args: str, tool: str = tool) -> bool:
            return subprocess.run(["ip", "netns", "exec", netns, tool, "-t", "mangle", *args],
                                  capture_output=True, check=False).returncode == 0

        while call("-D", "POSTROUTING", "-m", "comment", "--comment", "kube-network-policies queue", "-j",
                   QUEUE_CHAIN):
            pass
        call("-F", QUEUE_CHAIN)
        call("-X", QUEUE_CHAIN)


def _hold_dns_queue(state: Path, node: network.NodeNet, timeout: float = 10.0) -> None:
    if process_alive(state, holder_name(node.name)):
        return
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    spawn(state, holder_name(node.name), ["ip", "netns", "exec", node.netns, sys.executable, "-m",
                                          "localcluster.nfqueue_hold", str(DNS_QUEUE_ID)], env=env)
    deadline = time.monotonic() + timeout
    while not queue_bound(node.netns, DNS_QUEUE_ID):
        if time.monotonic() > deadline or not process_alive(state, holder_name(node.name)):
            raise RuntimeError(f"could not hold nfqueue {DNS_QUEUE_ID} on {node.name}; see "
                               f"{state / 'logs' / (holder_name(node.name) + '.log')}")
        time.sleep(0.05)


def start(state: Path, node: network.NodeNet, api_port: int, secrets: Path, binary: Path | None = None) -> int:
    if binary is None:
        from localcluster.build import binary as build_binary

        binary = build_binary("kube-network-policies")
    _hold_dns_queue(state, node)
    return spawn(state, process_name(node.name), argv(binary, node, api_port, secrets))


def wait(state: Path, node: network.NodeNet, timeout: float = 60.0) -> None:
    """Until the process reads its queue, then install the queue rule."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(state, process_name(node.name)):
            log = state / "logs" / f"{process_name(node.name)}.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"kube-network-policies on {node.name} exited:\n{tail}")
        if queue_bound(node.netns):
            install_queue_rules(node.netns)
            return
        time.sleep(0.2)
    raise TimeoutError(f"kube-network-policies on {node.name} did not read its queue within {timeout}s")


def stop(state: Path, node: network.NodeNet) -> None:
    """Queue rule first (a queue without a reader drops every new connection), then the process."""
    if network.netns_exists(node.netns):
        remove_queue_rules(node.netns)
    stop_process(state, process_name(node.name))
    stop_process(state, holder_name(node.name))
