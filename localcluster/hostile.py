"""A hostile cluster for tests: real API objects that make the real API server refuse, throttle or disturb.

Every function applies real objects (through ``kubectl`` or the Python client) and returns an :class:`Undo` that
removes them again (call it, or use it as a context manager). What each produces against kube-apiserver v1.33 —
status codes and messages — is in localcluster/README.md, "Hostile clusters", and checked by
tests/localcluster/test_hostile.py.

* :func:`resource_quota` / :func:`full_quota`: ResourceQuota (core/v1) — 403 ``exceeded quota``;
* :func:`limit_range`: LimitRange (core/v1) — 403 from the LimitRanger admission plugin;
* :func:`deny_pods_policy`: ValidatingAdmissionPolicy + Binding (admissionregistration.k8s.io/v1) — 422 (or the
  ``reason`` given) ``ValidatingAdmissionPolicy '…' with binding '…' denied request: …``;
* :func:`taint_node`, :func:`label_node`, :func:`windows_node`: node taints and labels;
* :func:`throttle_service_account` + :func:`service_account_kubeconfig` + :func:`request_burst`: API Priority and
  Fairness (flowcontrol.apiserver.k8s.io/v1) — 429 with ``Retry-After`` for one ServiceAccount;
* :func:`restart_apiserver`: kube-apiserver stopped and started again with the same arguments.

The mutating webhook (a sidecar injector) is in ``localcluster.webhook``.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import ssl
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from localcluster import controlplane
from localcluster.cluster import Cluster

__all__ = [
    "Burst",
    "Outcome",
    "Undo",
    "applied",
    "create",
    "delete_service_account",
    "deny_pods_policy",
    "full_quota",
    "label_node",
    "limit_range",
    "request_burst",
    "resource_quota",
    "restart_apiserver",
    "service_account_kubeconfig",
    "taint_node",
    "throttle_service_account",
    "wait_admitted",
    "wait_refused",
    "windows_node",
]

Obj = dict[str, Any]


class Undo:
    """Reverts what a hostile helper did; call it once (later calls do nothing) or use ``with``."""

    def __init__(self, what: str, action: Callable[[], None]) -> None:
        self.what = what
        self._action: Callable[[], None] | None = action

    def __call__(self) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()

    def __enter__(self) -> Undo:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self()

    def __repr__(self) -> str:
        return f"Undo({self.what!r})"


def _apply(cluster: Cluster, *objs: Obj) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))


def _deleter(cluster: Cluster, *refs: str, namespace: str | None = None) -> Callable[[], None]:
    ns = ["-n", namespace] if namespace else []

    def delete() -> None:
        cluster.kubectl("delete", *ns, *refs, "--ignore-not-found", "--wait=false")
    return delete


# --- what the API server answers -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """The API server's answer to one request: HTTP status, the Status object's reason and message (on failure)."""

    status: int
    reason: str = ""
    message: str = ""
    body: Obj = field(default_factory=dict)  # the created object on success, the Status object on failure

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def create(cluster: Cluster, namespace: str, manifest: Obj, dry_run: bool = False,
           kubeconfig: Path | None = None, impersonate: tuple[str, ...] = ()) -> Outcome:
    """POST ``manifest`` (any namespaced kind; as admin, or as the user of ``kubeconfig``) and return what the API
    server answered, refusals included (``dry_run``: ``?dryRun=All`` runs every admission step, webhooks and quota
    included, and persists nothing). ``impersonate`` = (user, group, ...) sends Impersonate-User/-Group headers."""
    group_version = manifest["apiVersion"]
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    kind = manifest["kind"].lower()
    plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "es" if kind.endswith("s") else kind + "s"
    path = f"{prefix}/namespaces/{namespace}/{plural}" + ("?dryRun=All" if dry_run else "")
    factory, headers = _connection_factory(kubeconfig or cluster.kubeconfig)
    headers = {**headers, "Content-Type": "application/json", "Accept": "application/json"}
    if impersonate:
        headers["Impersonate-User"] = impersonate[0]
    conn = factory()
    try:
        conn.putrequest("POST", path)
        for key, value in headers.items():
            conn.putheader(key, value)
        for group in impersonate[1:]:
            conn.putheader("Impersonate-Group", group)  # one header per group
        data = json.dumps(manifest).encode()
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:  # not a Status object (APF's 429 is plain text)
        body = {"message": raw.decode(errors="replace")}
    if 200 <= resp.status < 300:
        return Outcome(resp.status, body=body)
    return Outcome(resp.status, str(body.get("reason", "")), str(body.get("message", "")), body)


def _pod(name: str, labels: dict[str, str] | None = None, cpu: tuple[str, str] | None = None) -> Obj:
    container: Obj = {"name": "c", "image": "docker.io/library/busybox:1.36", "command": ["sleep", "3600"]}
    if cpu is not None:
        container["resources"] = {"requests": {"cpu": cpu[0]}, "limits": {"cpu": cpu[1]}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [container]}}


def wait_refused(cluster: Cluster, namespace: str, manifest: Obj, expect: str = "", timeout: float = 30.0,
                 impersonate: tuple[str, ...] = ()) -> Outcome:
    """Dry-run ``manifest`` until the API server refuses it (with ``expect`` in the message); the refusal. Admission
    plugins and policies read their configuration from informers, so a new quota, LimitRange or policy takes effect
    a moment after it is created (and stops a moment after it is deleted: :func:`wait_admitted`)."""
    deadline = time.monotonic() + timeout
    while True:
        got = create(cluster, namespace, manifest, dry_run=True, impersonate=impersonate)
        if not got.ok and expect in got.message:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"{manifest['kind']} {manifest['metadata']['name']} in {namespace}: expected a refusal "
                               f"with {expect!r}, got {got.status} {got.message!r}")
        time.sleep(0.1)


def wait_admitted(cluster: Cluster, namespace: str, manifest: Obj, timeout: float = 30.0,
                  impersonate: tuple[str, ...] = ()) -> None:
    """Dry-run ``manifest`` until the API server admits it (a removed quota, LimitRange or policy is forgotten)."""
    deadline = time.monotonic() + timeout
    while True:
        got = create(cluster, namespace, manifest, dry_run=True, impersonate=impersonate)
        if got.ok or (got.status == 404 and got.reason == "NotFound"):  # the namespace is gone: nothing to wait for
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{manifest['kind']} {manifest['metadata']['name']} in {namespace} still refused: "
                               f"{got.status} {got.message!r}")
        time.sleep(0.1)


def _then_admitted(cluster: Cluster, namespace: str, manifest: Obj, delete: Callable[[], None],
                   impersonate: tuple[str, ...] = ()) -> Callable[[], None]:
    def undo() -> None:
        delete()
        wait_admitted(cluster, namespace, manifest, impersonate=impersonate)
    return undo


# --- admission: quota, limits, policy --------------------------------------------------------------------------------

def resource_quota(cluster: Cluster, namespace: str, hard: dict[str, str], name: str = "hostile-quota",
                   wait: bool = True) -> Undo:
    """A ResourceQuota with ``spec.hard`` = ``hard`` (e.g. ``{"pods": "2", "requests.cpu": "1", "limits.memory":
    "1Gi"}``; API reference "ResourceQuota v1 core", concepts "Resource Quotas"). The ResourceQuota admission plugin
    refuses a pod that would exceed it (403 Forbidden ``exceeded quota: …``) and, once a compute resource is quota'd,
    every pod that does not specify it (403 ``failed quota: …: must specify …``). Until the resourcequota controller
    has written ``status.hard`` the plugin refuses every pod (``status unknown for quota``), so with ``wait`` this
    returns once the status is there."""
    _apply(cluster, {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": namespace},
                     "spec": {"hard": hard}})
    deadline = time.monotonic() + 30
    while wait:
        quota = json.loads(cluster.kubectl("get", "resourcequota", name, "-n", namespace, "-o", "json"))
        if set((quota.get("status") or {}).get("hard") or {}) == set(hard):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"ResourceQuota {namespace}/{name}: the resourcequota controller wrote no status")
        time.sleep(0.1)
    return Undo(f"ResourceQuota {namespace}/{name}", _deleter(cluster, f"resourcequota/{name}", namespace=namespace))


def full_quota(cluster: Cluster, namespace: str, name: str = "hostile-full-quota") -> Undo:
    """A quota of ``pods: "0"``: every pod create in ``namespace`` gets the API server's 403 ``exceeded quota``.
    Returns once a (dry-run) pod is refused; undo returns once one is admitted again."""
    undo = resource_quota(cluster, namespace, {"pods": "0"}, name)
    canary = _pod("hostile-quota-canary")
    wait_refused(cluster, namespace, canary, expect=f"exceeded quota: {name}")
    return Undo(undo.what, _then_admitted(cluster, namespace, canary, undo))


def limit_range(cluster: Cluster, namespace: str, max_limit_request_ratio: dict[str, str] | None = None,
                max: dict[str, str] | None = None, name: str = "hostile-limits") -> Undo:
    """A LimitRange of type Container with ``maxLimitRequestRatio`` (e.g. ``{"cpu": "2"}``) and/or ``max`` (e.g.
    ``{"cpu": "500m"}``; API reference "LimitRange v1 core", concepts "Limit Ranges"). The LimitRanger admission
    plugin refuses a container beyond them with 403 Forbidden (``cpu max limit to request ratio per Container is 2,
    but provided ratio is 20.000000``; ``maximum cpu usage per Container is 500m, but limit is 1``); it also
    defaults a container's limits to ``max`` when it has none. With a cpu ratio or maximum, returns once the plugin
    refuses a pod whose cpu limit is 20 times its request (ratio), or 1000 cpus (max), and undo once it admits it."""
    if not (max_limit_request_ratio or max):
        raise ValueError("limit_range needs max_limit_request_ratio or max")
    item: Obj = {"type": "Container"}
    if max_limit_request_ratio:
        item["maxLimitRequestRatio"] = max_limit_request_ratio
    if max:
        item["max"] = max
    _apply(cluster, {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": name, "namespace": namespace},
                     "spec": {"limits": [item]}})
    delete = _deleter(cluster, f"limitrange/{name}", namespace=namespace)
    cpu = ("50m", "1") if "cpu" in (max_limit_request_ratio or {}) else ("1", "1000") if "cpu" in (max or {}) else None
    if cpu is not None:
        canary = _pod("hostile-limits-canary", cpu=cpu)
        wait_refused(cluster, namespace, canary, expect="per Container")
        delete = _then_admitted(cluster, namespace, canary, delete)
    return Undo(f"LimitRange {namespace}/{name}", delete)


def _cel_string(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid CEL string literal (double quotes, backslash escapes)


def deny_pods_policy(cluster: Cluster, namespace: str, label: tuple[str, str] | None = None,
                     user: str | None = None, name: str | None = None, reason: str | None = None,
                     message: str | None = None) -> Undo:
    """A ValidatingAdmissionPolicy and its Binding (admissionregistration.k8s.io/v1, GA in 1.30; API reference
    "ValidatingAdmissionPolicy v1", concepts "Validating Admission Policy") that deny creating or updating pods in
    ``namespace`` that carry ``label`` (key, value), or that ``user`` (e.g. ``system:serviceaccount:NS:NAME``)
    sends. ``validationActions: [Deny]``. The API server answers ``ValidatingAdmissionPolicy 'P' with binding 'B'
    denied request: MESSAGE`` with the validation's ``reason`` — by default Invalid, i.e. 422 (k8s.io/apiserver
    ``pkg/admission/plugin/policy/validating/dispatcher.go``); ``reason="Forbidden"`` gives 403. Returns once a
    (dry-run) pod matching it is refused (for ``user``, sent as admin impersonating ``user``), and undo once that pod
    is admitted again."""
    if (label is None) == (user is None):
        raise ValueError("deny_pods_policy needs exactly one of label and user")
    name = name or f"hostile-deny-pods-{namespace}"
    if label is not None:
        key, value = map(_cel_string, label)
        expression = f"!(has(object.metadata.labels) && {key} in object.metadata.labels && " \
                     f"object.metadata.labels[{key}] == {value})"
        message = message or f"pods labelled {label[0]}={label[1]} are not allowed here"
    else:
        assert user is not None
        expression = f"request.userInfo.username != {_cel_string(user)}"
        message = message or f"{user} may not create pods here"
    validation: Obj = {"expression": expression, "message": message}
    if reason:
        validation["reason"] = reason
    selector = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    rules = [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["pods"]}]
    _apply(cluster,
           {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": rules},
                     "validations": [validation]}},
           {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"],
                     "matchResources": {"namespaceSelector": selector}}})
    delete = _deleter(cluster, f"validatingadmissionpolicybinding/{name}", f"validatingadmissionpolicy/{name}")
    canary = _pod("hostile-policy-canary", {label[0]: label[1]} if label else None)
    as_user = (user, "system:masters") if user else ()  # authorized like the admin, named as `user`
    wait_refused(cluster, namespace, canary, expect=f"ValidatingAdmissionPolicy '{name}'", impersonate=as_user)
    return Undo(f"ValidatingAdmissionPolicy {name}", _then_admitted(cluster, namespace, canary, delete, as_user))


# --- nodes -----------------------------------------------------------------------------------------------------------

def taint_node(cluster: Cluster, node: str, key: str = "hostile", value: str = "true",
               effect: str = "NoSchedule") -> Undo:
    """Add the taint ``key=value:effect`` (``NoSchedule``, ``PreferNoSchedule`` or ``NoExecute``; API reference
    "Node v1 core" ``spec.taints``) to ``node``: pods without a matching toleration are not placed there
    (localcluster's scheduler honours NoSchedule and NoExecute). No controller evicts for NoExecute here (node
    lifecycle is not run). Undo removes exactly that taint."""
    cluster.kubectl("taint", "nodes", node, f"{key}={value}:{effect}", "--overwrite")
    return Undo(f"taint {key}:{effect} on {node}",
                lambda: _ignore_missing(cluster, "taint", "nodes", node, f"{key}:{effect}-"))


def _ignore_missing(cluster: Cluster, *args: str) -> None:
    """Run kubectl, ignoring a failure (the node, taint or label may be gone already)."""
    cluster.kubectl(*args, check=False)


def label_node(cluster: Cluster, node: str, key: str, value: str) -> Undo:
    """Set the label ``key=value`` on ``node``; undo restores the previous value (or removes the label)."""
    labels = json.loads(cluster.kubectl("get", "node", node, "-o", "json"))["metadata"].get("labels") or {}
    before = labels.get(key)
    cluster.kubectl("label", "node", node, f"{key}={value}", "--overwrite")
    restore = f"{key}={before}" if before is not None else f"{key}-"
    return Undo(f"label {key}={value} on {node}",
                lambda: _ignore_missing(cluster, "label", "node", node, restore, "--overwrite"))


def windows_node(cluster: Cluster, node: str) -> Undo:
    """Label ``node`` ``kubernetes.io/os=windows`` (well-known label; the node agent registers ``linux``): a
    Linux-only pod (``nodeSelector: {kubernetes.io/os: linux}``) no longer fits there."""
    return label_node(cluster, node, "kubernetes.io/os", "windows")


# --- API Priority and Fairness ---------------------------------------------------------------------------------------

def throttle_service_account(cluster: Cluster, namespace: str, name: str, shares: int = 1,
                             precedence: int = 50, level: str | None = None) -> Undo:
    """A PriorityLevelConfiguration (flowcontrol.apiserver.k8s.io/v1; API reference "PriorityLevelConfiguration v1",
    concepts "API Priority and Fairness") of type Limited with ``nominalConcurrencyShares: shares``, nothing lent or
    borrowed and ``limitResponse: {type: Reject}``, and a FlowSchema with ``matchingPrecedence: precedence`` (lower
    wins; the built-in ``exempt`` is 1, ``service-accounts`` 9000) sending every request of ServiceAccount
    ``namespace/name`` there. With 1 share of about 250 the level gets ceil(600 * 1/250) = 3 seats of kube-apiserver's
    600 (``--max-requests-inflight`` 400 + ``--max-mutating-requests-inflight`` 200), so a burst of concurrent
    requests from that account gets 429 Too Many Requests with ``Retry-After`` at once, while other clients are
    untouched. Returns once the FlowSchema is not Dangling (the APF config controller has taken both in)."""
    level = level or f"hostile-{namespace}-{name}"
    subject = {"kind": "ServiceAccount", "serviceAccount": {"namespace": namespace, "name": name}}
    _apply(cluster,
           {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
            "metadata": {"name": level},
            "spec": {"type": "Limited", "limited": {
                "nominalConcurrencyShares": shares, "lendablePercent": 0, "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Reject"}}}},
           {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": level},
            "spec": {"priorityLevelConfiguration": {"name": level}, "matchingPrecedence": precedence,
                     "distinguisherMethod": {"type": "ByUser"},
                     "rules": [{"subjects": [subject],
                                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                                   "namespaces": ["*"], "clusterScope": True}],
                                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}})
    deadline = time.monotonic() + 30
    while True:
        schema = json.loads(cluster.kubectl("get", "flowschema", level, "-o", "json"))
        conditions = {c["type"]: c["status"] for c in (schema.get("status") or {}).get("conditions") or []}
        if conditions.get("Dangling") == "False":
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"FlowSchema {level} not taken in by the APF config controller: {conditions}")
        time.sleep(0.1)
    return Undo(f"APF level {level}", _deleter(cluster, f"flowschema/{level}", f"prioritylevelconfiguration/{level}"))


def service_account_kubeconfig(cluster: Cluster, namespace: str, name: str,
                               rules: list[Obj] | str | None = None, path: Path | None = None,
                               expiration_seconds: int = 7 * 24 * 3600) -> Path:
    """A kubeconfig that authenticates as ServiceAccount ``namespace/name`` (the admin is ``system:masters``, which
    authorization and APF exempt, so anything about ordinary users needs another identity). Creates the namespace
    if missing and the ServiceAccount; ``rules`` (a list of RBAC PolicyRules, or the name of a ClusterRole) is bound
    cluster-wide with a ClusterRoleBinding ``hostile:NS:NAME`` (a ClusterRole of that name holds given rules); gets
    a token with the TokenRequest API (``serviceaccounts/NAME/token``, API reference "TokenRequest v1
    authentication.k8s.io"; bound to the ServiceAccount: deleting it revokes the token) and writes a kubeconfig with
    the cluster's server and CA (default ``<state>/sa-NS-NAME.kubeconfig``). :func:`delete_service_account` removes
    what this made."""
    from kubernetes import client

    cluster.kubectl("create", "namespace", namespace, check=False)
    _apply(cluster, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}})
    binding = f"hostile:{namespace}:{name}"
    if isinstance(rules, list):
        _apply(cluster, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                         "metadata": {"name": binding}, "rules": rules})
    if rules is not None:
        role = binding if isinstance(rules, list) else rules
        _apply(cluster, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                         "metadata": {"name": binding},
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                         "subjects": [{"kind": "ServiceAccount", "namespace": namespace, "name": name}]})
    api = cluster.api_client()
    try:
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[], expiration_seconds=expiration_seconds))
        answer = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
        token = answer.status.token if answer.status else None
    finally:
        api.close()
    if not token:
        raise RuntimeError(f"TokenRequest for {namespace}/{name} returned no token")
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server_entry = admin["clusters"][0]["cluster"]
    user = f"system:serviceaccount:{namespace}:{name}"
    cfg = {"apiVersion": "v1", "kind": "Config", "preferences": {},
           "clusters": [{"name": "localcluster", "cluster": server_entry}],
           "users": [{"name": user, "user": {"token": token}}],
           "contexts": [{"name": "localcluster", "context": {"cluster": "localcluster", "user": user,
                                                             "namespace": namespace}}],
           "current-context": "localcluster"}
    path = path or cluster.state / f"sa-{namespace}-{name}.kubeconfig"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def delete_service_account(cluster: Cluster, namespace: str, name: str) -> None:
    """Remove what :func:`service_account_kubeconfig` created (the namespace stays)."""
    binding = f"hostile:{namespace}:{name}"
    cluster.kubectl("delete", f"clusterrolebinding/{binding}", f"clusterrole/{binding}", "--ignore-not-found")
    cluster.kubectl("delete", "-n", namespace, f"serviceaccount/{name}", "--ignore-not-found")
    (cluster.state / f"sa-{namespace}-{name}.kubeconfig").unlink(missing_ok=True)


@dataclass
class Burst:
    """What a burst of concurrent requests got: a count per HTTP status, the ``Retry-After`` values of the 429s,
    one 429 body for the record, and the APF priority level (``X-Kubernetes-PF-PriorityLevel-UID``) of each
    answer."""

    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    throttled_body: str = ""
    priority_levels: Counter[str] = field(default_factory=Counter)  # X-Kubernetes-PF-PriorityLevel-UID per answer


def _connection_factory(kubeconfig: Path) -> tuple[Callable[[], http.client.HTTPSConnection], dict[str, str]]:
    """Connections and headers for the kubeconfig's current user: a bearer token or a client certificate."""
    cfg = yaml.safe_load(kubeconfig.read_text())
    ctx_name = cfg["current-context"]
    context = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster_entry = next(c["cluster"] for c in cfg["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == context["user"])
    host, port = cluster_entry["server"].removeprefix("https://").rsplit(":", 1)
    ssl_ctx = ssl.create_default_context(cadata=base64.b64decode(cluster_entry["certificate-authority-data"]).decode())
    headers = {}
    if "token" in user:
        headers["Authorization"] = f"Bearer {user['token']}"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "c.crt"), Path(tmp, "c.key")
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            ssl_ctx.load_cert_chain(str(cert), str(key))
    return (lambda: http.client.HTTPSConnection(host, int(port), context=ssl_ctx, timeout=30)), headers


def request_burst(kubeconfig: Path, path: str, concurrency: int = 32, per_worker: int = 10) -> Burst:
    """``concurrency`` threads each GET ``path`` ``per_worker`` times at once, as the kubeconfig's user (each thread
    keeps its connection); count the answers. A fresh TLS connection per thread, no client-side rate limit."""
    factory, headers = _connection_factory(kubeconfig)
    burst = Burst()
    lock = threading.Lock()
    start = threading.Barrier(concurrency)

    def worker() -> None:
        conn = factory()
        try:
            conn.connect()
            start.wait()
            for _ in range(per_worker):
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                with lock:
                    burst.statuses[resp.status] += 1
                    burst.priority_levels[resp.getheader("X-Kubernetes-PF-PriorityLevel-UID") or ""] += 1
                    if resp.status == 429:
                        burst.retry_after[resp.getheader("Retry-After") or ""] += 1
                        burst.throttled_body = burst.throttled_body or body.decode(errors="replace")
        except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as e:
            with lock:
                burst.errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return burst


# --- the API server going away ---------------------------------------------------------------------------------------

def restart_apiserver(cluster: Cluster | Path, downtime: float = 0.0, wait_controllers: bool = True,
                      grace: float = 10.0, timeout: float = 120.0) -> float:
    """Stop kube-apiserver (SIGTERM, as on a rolling upgrade; SIGKILL after ``grace`` seconds) and start it again
    with the argv recorded in ``<state>/pids/kube-apiserver.json``, after ``downtime`` seconds; return the seconds
    from the stop until ``/readyz`` is ok again. On SIGTERM it stops listening and drains ordinary requests within
    milliseconds but, while watches are open, does not exit (its HTTP server's Shutdown waits for them, up to the
    60 s request timeout), so with clients connected the process is SIGKILLed after ``grace``, as kubelet does
    after a pod's grace period. Watches and connections of every client are closed on the way. With
    ``wait_controllers`` it also waits until kube-controller-manager serves again (a new namespace gets its
    ``default`` ServiceAccount), because the cluster is shared by the session: the next test's pods need it."""
    state = cluster.state if isinstance(cluster, Cluster) else cluster
    record = controlplane.read_pid(state, "kube-apiserver")
    recorded = record.get("argv") if record else None
    if not isinstance(recorded, list):
        raise RuntimeError(f"no kube-apiserver recorded in {state}/pids")
    argv = [str(a) for a in recorded]
    cp = controlplane.ControlPlane.load(state)
    if cp is None:
        raise RuntimeError(f"no control plane in {state}")
    stopped = time.monotonic()
    controlplane.stop_process(state, "kube-apiserver", timeout=grace)
    if downtime > 0:
        time.sleep(downtime)
    controlplane.spawn(state, "kube-apiserver", argv)
    controlplane.wait_ready(cp, timeout)
    took = time.monotonic() - stopped
    if wait_controllers:
        _wait_controllers_reconnected(state, timeout)
    return took


def _wait_controllers_reconnected(state: Path, timeout: float) -> None:
    kubeconfig = f"--kubeconfig={state / 'admin.kubeconfig'}"
    name = f"restart-canary-{os.getpid()}-{int(time.time() * 1000)}"
    subprocess.run(["kubectl", kubeconfig, "create", "namespace", name], check=True, capture_output=True)
    try:
        deadline = time.monotonic() + timeout
        while subprocess.run(["kubectl", kubeconfig, "get", "serviceaccount", "default", "-n", name],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError("kube-controller-manager did not recover after the API server restart")
            time.sleep(0.5)
    finally:
        subprocess.run(["kubectl", kubeconfig, "delete", "namespace", name, "--wait=false"], capture_output=True)


@contextlib.contextmanager
def applied(*undos: Undo) -> Iterator[tuple[Undo, ...]]:
    """Undo several hostile changes together (last first) when the block ends."""
    try:
        yield undos
    finally:
        for undo in reversed(undos):
            undo()
