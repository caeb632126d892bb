"""Workloads as endpoints (`netpol_auditor.workloads`) and how they are parsed (`manifests.parse_workload`)."""

from __future__ import annotations

from typing import Any

import pytest
from core_builders import cnp_dict, parse, pod, pod_dict, policy

from netpol_auditor.cluster_policy import ClusterPolicy
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import ManifestError, parse_object, parse_workload
from netpol_auditor.model import ContainerPort, Labels, LabelSelector, Pod, PodRef, PortProtocol, Workload
from netpol_auditor.workloads import endpoints, ip_block_policies, running_workload, template_pod

APP = {"app": "web"}


def workload_dict(kind: str, name: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
    }
    spec: dict[str, Any] = {"selector": {"matchLabels": labels}, "template": template}
    if kind == "CronJob":
        spec = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
    elif kind == "ReplicationController":
        spec["selector"] = labels
    meta: dict[str, Any] = {"name": name, "namespace": "prod", **extra}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec}


def workload(kind: str, name: str, labels: dict[str, str] | None = None, **extra: Any) -> Workload:
    out = parse_workload(workload_dict(kind, name, labels or APP, **extra))
    assert out is not None
    return out


def owned(kind: str, name: str) -> dict[str, Any]:
    return {"ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u", "controller": True}]}


def owned_pod(name: str, labels: dict[str, str], owner: tuple[str, str] | None = None) -> Pod:
    raw = pod_dict("prod", name, "10.0.0.9", labels)
    if owner is not None:
        raw["metadata"].update(owned(*owner))
    out = parse_object(raw)
    assert isinstance(out, Pod)
    return out


# -- parsing ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob"]
)
def test_every_workload_kind_gives_its_template(kind: str) -> None:
    w = workload(kind, "web")
    assert (w.kind, w.namespace, w.name) == (kind, "prod", "web")
    assert w.labels == Labels(APP)
    assert w.container_ports == (ContainerPort(8080, name="http"),)
    assert w.selector == (None if kind == "CronJob" else LabelSelector(Labels(APP)))


def test_workload_owner_and_default_namespace() -> None:
    raw = workload_dict("ReplicaSet", "web-5d4f", APP, **owned("Deployment", "web"))
    del raw["metadata"]["namespace"]
    w = parse_workload(raw)
    assert w is not None
    assert (w.namespace, w.owner_kind, w.owner_name) == ("default", "Deployment", "web")


def test_workload_errors_name_the_template_field() -> None:
    raw = workload_dict("CronJob", "backup", {"app": "b c"})
    where = r"CronJob prod/backup: spec\.jobTemplate\.spec\.template\.metadata\.labels"
    with pytest.raises(ManifestError, match=where):
        parse_workload(raw)
    raw = workload_dict("Deployment", "web", APP)
    del raw["spec"]["template"]
    with pytest.raises(ManifestError, match=r"Deployment prod/web: spec\.template: Required value"):
        parse_workload(raw)


def test_other_kinds_are_no_workloads() -> None:
    assert parse_workload({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}) is None
    assert parse_object(workload_dict("Deployment", "web", APP)) is None


@pytest.mark.parametrize(("status", "planned"), [(None, True), ({}, True), ({"phase": "Pending"}, False)])
def test_a_pod_without_status_is_a_planned_endpoint(status: dict[str, Any] | None, planned: bool) -> None:
    raw = pod_dict("prod", "web", None, APP)
    del raw["status"]
    if status is not None:
        raw["status"] = status
    p = parse_object(raw)
    assert isinstance(p, Pod)
    assert (p.planned, p.is_endpoint, p.pod_ips) == (planned, planned, ())


def test_a_planned_host_network_pod_is_not_an_endpoint() -> None:
    assert not Pod("prod", "agent", host_network=True, planned=True).is_endpoint


# -- endpoints and folding --------------------------------------------------------------------------------------


def names(found: Any) -> list[str]:
    return [str(p.ref) for p in found.pods]


def test_each_workload_and_each_other_pod_is_one_endpoint() -> None:
    found = endpoints([workload("Deployment", "web"), workload("CronJob", "backup")], [pod("prod", "debug", None)])
    assert names(found) == ["prod/backup[CronJob]", "prod/debug[Pod]", "prod/web[Deployment]"]
    web = found.pods[2]
    assert (web.planned, web.pod_ips, web.labels) == (True, (), Labels(APP))
    assert found.folded == {}


def test_owner_chain_folds_pods_and_replica_sets_into_the_deployment() -> None:
    rs = workload("ReplicaSet", "web-5d4f", {**APP, "pod-template-hash": "5d4f"}, **owned("Deployment", "web"))
    pods = [owned_pod(f"web-5d4f-{i}", {**APP, "pod-template-hash": "5d4f"}, ("ReplicaSet", "web-5d4f")) for i in "ab"]
    found = endpoints([workload("Deployment", "web"), rs], pods)
    assert names(found) == ["prod/web[Deployment]"]
    assert found.folded == {p.ref: PodRef("prod", "web[Deployment]") for p in pods}


def test_job_pods_fold_through_the_job_into_the_cron_job() -> None:
    job = workload("Job", "backup-2890", **owned("CronJob", "backup"))
    found = endpoints([workload("CronJob", "backup"), job], [owned_pod("backup-2890-x", APP, ("Job", "backup-2890"))])
    assert names(found) == ["prod/backup[CronJob]"]
    assert set(found.folded.values()) == {PodRef("prod", "backup[CronJob]")}


def test_an_unlisted_replica_set_is_matched_to_its_deployment_by_name() -> None:
    p = owned_pod("web-5d4f-a", {**APP, "pod-template-hash": "5d4f"}, ("ReplicaSet", "web-5d4f"))
    assert names(endpoints([workload("Deployment", "web")], [p])) == ["prod/web[Deployment]"]
    other = owned_pod("api-5d4f-a", {**APP, "pod-template-hash": "5d4f"}, ("ReplicaSet", "api-5d4f"))
    assert names(endpoints([workload("Deployment", "web")], [other])) == [
        "prod/api-5d4f-a[Pod]", "prod/web[Deployment]",
    ]  # fmt: skip


def test_without_owner_references_the_controller_label_and_selector_decide() -> None:
    hashed = owned_pod("web-5d4f-a", {**APP, "pod-template-hash": "5d4f"})
    plain = owned_pod("web-by-hand", APP)  # the selector matches, but no controller made it
    revision = owned_pod("db-0", {"app": "db", "controller-revision-hash": "db-7c"})
    listed = [workload("Deployment", "web"), workload("StatefulSet", "db", {"app": "db"})]
    found = endpoints(listed, [hashed, plain, revision])
    assert names(found) == ["prod/db[StatefulSet]", "prod/web-by-hand[Pod]", "prod/web[Deployment]"]
    assert found.folded == {
        hashed.ref: PodRef("prod", "web[Deployment]"), revision.ref: PodRef("prod", "db[StatefulSet]"),
    }  # fmt: skip
    # Two Deployments selecting the pod: which one made it is unknown, so it stays a Pod.
    twins = endpoints([*listed, workload("Deployment", "web-canary")], [hashed])
    assert "prod/web-5d4f-a[Pod]" in names(twins)


def test_a_folded_pod_is_judged_as_its_workload() -> None:
    from_web = {"podSelector": {"matchLabels": APP}}
    deny_but_web = policy("prod", "p", {"podSelector": {}, "ingress": [{"from": [from_web]}]})
    found = endpoints(
        [workload("Deployment", "web"), workload("StatefulSet", "db", {"app": "db"})],
        [owned_pod("db-0", {"app": "db"}, ("StatefulSet", "db"))],
    )
    index = ReachabilityIndex.from_objects([deny_but_web, *found.pods])
    web, db = PodRef("prod", "web[Deployment]"), PodRef("prod", "db[StatefulSet]")
    assert index.verdict(web, db, PortProtocol(5432)).allowed is True
    assert index.verdict(db, web, PortProtocol(8080)).allowed is False
    assert sorted(map(str, index.endpoints())) == ["prod/db[StatefulSet]", "prod/web[Deployment]"]


def test_ip_block_policies_are_named_only_when_an_endpoint_has_no_ip() -> None:
    blocks = policy("prod", "b", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]})
    selectors = policy("prod", "s", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    running = pod("prod", "a", "10.0.0.1")
    assert ip_block_policies([running], [blocks, selectors]) == []
    assert ip_block_policies([running, template_pod(workload("Deployment", "web"))], [blocks, selectors]) == [blocks]
    # networks peers of cluster policies are address blocks too
    networks = parse(cnp_dict("n", "Admin", 1, {"namespaces": {}}, egress=[
        {"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}]}]))  # fmt: skip
    names = parse(cnp_dict("m", "Admin", 1, {"namespaces": {}},
                           egress=[{"action": "Deny", "to": [{"namespaces": {}}]}]))
    assert isinstance(networks, ClusterPolicy) and isinstance(names, ClusterPolicy)
    planned = template_pod(workload("Deployment", "web"))
    assert ip_block_policies([running, planned], [blocks, networks, names]) == [blocks, networks]


@pytest.mark.parametrize(("owner", "labels", "expected"), [
    (("ReplicaSet", "web-5d4f8c9b7"), {"pod-template-hash": "5d4f8c9b7"}, "prod/web[Deployment]"),
    (("ReplicaSet", "web"), {"pod-template-hash": "5d4f8c9b7"}, "prod/web[ReplicaSet]"),
    (("ReplicaSet", "web-5d4f8c9b7"), {}, "prod/web-5d4f8c9b7[ReplicaSet]"),
    (("StatefulSet", "db"), {"controller-revision-hash": "db-7f"}, "prod/db[StatefulSet]"),
    (("Job", "backup-29000000"), {}, "prod/backup-29000000[Job]"),
    (("", ""), {}, "prod/debug-0[Pod]"),
])
def test_a_running_pod_belongs_to_the_workload_its_controller_names(
        owner: tuple[str, str], labels: dict[str, str], expected: str) -> None:
    running = Pod("prod", "debug-0", labels=Labels(labels), owner_kind=owner[0], owner_name=owner[1])
    assert str(running_workload(running)) == expected
