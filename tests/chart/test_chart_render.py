"""The Helm chart, rendered by the real ``helm``: lint, toggles, operator configuration, Pod Security, RBAC, schema."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import (
    CHART,
    FORBIDDEN,
    NAMESPACE,
    NEEDED,
    RELEASE,
    Render,
    copy_chart,
    find,
    one,
    operator_options,
    run_helm,
    set_args,
)

from netpol_auditor.controller.scope import NamespaceScope
from netpol_auditor.controller.settings import Settings, settings_from_args
from netpol_auditor.model import PortProtocol
from netpol_auditor.prober.coverage import namespace_selected

FULLNAME = f"{RELEASE}-netpol-auditor"
POLICY = f"{FULLNAME}-probe-pods"
DIGEST = "sha256:" + "ab" * 32

#: Every probe.* value that shapes probe pods, set to something other than its default.
PROBE_POD_VALUES: dict[str, Any] = {
    "probe.systemNamespaces": True,
    "probe.nodeSelector": {"kubernetes.io/os": None, "node-role.example.com/probe": "yes"},
    "probe.tolerations": [{"key": "dedicated", "operator": "Equal", "value": "net", "effect": "NoSchedule"}],
    "probe.podLabels": {"team": "netsec"},
    "probe.podAnnotations": {"example.com/owner": "netsec"},
    "probe.imagePullSecrets": ["regcred", "mirror"],
    "probe.priorityClassName": "probe-low",
    "probe.resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "20m", "memory": "16Mi"}},
    "probe.meshOptOut": False,
    "probe.backoffSeconds": 5,
    "probe.backoffMaxSeconds": 120,
}

ALL_TOGGLES = {"serviceMonitor.enabled": True, "prometheusRule.enabled": True, "grafanaDashboard.enabled": True,
               "networkPolicy.enabled": True}

# Value sets every test-worthy combination is linted and rendered with.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "all-toggles": ALL_TOGGLES,
    "probe-restricted": {"probe.namespaces": ["shop", "payments"]},
    "namespaced": {"namespaces": ["shop", "payments"]},
    "namespace-patterns": {"namespaces": ["shop", "team-*", "!team-sandbox"], "peering.enabled": False},
    "namespace-selector": {"namespaceSelector": "team=payments,!netpol-auditor.io/ignore"},
    "standalone": {"peering.enabled": False},
    "no-probes": {"probe.enabled": False},
    "ha": {"replicaCount": 2, "priorityClassName": "system-cluster-critical",
           "nodeSelector": {"kubernetes.io/os": "linux"}, "tolerations": [{"operator": "Exists"}]},
    "external-sa": {"serviceAccount.create": False, "serviceAccount.name": "auditor", "rbac.create": False,
                    "metrics.service.enabled": False},
    "probe-pods": {**PROBE_POD_VALUES, "probe.image.digest": DIGEST, "image.digest": DIGEST},
    "no-admission-policy": {"probe.admissionPolicy.enabled": False},
}


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", FULLNAME)


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = _deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(docs)["env"] if "value" in e}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_strict(helm: Path, name: str) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *set_args(VALUE_SETS[name]))
    assert "0 chart(s) failed" in proc.stdout


def test_default_render_is_the_operator_and_nothing_optional(render: Render) -> None:
    docs = render()
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == sorted([
        ("ServiceAccount", FULLNAME), ("ClusterRole", FULLNAME), ("ClusterRoleBinding", FULLNAME),
        ("Service", f"{FULLNAME}-metrics"), ("Deployment", FULLNAME), ("ClusterKopfPeering", FULLNAME),
        ("ValidatingAdmissionPolicy", POLICY), ("ValidatingAdmissionPolicyBinding", POLICY),
    ])
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering", "ValidatingAdmissionPolicy",
                               "ValidatingAdmissionPolicyBinding"):
            assert doc["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize(("toggle", "kind"), [
    ("serviceMonitor.enabled", "ServiceMonitor"),
    ("prometheusRule.enabled", "PrometheusRule"),
    ("grafanaDashboard.enabled", "ConfigMap"),
    ("networkPolicy.enabled", "NetworkPolicy"),
])
def test_each_toggle_adds_exactly_its_object(render: Render, toggle: str, kind: str) -> None:
    assert not find(render(), kind)
    docs = render({toggle: True})
    assert len(find(docs, kind)) == 1
    assert len(docs) == len(render()) + 1


def test_service_monitor_scrapes_the_metrics_service(render: Render) -> None:
    docs = render({"serviceMonitor.enabled": True, "serviceMonitor.labels": {"release": "prom"}})
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", f"{FULLNAME}-metrics")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # The Service routes to the container's metrics port.
    assert service["spec"]["selector"].items() <= \
        _deployment(docs)["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in _container(docs)["ports"]}


def test_service_monitor_without_service_is_refused(helm: Path) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART),
                    *set_args({"serviceMonitor.enabled": True, "metrics.service.enabled": False}), check=False)
    assert proc.returncode != 0
    assert "metrics.service.enabled" in proc.stderr




def test_deployment_configures_the_operator_through_its_real_options(render: Render) -> None:
    """Every variable the chart sets is one `netpol-auditor run` reads, and the values arrive as configured."""
    docs = render({"metrics.ports": ["80/TCP", "53/UDP"], "probe.intervalSeconds": 120, "probe.maxPods": 4,
                   "probe.pairGroups": 50,
                   "namespaces": ["shop", "team-*"], "log.level": "DEBUG", "peering.enabled": False,
                   "namespaceSelector": "env!=dev"})
    env = _env(docs)
    options = operator_options()
    unknown = sorted(set(env) - set(options))
    assert not unknown, f"the chart sets variables the operator does not read: {unknown}"
    settings = settings_from_args(None, env=env)
    assert settings.metrics_port == 9090
    assert settings.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    assert settings.ports == (PortProtocol.parse("53/UDP"), PortProtocol.parse("80/TCP"))
    assert settings.namespaces == ("!*,shop,team-*",)  # one kopf pattern in which each listed glob includes
    assert settings.namespace_selector == "env!=dev"
    assert settings.standalone
    peered = settings_from_args(None, env=_env(render({"peering.priority": 10})))
    assert peered.peering_name == FULLNAME and not peered.standalone and peered.priority == 10
    assert settings.probe_enabled and settings.probe_interval_seconds == 120 and settings.probe_max_pods == 4
    assert settings.probe_pair_groups == 50
    assert settings.probe_image == "nicolaka/netshoot:v0.13"
    assert settings.probe_namespaces == ()
    assert (settings.probe_targets_per_pod, settings.probe_timeout_seconds) == (40, 2)
    assert (settings.probe_settle_seconds, settings.probe_retry_seconds) == (5, 10)
    assert settings.log_format == "json" and settings.log_level == "DEBUG"
    assert settings.max_path_series == 20000


def test_defaults_of_chart_and_operator_agree_where_the_chart_adds_nothing(render: Render) -> None:
    docs = render()
    settings = settings_from_args(None, env=_env(docs))
    assert settings.clusterwide
    # No Service-link variables in the NETPOL_AUDITOR_* namespace (a Service named netpol-auditor-metrics would
    # inject NETPOL_AUDITOR_METRICS_PORT=tcp://...).
    assert _deployment(docs)["spec"]["template"]["spec"]["enableServiceLinks"] is False
    assert settings.ports == ()  # the ports pods declare
    assert settings.events_enabled


def test_standalone_when_peering_is_off(render: Render) -> None:
    docs = render({"peering.enabled": False})
    assert settings_from_args(None, env=_env(docs)).standalone
    assert not find(docs, "ClusterKopfPeering")
    assert _deployment(docs)["spec"]["strategy"]["type"] == "Recreate"


def test_namespaced_operator_peers_through_kopfpeerings_in_literal_namespaces(render: Render) -> None:
    docs = render({"namespaces": ["shop", "payments"]})
    assert not find(docs, "ClusterKopfPeering")
    assert sorted(d["metadata"]["namespace"] for d in find(docs, "KopfPeering")) == ["payments", "shop"]


def test_namespace_patterns_with_peering_are_refused_naming_the_way_out(helm: Path) -> None:
    """kopf would hold the operator paused for ever, waiting for a KopfPeering in each namespace a glob matches."""
    proc = run_helm(helm, "template", RELEASE, str(CHART), *set_args({"namespaces": ["shop", "team-*"]}), check=False)
    assert proc.returncode != 0
    assert '"team-*" is a pattern' in proc.stderr and "namespaceSelector" in proc.stderr, proc.stderr


def test_a_namespace_selector_keeps_cluster_wide_peering(render: Render) -> None:
    docs = render({"namespaceSelector": "team=payments"})
    assert one(docs, "ClusterKopfPeering") and not find(docs, "KopfPeering")
    assert _env(docs)["NETPOL_AUDITOR_NAMESPACE_SELECTOR"] == "team=payments"


def test_container_ports_and_health_checks_match_the_operator_endpoints(render: Render) -> None:
    container = _container(render())
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9090, "health": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # The image's ENTRYPOINT (`netpol-auditor run`) is what runs: the chart overrides neither command nor args.
    assert "command" not in container and "args" not in container
    assert container["image"] == "netpol-auditor/netpol-auditor:0.1.0"


def test_scheduling_values_reach_the_pod(render: Render) -> None:
    values = VALUE_SETS["ha"]
    docs = render(values)
    pod = _deployment(docs)["spec"]["template"]["spec"]
    assert _deployment(docs)["spec"]["replicas"] == 2
    assert _deployment(docs)["spec"]["strategy"]["type"] == "RollingUpdate"
    assert pod["priorityClassName"] == values["priorityClassName"]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]


def test_operator_pod_meets_the_restricted_pod_security_standard(render: Render) -> None:
    """The checks of the `restricted` profile (kubernetes.io/docs/concepts/security/pod-security-standards)."""
    pod = _deployment(render())["spec"]["template"]["spec"]
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert all("hostPath" not in v for v in pod.get("volumes", []))
    pod_sc = pod.get("securityContext", {})
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c.get("securityContext", {})
        assert sc.get("privileged") in (None, False)
        assert sc.get("allowPrivilegeEscalation") is False
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
        assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        assert seccomp in ("RuntimeDefault", "Localhost")
        assert sc.get("readOnlyRootFilesystem") is True
        assert not any("hostPort" in p for p in c.get("ports", []))


def _rules(docs: list[dict[str, Any]], kind: str = "ClusterRole", name: str = FULLNAME) -> list[dict[str, Any]]:
    return list(one(docs, kind, name)["rules"])


def _allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any((group in r["apiGroups"] or "*" in r["apiGroups"])
               and (resource in r["resources"] or "*" in r["resources"])
               and (verb in r["verbs"] or "*" in r["verbs"]) for r in rules)


def test_cluster_role_grants_what_the_operator_needs(render: Render) -> None:
    rules = _rules(render())
    for group, resource, verbs in NEEDED:
        for verb in verbs:
            assert _allowed(rules, group, resource, verb), f"missing {verb} {resource}.{group}"


def test_cluster_role_is_least_privilege(render: Render) -> None:
    rules = _rules(render(ALL_TOGGLES))
    for rule in rules:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
        assert "resourceNames" not in rule or rule["resourceNames"]
    for group, resource, verbs in FORBIDDEN:
        for verb in verbs:
            assert not _allowed(rules, group, resource, verb), f"grants {verb} {resource}.{group}"


def test_cluster_role_binds_the_operator_service_account(render: Render) -> None:
    docs = render()
    binding = one(docs, "ClusterRoleBinding", FULLNAME)
    sa = one(docs, "ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FULLNAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}]
    assert _deployment(docs)["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_probe_pods_restricted_to_opted_in_namespaces(render: Render) -> None:
    docs = render({"probe.namespaces": ["shop", "payments"]})
    probe_namespaces = settings_from_args(None, env=_env(docs)).probe_namespaces
    assert probe_namespaces == ("shop", "payments")
    assert [ns for ns in ("shop", "payments", "billing") if namespace_selected(ns, probe_namespaces)] == [
        "shop", "payments"]
    rules = _rules(docs)
    assert not _allowed(rules, "", "pods", "create") and not _allowed(rules, "", "pods", "delete")
    assert _allowed(rules, "", "pods", "watch")  # the index still sees every pod
    roles = {r["metadata"]["namespace"]: r for r in find(docs, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in find(docs, "RoleBinding")}
    assert set(roles) == set(bindings) == {"shop", "payments"}
    for ns, role in roles.items():
        assert _allowed(role["rules"], "", "pods", "create") and _allowed(role["rules"], "", "pods", "delete")
        assert not _allowed(role["rules"], "", "secrets", "get")
        assert bindings[ns]["roleRef"]["name"] == role["metadata"]["name"]
        assert bindings[ns]["subjects"][0]["namespace"] == NAMESPACE


def test_no_probe_rbac_without_probes(render: Render) -> None:
    docs = render({"probe.enabled": False, "probe.namespaces": ["shop"]})
    assert not _allowed(_rules(docs), "", "pods", "create")
    assert not find(docs, "Role")


def _crds(chart: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted((chart / "crds").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_cluster_role_covers_every_crd_the_chart_ships(render: Render) -> None:
    rules = _rules(render())
    crds = _crds(CHART)
    assert {c["spec"]["names"]["kind"] for c in crds} >= {"ClusterKopfPeering", "KopfPeering", "ProbeRun"}
    for crd in crds:
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        for verb in ("get", "list", "watch", "patch"):
            assert _allowed(rules, group, plural, verb), f"{verb} {plural}.{group}"


def test_a_crd_added_to_crds_is_granted_without_editing_templates(render: Render, tmp_path: Path) -> None:
    chart = copy_chart(tmp_path)
    (chart / "crds" / "widgets.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.org"},
        "spec": {"group": "example.org", "scope": "Cluster",
                 "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object"}}}]}}))
    rules = _rules(render(chart=chart))
    assert _allowed(rules, "example.org", "widgets", "create")
    assert not _allowed(_rules(render()), "example.org", "widgets", "create")


@pytest.mark.parametrize(("values", "complaint"), [
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"replicaCount": -1}, "/replicaCount"),
    ({"replicas": 2}, "replicas"),
    ({"image.repository": 5}, "/image/repository"),
    ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy"),
    ({"serviceMonitor.enabled": "yes"}, "/serviceMonitor/enabled"),
    ({"prometheusRule.enabled": 1}, "/prometheusRule/enabled"),
    ({"grafanaDashboard.labels": {"grafana_dashboard": 1}}, "/grafanaDashboard/labels"),
    ({"networkPolicy.apiServer.ports": [0]}, "/networkPolicy/apiServer/ports"),
    ({"metrics.port": 70000}, "/metrics/port"),
    ({"metrics.ports": ["http"]}, "/metrics/ports"),
    ({"metrics.ports": "80/TCP"}, "/metrics/ports"),
    ({"namespaces": "shop"}, "/namespaces"),
    ({"namespaceSelector": ["team=a"]}, "/namespaceSelector"),
    ({"namespaceSelector": "team>3"}, "/namespaceSelector"),
    ({"log.format": "xml"}, "/log/format"),
    ({"probe.maxPods": 0}, "/probe/maxPods"),
    ({"probe.intervalSeconds": 0}, "/probe/intervalSeconds"),
    ({"probe.namespaces": ["Not_A_Namespace"]}, "/probe/namespaces"),
    ({"probe.image.tag": ""}, "/probe/image/tag"),
    ({"resources": "small"}, "/resources"),
    ({"nodeSelector": {"disk": True}}, "/nodeSelector"),
])
def test_schema_rejects_wrong_values(helm: Path, values: dict[str, Any], complaint: str) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART), *set_args(values), check=False)
    assert proc.returncode != 0
    assert "schema" in proc.stderr and complaint in proc.stderr, proc.stderr


def test_schema_accepts_what_the_values_file_documents(render: Render) -> None:
    docs = render({"metrics.ports": ["80/TCP", "53/UDP", "8080"], "namespaces": ["team-*", "!team-sandbox"],
                   "peering.enabled": False, "namespaceSelector": "env in (prod, staging),!skip",
                   "extraEnv": [{"name": "NETPOL_AUDITOR_EVENTS_PER_MINUTE", "value": "5"}],
                   "grafanaDashboard.annotations": {"grafana_folder": "Security"}})
    assert one(docs, "Deployment")


def test_prometheus_rule_is_the_plain_rules_file(render: Render) -> None:
    """The rules file, but for the install selector (test_chart_monitoring checks what replaces it)."""
    docs = render({"prometheusRule.enabled": True, "prometheusRule.labels": {"release": "prom"},
                   "prometheusRule.selector": 'job="netpol-auditor"'})
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())


def test_grafana_dashboard_configmap_for_the_sidecar(render: Render) -> None:
    docs = render({"grafanaDashboard.enabled": True, "grafanaDashboard.namespace": "monitoring"})
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    (name, text), = cm["data"].items()
    assert name.endswith(".json")
    assert json.loads(text) == json.loads((CHART / "files" / "dashboard.json").read_text())


def test_operator_network_policy(render: Render) -> None:
    docs = render({"networkPolicy.enabled": True})
    policy = one(docs, "NetworkPolicy")["spec"]
    pod_labels = _deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    container_ports = {p["name"] for p in _container(docs)["ports"]}
    ingress_ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress_ports == container_ports == {"metrics", "health"}
    egress_ports = sorted((p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"])
    assert egress_ports == [("TCP", 53), ("TCP", 443), ("TCP", 6443), ("UDP", 53)]

    custom = render({"networkPolicy.enabled": True, "networkPolicy.apiServer.cidrs": ["10.96.0.1/32"],
                     "networkPolicy.dns": False,
                     "networkPolicy.metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]})
    spec = one(custom, "NetworkPolicy")["spec"]
    assert spec["egress"] == [{"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
                               "to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}]}]
    assert spec["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]


def test_fullname_override_names_every_object(render: Render) -> None:
    docs = render({"fullnameOverride": "auditor", **ALL_TOGGLES})
    for doc in docs:
        assert doc["metadata"]["name"].startswith("auditor"), doc["metadata"]


def test_packaged_chart_renders_the_same(helm: Path, render: Render, tmp_path: Path) -> None:
    """`helm package` keeps crds/ and files/, so the packaged chart grants the same RBAC and ships the alerts."""
    run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("netpol-auditor-*.tgz")
    packaged = render(ALL_TOGGLES, chart=archive)
    assert _rules(packaged) == _rules(render(ALL_TOGGLES))
    assert one(packaged, "PrometheusRule")["spec"] == one(render(ALL_TOGGLES), "PrometheusRule")["spec"]


def _env_entry(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (entry,) = [e for e in _container(docs)["env"] if e["name"] == name]
    return dict(entry)


def test_probe_pod_values_reach_the_operator_settings(render: Render) -> None:
    """Every probe.* value that shapes probe pods arrives, parsed by the operator's own settings code."""
    docs = render(PROBE_POD_VALUES)
    env = _env(docs)
    assert not sorted(set(env) - set(operator_options()))
    settings = settings_from_args(None, env=env)
    assert settings.probe_system_namespaces is True
    assert settings.probe_node_selector == {"node-role.example.com/probe": "yes"}
    assert settings.probe_tolerations == tuple(PROBE_POD_VALUES["probe.tolerations"])
    assert settings.probe_labels == {"team": "netsec"}
    assert settings.probe_annotations == {"example.com/owner": "netsec"}
    assert settings.probe_image_pull_secrets == ("regcred", "mirror")
    assert settings.probe_priority_class_name == "probe-low"
    assert settings.probe_resources == PROBE_POD_VALUES["probe.resources"]
    assert settings.probe_mesh_opt_out is False
    assert (settings.probe_backoff_seconds, settings.probe_backoff_max_seconds) == (5, 120)


def test_probe_pod_defaults_of_chart_and_operator_agree(render: Render) -> None:
    settings = settings_from_args(None, env=_env(render()))
    assert settings.probe_system_namespaces is False
    assert settings.probe_node_selector == {"kubernetes.io/os": "linux"}
    assert settings.probe_tolerations == () and settings.probe_image_pull_secrets == ()
    assert settings.probe_labels == {} and settings.probe_annotations == {}
    assert settings.probe_priority_class_name == ""
    # the operator's own defaults: a limit/request ratio of 2, within the usual LimitRange maxLimitRequestRatio
    assert settings.probe_resources == Settings().probe_resources == {
        "requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}
    assert settings.probe_mesh_opt_out is True
    assert (settings.probe_backoff_seconds, settings.probe_backoff_max_seconds) == (10, 600)
    # Helm merges maps with the defaults: `{}` keeps the default; null means any node (not the operator's default).
    assert settings_from_args(None, env=_env(render({"probe.nodeSelector": {}}))).probe_node_selector == \
        {"kubernetes.io/os": "linux"}
    for key, setting in (("probe.nodeSelector", "probe_node_selector"), ("probe.resources", "probe_resources"),
                         ("probe.tolerations", "probe_tolerations"), ("probe.podLabels", "probe_labels")):
        assert not getattr(settings_from_args(None, env=_env(render({key: None}))), setting), key


def test_operator_namespace_comes_from_the_downward_api(render: Render) -> None:
    docs = render()
    entry = _env_entry(docs, "NETPOL_AUDITOR_OPERATOR_NAMESPACE")
    assert entry["name"] in operator_options()
    assert entry["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def _install_id(namespace: str, release: str = RELEASE) -> str:
    return hashlib.sha256(f"{namespace}/{release}".encode()).hexdigest()[:12]


def test_probe_pods_carry_the_release_and_a_per_install_identity(render: Render) -> None:
    """The same release name in two namespaces gets two install ids: one's start-up sweep never deletes the other's
    probe pods."""
    settings = settings_from_args(None, env=_env(render()))
    assert settings.probe_instance == RELEASE
    assert settings.probe_install_id == _install_id(NAMESPACE)
    other = settings_from_args(None, env=_env(render(namespace="elsewhere")))
    assert other.probe_install_id == _install_id("elsewhere") != settings.probe_install_id


def test_prober_reads_nodes_only_with_probes(render: Render) -> None:
    rules = _rules(render())
    for verb in ("get", "list", "watch"):
        assert _allowed(rules, "", "nodes", verb)
    for verb in ("create", "update", "patch", "delete"):
        assert not _allowed(rules, "", "nodes", verb)
    off = _rules(render({"probe.enabled": False}))
    assert not any(_allowed(off, "", "nodes", verb) for verb in ("get", "list", "watch"))


def test_digests_pin_the_images(render: Render) -> None:
    docs = render({"probe.image.digest": DIGEST, "image.digest": DIGEST})
    assert _container(docs)["image"] == f"netpol-auditor/netpol-auditor@{DIGEST}"
    probe_image = f"nicolaka/netshoot@{DIGEST}"
    assert settings_from_args(None, env=_env(docs)).probe_image == probe_image
    # The admission policy admits exactly the image the operator puts on its pods.
    assert _policy_image(docs) == probe_image
    assert _policy_image(render()) == _env(render())["NETPOL_AUDITOR_PROBE_IMAGE"] == "nicolaka/netshoot:v0.13"


def _validations(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The policy's validations by rule name (the start of each message)."""
    policy = one(docs, "ValidatingAdmissionPolicy", POLICY)
    return {v["message"].split(":", 1)[0]: v for v in policy["spec"]["validations"]}


def _policy_image(docs: list[dict[str, Any]]) -> str:
    expression = _validations(docs)["probe-image"]["expression"]
    return str(json.loads(expression.split("==", 1)[1].strip().removesuffix(")")))


def test_admission_policy_is_installed_by_default_and_bound_to_deny(render: Render) -> None:
    docs = render()
    policy = one(docs, "ValidatingAdmissionPolicy", POLICY)
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["spec"]["failurePolicy"] == "Fail"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == [""] and "pods" in rule["resources"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE"}
    (condition,) = policy["spec"]["matchConditions"]
    user = f"system:serviceaccount:{NAMESPACE}:{one(docs, 'ServiceAccount')['metadata']['name']}"
    assert condition["expression"] == f'request.userInfo.username == "{user}"'
    binding = one(docs, "ValidatingAdmissionPolicyBinding", POLICY)
    assert binding["spec"] == {"policyName": POLICY, "validationActions": ["Deny"]}
    assert set(_validations(docs)) == {
        "label-managed-by", "label-instance", "label-install", "probe-image", "no-privileged",
        "no-privilege-escalation", "no-added-capabilities", "non-root", "no-host-namespaces", "no-host-ports",
        "no-volumes", "no-service-account-token", "sysctls", "namespace"}
    assert all(v["reason"] == "Forbidden" for v in policy["spec"]["validations"])


def test_admission_policy_checks_this_installs_identity(render: Render) -> None:
    settings = settings_from_args(None, env=_env(render()))
    rules = _validations(render())
    assert f"optional.of({json.dumps(settings.probe_instance)})" in rules["label-instance"]["expression"]
    assert f"optional.of({json.dumps(settings.probe_install_id)})" in rules["label-install"]["expression"]
    assert rules["namespace"]["expression"] == f'!(request.namespace in ["kube-system","{NAMESPACE}"])'
    external = render({"serviceAccount.create": False, "serviceAccount.name": "auditor"})
    (condition,) = one(external, "ValidatingAdmissionPolicy")["spec"]["matchConditions"]
    assert condition["expression"].endswith(f'"system:serviceaccount:{NAMESPACE}:auditor"')


def test_system_namespaces_drop_only_the_namespace_rule(render: Render) -> None:
    rules = _validations(render({"probe.systemNamespaces": True}))
    assert "namespace" not in rules and "probe-image" in rules


@pytest.mark.parametrize("values", [{"probe.admissionPolicy.enabled": False}, {"probe.enabled": False}])
def test_no_admission_policy_when_disabled(render: Render, values: dict[str, Any]) -> None:
    docs = render(values)
    assert not find(docs, "ValidatingAdmissionPolicy") and not find(docs, "ValidatingAdmissionPolicyBinding")


def test_admission_policy_needs_kubernetes_1_30(helm: Path, render: Render) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", "1.29.0", check=False)
    assert proc.returncode != 0 and "probe.admissionPolicy.enabled=false" in proc.stderr, proc.stderr
    assert one(render({"probe.admissionPolicy.enabled": False}, extra=["--kube-version", "1.29.0"]), "Deployment")


@pytest.mark.parametrize(("values", "complaint"), [
    ({"probe.image.digest": "latest"}, "/probe/image/digest"),
    ({"image.digest": "sha256:abc"}, "/image/digest"),
    ({"probe.imagePullSecrets": [{"name": "regcred"}]}, "/probe/imagePullSecrets"),
    ({"probe.nodeSelector": {"ssd": True}}, "/probe/nodeSelector"),
    ({"probe.tolerations": [{"operator": "Matches"}]}, "/probe/tolerations"),
    ({"probe.podLabels": {"n": 1}}, "/probe/podLabels"),
    ({"probe.resources": {"requests": {"cpu": ["1"]}}}, "/probe/resources"),
    ({"probe.meshOptOut": "yes"}, "/probe/meshOptOut"),
    ({"probe.systemNamespaces": 1}, "/probe/systemNamespaces"),
    ({"probe.backoffSeconds": -1}, "/probe/backoffSeconds"),
    ({"probe.admissionPolicy.enabled": "true"}, "/probe/admissionPolicy/enabled"),
])
def test_schema_rejects_wrong_probe_pod_values(helm: Path, values: dict[str, Any], complaint: str) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART), *set_args(values), check=False)
    assert proc.returncode != 0
    assert "schema" in proc.stderr and complaint in proc.stderr, proc.stderr


@pytest.mark.parametrize(("namespaces", "audited"), [
    ([], ["shop", "payments", "team-a", "team-sandbox", "kube-system"]),
    (["shop", "payments"], ["shop", "payments"]),  # every listed name, not only the first (kopf's "shop,payments")
    (["team-*", "!team-sandbox"], ["team-a"]),
    (["!kube-system", "!team-*"], ["shop", "payments"]),
])
def test_listed_namespaces_are_each_audited(render: Render, namespaces: list[str], audited: list[str]) -> None:
    """What the operator's watches cover, from the rendered environment through the operator's own settings and
    kopf's matcher."""
    scope = NamespaceScope(settings_from_args(None, env=_env(render({"namespaces": namespaces,
                                                                      "peering.enabled": False}))).namespaces)
    candidates = ["shop", "payments", "team-a", "team-sandbox", "kube-system"]
    assert [ns for ns in candidates if scope.watches(ns)] == audited
