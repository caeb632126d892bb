"""lint: each check on an input that has the problem and on one that does not."""

from __future__ import annotations

from typing import Any

from core_builders import ns, pod, policy

from netpol_auditor.lint import CHECKS, Finding, LintInput, lint
from netpol_auditor.model import NetworkPolicy, Pod

ALL = {c.id for c in CHECKS}
WEB = {"matchLabels": {"app": "web"}}
DEFAULT_DENY = policy("x", "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})


def _pods() -> list[Pod]:
    return [
        pod("x", "web", "10.0.0.1", {"app": "web"}, ports=[{"containerPort": 8080, "name": "http"}]),
        pod("x", "db", "10.0.0.2", {"app": "db"}),
    ]


def _run(check: str, *policies: NetworkPolicy, pods: list[Pod] | None = None, **kw: Any) -> list[str]:
    data = LintInput(list(policies), _pods() if pods is None else pods, [ns("x", team="a")], **kw)
    return [f"{f.name} {f.path}: {f.message}" for f in lint(data, {check})]


def _web(name: str, spec: dict[str, Any]) -> NetworkPolicy:
    return policy("x", name, {"podSelector": WEB, **spec})


def test_npa001_policy_selecting_no_pod() -> None:
    typo = policy("x", "api", {"podSelector": {"matchLabels": {"app": "wbe"}}})
    assert _run("NPA001", typo) == [
        "api spec.podSelector: podSelector app=wbe selects no pod of the input in namespace x: the policy has no effect"
    ]
    assert _run("NPA001", _web("web", {})) == []
    assert _run("NPA001", typo, pods=[]) == []  # policies alone: nothing to match against, nothing said


def test_npa002_peer_matching_nothing() -> None:
    def labels(**kw: str) -> dict[str, Any]:
        return {"matchLabels": kw}

    peers = _web(
        "web",
        {
            "ingress": [
                {"from": [{"podSelector": labels(app="dbb")}, {"podSelector": labels(app="db")}]},
                {"from": [{"namespaceSelector": labels(team="b")}]},
                {"from": [{"namespaceSelector": labels(team="a"), "podSelector": labels(app="x")}]},
                {"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}, {"namespaceSelector": {}}]},
            ]
        },
    )
    assert _run("NPA002", peers) == [
        "web spec.ingress[0].from[0].podSelector: podSelector app=dbb matches no pod of the input in namespace x",
        "web spec.ingress[1].from[0].namespaceSelector: namespaceSelector team=b matches no namespace of the input",
        "web spec.ingress[2].from[0].podSelector: podSelector app=x matches no pod of the input in namespace x",
    ]
    assert _run("NPA002", peers, pods=[]) == []
    # In document order: ingress, then egress; rules of a direction the policy does not isolate are ignored.
    both = _web("both", {"policyTypes": ["Egress", "Ingress"], "egress": [{"to": [{"podSelector": labels(app="e")}]}],
                         "ingress": [{"from": [{"podSelector": labels(app="i")}]}]})  # fmt: skip
    assert [f.split(":")[0] for f in _run("NPA002", both)] == [
        "both spec.ingress[0].from[0].podSelector", "both spec.egress[0].to[0].podSelector",
    ]  # fmt: skip
    ignored = _web("ignored", {"policyTypes": ["Ingress"], "egress": [{"to": [{"podSelector": labels(app="e")}]}]})
    assert _run("NPA002", ignored) == []
    # A namespace of the input without pods.
    empty = ns("y", team="b")
    data = LintInput([peers], _pods(), [ns("x", team="a"), empty])
    assert [f"{f.path}: {f.message}" for f in lint(data, {"NPA002"})][1] == (
        "spec.ingress[1].from[0].namespaceSelector: namespaceSelector matches namespace y, where the input has no pod"
    )


def test_npa003_named_port_no_destination_declares() -> None:
    typo = _web("web", {"ingress": [{"ports": [{"port": "htp"}]}]})
    assert _run("NPA003", typo) == [
        'web spec.ingress[0].ports[0].port: named port "htp" (TCP) is declared by no container of the pods the '
        "policy selects: this port entry admits nothing"
    ]
    assert _run("NPA003", _web("web", {"ingress": [{"ports": [{"port": "http"}]}]})) == []


def test_npa004_shadowed_rule() -> None:
    allow_all = policy("x", "allow-all", {"podSelector": {}, "ingress": [{}]})
    narrow = _web("web", {"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]})
    assert _run("NPA004", allow_all, narrow) == [
        "web spec.ingress[0]: admits nothing that spec.ingress[0] of x/allow-all does not already admit to every pod "
        "this policy selects: redundant"
    ]
    # The wider rule applies to fewer pods: nothing shadowed.
    assert _run("NPA004", _web("web-all", {"ingress": [{}]}), policy("x", "db", {"podSelector": {}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]})) == []  # fmt: skip


def test_npa005_ip_block_matching_pod_ips() -> None:
    wide = _web("web", {"policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]})
    assert _run("NPA005", wide) == [
        "web spec.egress[0].to[0].ipBlock: ipBlock 10.0.0.0/8 matches the IPs of pods of the input (x/db 10.0.0.2, "
        "x/web 10.0.0.1): an ipBlock admits pods by their IP too; leave the pod network out with except, and select "
        "pods with podSelector/namespaceSelector"
    ]
    excepted = _web(
        "web",
        {"policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]},
    )
    assert _run("NPA005", excepted) == []
    # Without pod IPs (manifests), the pod network given instead.
    written = [pod("x", "web", None, {"app": "web"})]
    assert _run("NPA005", wide, pods=written) == []
    assert _run("NPA005", wide, pods=written, pod_cidrs=["10.244.0.0/16"])[0].startswith(
        "web spec.egress[0].to[0].ipBlock: ipBlock 10.0.0.0/8 matches addresses of the pod network 10.244.0.0/16:"
    )
    assert _run("NPA005", excepted, pods=written, pod_cidrs=["10.244.0.0/16"]) == []


def test_npa006_namespace_without_default_deny_for_ingress() -> None:
    assert _run("NPA006", _web("web", {})) == [
        "x : no NetworkPolicy with an empty podSelector lists Ingress in policyTypes: pods no policy selects for "
        "ingress are open to every source (a default deny for ingress closes them)"
    ]
    assert _run("NPA006", DEFAULT_DENY) == []
    assert _run("NPA006", pods=[pod("x", "node-agent", "192.168.0.1", host_network=True)]) == []


def test_npa007_namespace_without_default_deny_for_egress_is_off_by_default() -> None:
    ingress_only = policy("x", "default-deny", {"podSelector": {}})
    assert len(_run("NPA007", ingress_only)) == 1
    assert _run("NPA007", DEFAULT_DENY) == []
    data = LintInput([ingress_only], _pods(), [])
    assert [f.check.id for f in lint(data, {c.id for c in CHECKS if c.default})] == []


def test_findings_name_file_object_and_field() -> None:
    typo = policy("x", "api", {"podSelector": {"matchLabels": {"app": "wbe"}}})
    data = LintInput([typo], _pods(), sources={("NetworkPolicy", "x", "api"): "np.yaml"})
    found: list[Finding] = lint(data, ALL)
    assert [str(f) for f in found if f.check.id == "NPA001"] == [
        "np.yaml: warning NPA001: NetworkPolicy x/api: spec.podSelector: podSelector app=wbe selects no pod of the "
        "input in namespace x: the policy has no effect"
    ]
    namespace = next(f for f in found if f.check.id == "NPA006")
    assert str(namespace).startswith("warning NPA006: Namespace x: no NetworkPolicy")
    assert namespace.to_dict()["path"] is None and namespace.to_dict()["file"] is None
