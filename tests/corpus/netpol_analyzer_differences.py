"""Where netpol-auditor and np-guard netpol-analyzer differ on netpol-analyzer's connlist examples, and why.

Every difference is a documented semantic choice of netpol-auditor, not a disagreement on what a NetworkPolicy
allows: on every pair of peers that both tools judge, the connections agree. The lists are exact: the corpus test
fails if a listed difference disappears or an unlisted one appears, so they stay true.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "HOST_NETWORK",
    "NOT_RUNNING",
    "PEERS_NOT_JUDGED",
    "REASONS",
    "REFUSED_INPUT",
    "UNKNOWN_FIELD",
    "Reason",
    "Refusal",
]


@dataclass(frozen=True)
class Reason:
    """Why the tools differ. ``marker``: what our side of each such pair says (see ``netpol_analyzer_corpus``)."""

    key: str
    title: str
    why: str
    marker: str = ""
    phrase: str = ""  # "pairs with ..." in the agreement figure


HOST_NETWORK = Reason(
    key="host-network",
    title="Pods with hostNetwork: true",
    why="netpol-analyzer treats them as pod-network pods; netpol-auditor reports their traffic as not judged: "
    "NetworkPolicy behaviour for hostNetwork pods is undefined, the most common implementation treating it as "
    "node traffic (kubernetes.io/docs/concepts/services-networking/network-policies/, 'NetworkPolicy and "
    "hostNetwork pods').",
    marker="uses the host network",
    phrase="a hostNetwork pod",
)
NOT_RUNNING = Reason(
    key="not-running",
    title="Pods with a status that are not Running",
    why="netpol-analyzer judges every Pod; netpol-auditor judges Pods that are Running with an IP and Pods written "
    "without status, and leaves out the others: a completed Job's pods (phase Succeeded) have no network left, and "
    "a status without a phase is read as Pending, the phase the API server gives a new pod.",
    marker="not an endpoint",
    phrase="a pod that is not running",
)
UNKNOWN_FIELD = Reason(
    key="unknown-field",
    title="containerport (lower-case p) in a Deployment's container ports",
    why="netpol-analyzer converts manifests with apimachinery's DefaultUnstructuredConverter, which drops a field "
    "it does not know without a word; netpol-auditor refuses it (exit 2), as the API server does under strict field "
    "validation (kubectl's default): field names are case-sensitive (kubernetes/kubernetes#65034, "
    "sigs.k8s.io/json). The case is compared after correcting the spelling: no policy names that port.",
)
REASONS = (HOST_NETWORK, NOT_RUNNING, UNKNOWN_FIELD)

IBM_CLOUD_HOST_NETWORK = (
    "default/cognetive-agents-agent[DaemonSet]",
    "default/cognetive-agents-analyzer[DaemonSet]",
    "default/cognetive-agents[DaemonSet]",
    "default/cognetive-local-analyzer-7d77fb55cc[ReplicaSet]",
    "ibm-system/ibm-cloud-provider-ip-169-60-164-10-5c9dd7c9c[ReplicaSet]",
    "ibm-system/ibm-cloud-provider-ip-169-60-164-14-6d448884df[ReplicaSet]",
    "kube-system-dummy-to-ignore/calico-kube-controllers-7694668c77[ReplicaSet]",
    "kube-system/calico-node-tier[DaemonSet]",
    "kube-system/calico-node[DaemonSet]",
    "kube-system/ibm-keepalived-watcher-for-demo[DaemonSet]",
    "kube-system/ibm-keepalived-watcher[DaemonSet]",
    "kube-system/ibm-kube-fluentd-with-tier[DaemonSet]",
    "kube-system/ibm-kube-fluentd[DaemonSet]",
)
BANK_DEMO_HOST_NETWORK = (
    "demo/cog-agents-account-command[DaemonSet]",
    "demo/cog-agents-account-query[DaemonSet]",
    "demo/cog-agents-bank-ui[DaemonSet]",
)
MINIKUBE_CONTROL_PLANE = (
    "kube-system/calico-node[DaemonSet]",
    "kube-system/etcd-minikube[Pod]",
    "kube-system/kube-apiserver-minikube[Pod]",
    "kube-system/kube-controller-manager-minikube[Pod]",
    "kube-system/kube-proxy[DaemonSet]",
    "kube-system/kube-scheduler-minikube[Pod]",
    "kube-system/storage-provisioner[Pod]",
)
BOOKINFO_WITHOUT_PHASE = (
    "default/ratings-v1-b6994bb9[ReplicaSet]",
    "default/reviews-v1-545db77b95[ReplicaSet]",
)

#: Per case, the peers (netpol-analyzer's names) we do not judge, by reason: every pair with one of them differs
#: (they give connections, we give none), and these are the only differences of the case.
PEERS_NOT_JUDGED: Mapping[str, Mapping[Reason, tuple[str, ...]]] = {
    "ipblockstest": {HOST_NETWORK: IBM_CLOUD_HOST_NETWORK},
    "ipblockstest_2": {HOST_NETWORK: IBM_CLOUD_HOST_NETWORK},
    "ipblockstest_3": {HOST_NETWORK: IBM_CLOUD_HOST_NETWORK},
    "minikube_resources": {
        HOST_NETWORK: MINIKUBE_CONTROL_PLANE,
        NOT_RUNNING: (
            "ingress-nginx/ingress-nginx-admission-create[Job]",
            "ingress-nginx/ingress-nginx-admission-patch[Job]",
        ),
    },
    "k8s_ingress_test": {NOT_RUNNING: BOOKINFO_WITHOUT_PHASE},
    "k8s_ingress_test_focus_workload_details-v1-79f774bdb9": {NOT_RUNNING: BOOKINFO_WITHOUT_PHASE},
    "multiple_topology_resources_1": {HOST_NETWORK: BANK_DEMO_HOST_NETWORK},
    "multiple_topology_resources_2": {HOST_NETWORK: BANK_DEMO_HOST_NETWORK},
    "multiple_topology_resources_3": {HOST_NETWORK: BANK_DEMO_HOST_NETWORK},
    "multiple_topology_resources_4": {HOST_NETWORK: BANK_DEMO_HOST_NETWORK},
    "semanticDiff-same-topologies-old1": {HOST_NETWORK: BANK_DEMO_HOST_NETWORK},
    "semanticDiff-same-topologies-old2": {HOST_NETWORK: BANK_DEMO_HOST_NETWORK},
    "semanticDiff-same-topologies-old3": {HOST_NETWORK: BANK_DEMO_HOST_NETWORK},
    "semanticDiff-same-topologies-new1": {HOST_NETWORK: BANK_DEMO_HOST_NETWORK},
    "semanticDiff-same-topologies-new1a": {HOST_NETWORK: BANK_DEMO_HOST_NETWORK},
    "semanticDiff-same-topologies-new2": {HOST_NETWORK: BANK_DEMO_HOST_NETWORK},
    "semanticDiff-same-topologies-new3": {HOST_NETWORK: BANK_DEMO_HOST_NETWORK},
}


@dataclass(frozen=True)
class Refusal:
    """Input netpol-auditor refuses: the reason, the errors it reports (file paths relative to the case directory),
    and the text replacements after which the case is compared."""

    reason: Reason
    errors: tuple[str, ...]
    repairs: Mapping[str, str]


_CONTAINERPORT = Refusal(
    UNKNOWN_FIELD,
    (
        "pods.yaml: Deployment helloworld/pod-a: unknown field "
        '"spec.template.spec.containers[0].ports[1].containerport" (did you mean "containerPort"?)',
    ),
    {"containerport:": "containerPort:"},
)

REFUSED_INPUT: Mapping[str, Refusal] = {
    "netpol_named_port_test": _CONTAINERPORT,
    "netpol_named_port_test_2": _CONTAINERPORT,
}
