"""The objects `analyze`, `explain` and `check` judge, read from a live cluster instead of files.

What ``kubectl get namespaces,pods,networkpolicies,deployments,... -A -o json`` would print, listed page by page
(``limit``/``continue``, as kubectl does with ``--chunk-size``) and read by the same reader as files, so a cluster
and a dump of it give the same verdicts. Raw JSON is read as the API server sends it: the client's model classes
would cost seconds at 10k pods and drop fields they do not know.

A resource the credentials may not list is an error when verdicts need it (namespaces, pods, NetworkPolicies) and
a warning for workloads (their pods are then judged one by one) and policy custom resources (the cluster-scoped
policy.networking.k8s.io kinds, and Cilium, Calico and Antrea policies, whose pods' paths are out of model).
Nothing is written to the cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .manifest_files import Manifests, read_documents
from .manifests import ManifestError
from .prober.podspec import RUN_LABEL

__all__ = ["RESOURCES", "LiveResource", "list_documents", "read_cluster"]

#: Items per list request: kubectl's default chunk size.
PAGE_SIZE = 500
#: (connect, read) seconds of each request.
REQUEST_TIMEOUT = (10, 120)


@dataclass(frozen=True)
class LiveResource:
    """A resource `analyze` reads: the client's API class and list methods, and whether verdicts need it."""

    plural: str
    kind: str
    api: str
    list_all: str
    list_namespaced: str | None
    needed: bool = False
    #: (group, version) of a custom resource, listed cluster-wide; a cluster that does not serve it has none
    custom: tuple[str, str] | None = None


RESOURCES = (
    LiveResource("namespaces", "Namespace", "CoreV1Api", "list_namespace", None, needed=True),
    LiveResource("pods", "Pod", "CoreV1Api", "list_pod_for_all_namespaces", "list_namespaced_pod", needed=True),
    LiveResource("networkpolicies", "NetworkPolicy", "NetworkingV1Api", "list_network_policy_for_all_namespaces",
                 "list_namespaced_network_policy", needed=True),
    LiveResource("deployments", "Deployment", "AppsV1Api", "list_deployment_for_all_namespaces",
                 "list_namespaced_deployment"),
    LiveResource("statefulsets", "StatefulSet", "AppsV1Api", "list_stateful_set_for_all_namespaces",
                 "list_namespaced_stateful_set"),
    LiveResource("daemonsets", "DaemonSet", "AppsV1Api", "list_daemon_set_for_all_namespaces",
                 "list_namespaced_daemon_set"),
    LiveResource("replicasets", "ReplicaSet", "AppsV1Api", "list_replica_set_for_all_namespaces",
                 "list_namespaced_replica_set"),
    LiveResource("replicationcontrollers", "ReplicationController", "CoreV1Api",
                 "list_replication_controller_for_all_namespaces", "list_namespaced_replication_controller"),
    LiveResource("jobs", "Job", "BatchV1Api", "list_job_for_all_namespaces", "list_namespaced_job"),
    LiveResource("cronjobs", "CronJob", "BatchV1Api", "list_cron_job_for_all_namespaces", "list_namespaced_cron_job"),
    # SIG Network's cluster-scoped policies (network-policy-api), where the cluster serves them
    LiveResource("adminnetworkpolicies", "AdminNetworkPolicy", "CustomObjectsApi", "list_cluster_custom_object", None,
                 custom=("policy.networking.k8s.io", "v1alpha1")),
    LiveResource("baselineadminnetworkpolicies", "BaselineAdminNetworkPolicy", "CustomObjectsApi",
                 "list_cluster_custom_object", None, custom=("policy.networking.k8s.io", "v1alpha1")),
    LiveResource("clusternetworkpolicies", "ClusterNetworkPolicy", "CustomObjectsApi", "list_cluster_custom_object",
                 None, custom=("policy.networking.k8s.io", "v1alpha2")),
    # CNI-specific policies, where served: not evaluated, but the paths of the pods they select are out of model.
    # Calico's API server serves the objects of its crd.projectcalico.org CRDs again as projectcalico.org/v3: both
    # are read (as the operator watches both), so there a policy is listed once per group.
    *(LiveResource(plural, kind, "CustomObjectsApi", "list_cluster_custom_object", None, custom=(group, version))
      for plural, kind, group, version in (
          ("ciliumnetworkpolicies", "CiliumNetworkPolicy", "cilium.io", "v2"),
          ("ciliumclusterwidenetworkpolicies", "CiliumClusterwideNetworkPolicy", "cilium.io", "v2"),
          ("networkpolicies", "NetworkPolicy", "projectcalico.org", "v3"),
          ("globalnetworkpolicies", "GlobalNetworkPolicy", "projectcalico.org", "v3"),
          ("networkpolicies", "NetworkPolicy", "crd.projectcalico.org", "v1"),
          ("globalnetworkpolicies", "GlobalNetworkPolicy", "crd.projectcalico.org", "v1"),
          ("networkpolicies", "NetworkPolicy", "crd.antrea.io", "v1beta1"),
          ("clusternetworkpolicies", "ClusterNetworkPolicy", "crd.antrea.io", "v1beta1"),
      )),
)


class _ListFailed(Exception):
    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _call(api_client: Any, api: str, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """One request through the client's generated method, its JSON body undecoded into models."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        response = getattr(getattr(client, api)(api_client), method)(
            *args, **kwargs, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        raise _ListFailed(exc.status, _reason(exc.body, exc.reason)) from None
    except (HTTPError, OSError) as exc:
        raise _ListFailed(None, f"cannot reach the API server at {api_client.configuration.host}: {exc}") from None
    if response.status >= 400:
        raise _ListFailed(response.status, _reason(response.data, response.reason))
    body: dict[str, Any] = json.loads(response.data)
    return body


def _reason(body: Any, fallback: Any) -> str:
    try:
        return str(json.loads(body or "{}").get("message") or fallback)
    except (TypeError, ValueError):
        return str(fallback)


def list_documents(api_client: Any, resource: LiveResource, namespace: str | None = None,
                   page_size: int = PAGE_SIZE) -> Iterator[dict[str, Any]]:
    """Each page of ``resource`` (in ``namespace``, or everywhere) as a typed list; raises `_ListFailed`."""
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": page_size}
        if token:
            kwargs["_continue"] = token
        if resource.kind == "Pod":
            kwargs["label_selector"] = f"!{RUN_LABEL}"  # the prober's own pods are not the cluster's workloads
        if resource.custom:
            page = _call(api_client, resource.api, resource.list_all, *resource.custom, resource.plural, **kwargs)
            page["apiVersion"] = "/".join(resource.custom)
        elif namespace and resource.list_namespaced:
            page = _call(api_client, resource.api, resource.list_namespaced, namespace, **kwargs)
        else:
            page = _call(api_client, resource.api, resource.list_all, **kwargs)
        for item in page.get("items") or []:
            (item.get("metadata") or {}).pop("managedFields", None)  # the bulk of a listed object, never needed
        page["kind"] = f"{resource.kind}List"
        yield page
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def _api_client(kubeconfig: str | None, context: str | None) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, context=context,  # type: ignore[no-untyped-call]
                            client_configuration=configuration, persist_config=False)
    return client.ApiClient(configuration)


def _source(api: Any, context: str | None) -> str:
    return f"cluster {context or api.configuration.host}"


def read_cluster(kubeconfig: str | None, context: str | None, namespaces: Sequence[str] = (),
                 page_size: int = PAGE_SIZE) -> Manifests:
    """Namespaces, Pods, NetworkPolicies and workloads of the cluster ``kubeconfig``/``context`` name (default: the
    current context of $KUBECONFIG or ~/.kube/config); with ``namespaces``, only theirs (Namespaces: those named)."""
    try:
        api = _api_client(kubeconfig, context)
    except Exception as exc:  # the client raises ConfigException, OSError, yaml and key errors alike
        failed = Manifests()
        failed.errors.append(ManifestError(kubeconfig or "kubeconfig", "", "", f"cannot load: {exc}"))
        return failed
    source = _source(api, context)
    documents: list[tuple[Any, str]] = []
    problems: list[tuple[bool, ManifestError]] = []
    for resource in RESOURCES:
        scopes: Sequence[str | None] = namespaces if namespaces and resource.list_namespaced else [None]
        scope: str | None = None
        try:
            if namespaces and resource.kind == "Namespace":  # only those named
                documents += [(_call(api, "CoreV1Api", "read_namespace", ns), source) for ns in namespaces]
                continue
            for scope in scopes:
                documents += [(page, source) for page in list_documents(api, resource, scope, page_size)]
        except _ListFailed as exc:
            if resource.custom and exc.status == 404:
                continue  # the cluster does not serve this API: it has no such policies
            if exc.status is None:
                problems.append((True, ManifestError(source, "", "", exc.reason)))
                break  # the server is unreachable: every other request would say the same
            what = f"cannot list {resource.plural}{f' in namespace {scope}' if scope else ''}: {exc.reason}"
            if resource.custom:
                what += f"; the verdicts leave out what {resource.kind}s allow or deny"
            elif not resource.needed:
                what += f"; the pods of {resource.kind}s are judged one by one"
            problems.append((resource.needed, ManifestError(source, "", "", what)))
    manifests = read_documents(documents, server_validated=True)
    for is_error, problem in problems:
        (manifests.errors if is_error else manifests.warnings).append(problem)
    return manifests
