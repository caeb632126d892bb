"""A real mutating admission webhook for tests: a sidecar injector in the style of istio's.

:func:`sidecar_injector` starts an HTTPS server in a background thread of the test process (127.0.0.1, a free
port; kube-apiserver runs in the host network namespace and reaches it there) with a serving certificate issued by
the cluster CA, and registers it with a MutatingWebhookConfiguration (admissionregistration.k8s.io/v1): pods created
in namespaces carrying ``namespace_label`` are sent to it as admission.k8s.io/v1 AdmissionReviews, and it answers
with a JSONPatch appending a container named ``istio-proxy`` (the node agent runs a container of that name as a
transparent proxy). It honours istio's per-pod opt-outs, or — a mis-configured injector — ignores them, and records
every review it answered. On exit the configuration is removed (and seen gone) before the server stops.

    with webhook.sidecar_injector(cluster) as injector:
        cluster.kubectl("label", "namespace", ns, f"{injector.label_key}={injector.label_value}")
        ...  # pods created in ns now have an istio-proxy container
        assert injector.injected(ns) == ["my-pod"]
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from localcluster import pki
from localcluster.cluster import Cluster

__all__ = ["ISTIO_PROXY_IMAGE", "OPT_OUT", "PROXY_CONTAINER", "Review", "SidecarInjector", "sidecar_injector"]

PROXY_CONTAINER = "istio-proxy"
ISTIO_PROXY_IMAGE = "docker.io/istio/proxyv2:1.24.0"
OPT_OUT = "sidecar.istio.io/inject"  # istio's per-pod switch, as a label (preferred) or an annotation
STATUS_ANNOTATION = "sidecar.istio.io/status"  # what istio writes on an injected pod
PROXY_UID = 1337  # istio-proxy's UID: istio's iptables rules exempt its own traffic by this owner
DEFAULT_LABEL = ("localcluster.hostile/sidecar-injection", "enabled")

Obj = dict[str, Any]


@dataclass(frozen=True)
class Review:
    """One AdmissionReview the injector answered."""

    uid: str
    namespace: str
    name: str  # metadata.name, or generateName + "*" when the API server has not named the pod yet
    operation: str
    user: str
    dry_run: bool
    injected: bool
    reason: str  # why (not): "injected", "opt-out label", "opt-out annotation", "hostNetwork", "already injected"
    patch: tuple[Obj, ...] = ()


def proxy_container(image: str = ISTIO_PROXY_IMAGE, resources: Obj | None = None) -> Obj:
    """The injected container: istio's name, image, UID/GID 1337 and hardened securityContext, inbound (15006) and
    outbound (15001) capture ports and the Prometheus port (15090). No command: the node agent decides what runs."""
    container: Obj = {
        "name": PROXY_CONTAINER,
        "image": image,
        "ports": [{"name": "outbound", "containerPort": 15001, "protocol": "TCP"},
                  {"name": "inbound", "containerPort": 15006, "protocol": "TCP"},
                  {"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
        "securityContext": {"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "runAsNonRoot": True,
                            "allowPrivilegeEscalation": False, "privileged": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
    }
    if resources is not None:
        container["resources"] = resources
    return container


def opt_out(pod: Obj) -> str:
    """Why istio would not inject ``pod`` ("" if it would, in a namespace selected for injection). Istio's
    ``injectRequired`` (istio/istio ``pkg/kube/inject/webhook.go``; docs "Installing the Sidecar", "Controlling
    the injection policy"): never a ``hostNetwork`` pod; the ``sidecar.istio.io/inject`` label, if present, wins
    over the annotation of the same name; ``"false"`` opts out, ``"true"`` opts in and any other value falls back to
    the namespace's default (here: inject)."""
    meta = pod.get("metadata") or {}
    if (pod.get("spec") or {}).get("hostNetwork"):
        return "hostNetwork"
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    if OPT_OUT in labels:
        return "opt-out label" if labels[OPT_OUT] == "false" else ""
    return "opt-out annotation" if annotations.get(OPT_OUT) == "false" else ""


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")  # RFC 6901 JSON Pointer


def injection_patch(pod: Obj, container: Obj) -> list[Obj]:
    """RFC 6902 JSONPatch appending ``container`` to ``spec.containers`` and setting istio's status annotation."""
    status = json.dumps({"initContainers": [], "containers": [PROXY_CONTAINER], "volumes": [],
                         "imagePullSecrets": [], "revision": "localcluster"})
    patch: list[Obj] = [{"op": "add", "path": "/spec/containers/-", "value": container}]
    if (pod.get("metadata") or {}).get("annotations"):
        patch.append({"op": "add", "path": f"/metadata/annotations/{_escape(STATUS_ANNOTATION)}", "value": status})
    else:
        patch.append({"op": "add", "path": "/metadata/annotations", "value": {STATUS_ANNOTATION: status}})
    return patch


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that can also close the connections it has open."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


@dataclass
class SidecarInjector:
    """The webhook server and its registration; see :func:`sidecar_injector`."""

    cluster: Cluster
    name: str = "hostile-sidecar-injector"
    label_key: str = DEFAULT_LABEL[0]
    label_value: str = DEFAULT_LABEL[1]
    honour_opt_outs: bool = True
    image: str = ISTIO_PROXY_IMAGE
    resources: Obj | None = None
    reviews: list[Review] = field(default_factory=list)
    port: int = 0
    _server: _Server | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/inject"

    @property
    def canary_namespace(self) -> str:
        return f"{self.name}-canary"

    def injected(self, namespace: str | None = None) -> list[str]:
        """Names of the pods (not dry runs) it injected, in order, optionally only in ``namespace``."""
        with self._lock:
            return [r.name for r in self.reviews
                    if r.injected and not r.dry_run and namespace in (None, r.namespace)]

    def reviewed(self, namespace: str, name: str) -> Review | None:
        """The last (not dry-run) review of pod ``namespace/name``, or None if it never came to the webhook."""
        with self._lock:
            found = [r for r in self.reviews if (r.namespace, r.name, r.dry_run) == (namespace, name, False)]
        return found[-1] if found else None

    # --- admission ---------------------------------------------------------------------------------------------

    def review(self, request: Obj) -> Obj:
        """The AdmissionReview response to ``request`` (admission.k8s.io/v1 ``request`` object)."""
        pod: Obj = request.get("object") or {}
        meta = pod.get("metadata") or {}
        reason = opt_out(pod) if self.honour_opt_outs else ""
        if any(c.get("name") == PROXY_CONTAINER for c in (pod.get("spec") or {}).get("containers") or []):
            reason = "already injected"
        patch = [] if reason else injection_patch(pod, proxy_container(self.image, self.resources))
        name = request.get("name") or meta.get("name") or f"{meta.get('generateName', '')}*"
        record = Review(uid=str(request.get("uid", "")), namespace=str(request.get("namespace", "")), name=name,
                        operation=str(request.get("operation", "")),
                        user=str((request.get("userInfo") or {}).get("username", "")),
                        dry_run=bool(request.get("dryRun")), injected=not reason, reason=reason or "injected",
                        patch=tuple(patch))
        with self._lock:
            self.reviews.append(record)
        response: Obj = {"uid": request.get("uid", ""), "allowed": True}
        if patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}

    # --- server ------------------------------------------------------------------------------------------------

    def _certificate(self) -> tuple[Path, Path]:
        """A serving certificate for IP 127.0.0.1 issued by the cluster CA (the caBundle the API server checks)."""
        ca = pki.Pki(self.cluster.state / "pki")
        cert, key = ca.client(f"webhook-{self.name}")
        pki._sign(ca, cert, key, f"/CN={self.name}",
                  ["subjectAltName=IP:127.0.0.1", "extendedKeyUsage=serverAuth"])
        return cert, key

    def start(self) -> None:
        cert, key = self._certificate()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        injector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    answer = json.dumps(injector.review(json.loads(body)["request"])).encode()
                    status = 200
                except (ValueError, KeyError, TypeError) as e:
                    answer, status = f"bad AdmissionReview: {e}".encode(), 400
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # the reviews are recorded; no access log on the test's stderr

        server = _Server(("127.0.0.1", 0), Handler)
        # The TLS handshake happens in each request's thread, so a stalled client never blocks accept().
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server, self.port = server, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name=f"webhook-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving: the listener and every open connection close (the API server keeps connections alive, so
        closing only the listener would leave the webhook answering). Calls that follow fail to connect."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._server = None

    # --- registration ------------------------------------------------------------------------------------------

    def configuration(self) -> Obj:
        """The MutatingWebhookConfiguration (API reference "MutatingWebhookConfiguration v1 admissionregistration")."""
        ca = pki.Pki(self.cluster.state / "pki").ca_cert
        return {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": self.name},
            "webhooks": [{
                "name": "sidecar-injector.hostile.localcluster.io",
                "clientConfig": {"url": self.url, "caBundle": base64.b64encode(ca.read_bytes()).decode()},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "namespaceSelector": {"matchLabels": {self.label_key: self.label_value}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
                "reinvocationPolicy": "Never",
            }],
        }

    def register(self, timeout: float = 30.0) -> None:
        """Apply the configuration; return once a dry-run pod in a labelled canary namespace comes back injected
        (the API server's webhook informer has it)."""
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(self.configuration()))
        self.cluster.kubectl("create", "namespace", self.canary_namespace, check=False)
        self.cluster.kubectl("label", "namespace", self.canary_namespace,
                             f"{self.label_key}={self.label_value}", "--overwrite")
        self._wait_canary(injected=True, timeout=timeout)

    def unregister(self, timeout: float = 30.0) -> None:
        """Delete the configuration; return once the API server no longer calls the webhook."""
        self.cluster.kubectl("delete", "mutatingwebhookconfiguration", self.name, "--ignore-not-found")
        try:
            self._wait_canary(injected=False, timeout=timeout)
        finally:
            self.cluster.kubectl("delete", "namespace", self.canary_namespace, "--ignore-not-found", "--wait=false")

    def _wait_canary(self, injected: bool, timeout: float) -> None:
        from localcluster import hostile

        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"canary-{uuid.uuid4().hex[:8]}"},
               "spec": {"containers": [{"name": "c", "image": "docker.io/library/busybox:1.36"}]}}
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            got = hostile.create(self.cluster, self.canary_namespace, pod, dry_run=True)
            if got.ok:  # (refused while the namespace's default ServiceAccount does not exist yet)
                names = [c["name"] for c in got.body["spec"]["containers"]]
                if (PROXY_CONTAINER in names) == injected:
                    return
            last = got.status if got.ok else got.message
            if time.monotonic() > deadline:
                raise TimeoutError(f"webhook {self.name}: a canary pod was not {'' if injected else 'un'}injected "
                                   f"within {timeout:.0f} s (last: {last})")
            time.sleep(0.2)


@contextlib.contextmanager
def sidecar_injector(cluster: Cluster, honour_opt_outs: bool = True,
                     label: tuple[str, str] = DEFAULT_LABEL, name: str = "hostile-sidecar-injector",
                     image: str = ISTIO_PROXY_IMAGE, resources: Obj | None = None) -> Iterator[SidecarInjector]:
    """Run the injector and register it for namespaces labelled ``label`` (key, value); undo both on exit.
    ``honour_opt_outs=False`` is a mis-configured injector that injects every pod there, opt-outs or not.
    ``resources`` (e.g. istio's defaults ``{"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2",
    "memory": "1Gi"}}``) are given to the injected container; by default it has none."""
    injector = SidecarInjector(cluster, name=name, label_key=label[0], label_value=label[1],
                               honour_opt_outs=honour_opt_outs, image=image, resources=resources)
    injector.start()
    try:
        injector.register()
        try:
            yield injector
        finally:
            injector.unregister()
    finally:
        injector.stop()
