"""The control plane: etcd, kube-apiserver and kube-controller-manager as detached processes on 127.0.0.1.

Each process is started in its own session (so it outlives ``python -m localcluster up``), logs to
``<state>/logs/<name>.log`` and is recorded in ``<state>/pids/<name>.json`` with its kernel start time, so ``down``
stops exactly the process it started even if the pid was reused since.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from localcluster import build, pki

__all__ = [
    "CONTROLLERS",
    "ControlPlane",
    "ControlPlaneConfig",
    "api_get",
    "free_port",
    "port_free",
    "process_alive",
    "read_pid",
    "recorded_processes",
    "spawn",
    "start_control_plane",
    "stop_process",
    "wait_api_ready",
    "wait_ready",
]

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service's ClusterIP
CLUSTER_DOMAIN = "cluster.local"
ISSUER = f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}"

# kube-controller-manager controllers we run, and why (canonical names, `kube-controller-manager --help`):
CONTROLLERS = (
    "namespace-controller",  # deleting a namespace deletes its contents, then the namespace
    "garbage-collector-controller",  # ownerReferences: dependents go when their owner goes
    "serviceaccount-controller",  # the `default` ServiceAccount in every namespace (pods need one to be admitted)
    "serviceaccount-token-controller",  # token Secrets for ServiceAccounts that ask for them
    "root-ca-certificate-publisher-controller",  # `kube-root-ca.crt` ConfigMaps: in-cluster clients read their CA
    "clusterrole-aggregation-controller",  # fills the aggregated admin/edit/view ClusterRoles charts bind to
    "endpoints-controller",  # Endpoints for Services
    "endpointslice-controller",  # EndpointSlices for Services
    "endpointslice-mirroring-controller",  # EndpointSlices for selector-less Services with manual Endpoints
    "service-cidr-controller",  # ServiceCIDR objects (MultiCIDRServiceAllocator, on by default in 1.33)
    "replicaset-controller",  # Deployments -> ReplicaSets -> Pods
    "deployment-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",  # probe Jobs, Helm hooks
    "cronjob-controller",
    "ttl-after-finished-controller",  # finished Jobs with ttlSecondsAfterFinished go away
    "pod-garbage-collector-controller",  # orphaned and terminated Pods are collected
    "disruption-controller",  # PodDisruptionBudget status (charts ship PDBs)
    "resourcequota-controller",  # ResourceQuota status, so quota admission has numbers to check
    "certificatesigningrequest-signing-controller",  # CSRs signed with the cluster CA (--cluster-signing-*)
    "certificatesigningrequest-approving-controller",
    "certificatesigningrequest-cleaner-controller",
)
# Deliberately not run: node-ipam (node pod CIDRs are assigned by the node set, 10.244.N.0/24), node-lifecycle (no
# taint-based eviction of pods on simulated nodes), persistent volumes, cloud/service load balancers, routes,
# bootstrap tokens, horizontal autoscaling (no metrics API).


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    """Could a server listen on 127.0.0.1:``port`` now? As kube-apiserver binds with SO_REUSEADDR (Go's net.Listen
    sets it on every listening socket), a port held only by connections in TIME_WAIT (left by a cluster just
    stopped) is free; without the option, the test bind fails for a minute after ``down``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# --- processes ---------------------------------------------------------------------------------------------------

def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def spawn(state: Path, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached (new session, stdin from /dev/null, output to ``<state>/logs/<name>.log``)."""
    (state / "logs").mkdir(parents=True, exist_ok=True)
    (state / "pids").mkdir(parents=True, exist_ok=True)
    with open(state / "logs" / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
    record = {"pid": proc.pid, "start_time": _start_time(proc.pid), "argv": list(argv)}
    (state / "pids" / f"{name}.json").write_text(json.dumps(record))
    return proc.pid


def read_pid(state: Path, name: str) -> dict[str, object] | None:
    try:
        record: dict[str, object] = json.loads((state / "pids" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    return record


def recorded_processes(state: Path) -> list[str]:
    return sorted(p.stem for p in (state / "pids").glob("*.json"))


def process_alive(state: Path, name: str) -> bool:
    """Is the process recorded under ``name`` still the one we started (same pid and start time)?"""
    rec = read_pid(state, name)
    if rec is None:
        return False
    pid, started = rec.get("pid"), rec.get("start_time")
    return isinstance(pid, int) and started is not None and _start_time(pid) == started


def stop_process(state: Path, name: str, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``, the process recorded as ``name``; forget it. Idempotent."""
    rec = read_pid(state, name)
    if rec is not None and process_alive(state, name):
        pid = rec["pid"]
        assert isinstance(pid, int)
        with _ignore_gone():
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process_alive(state, name) and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_alive(state, name):
            with _ignore_gone():
                os.kill(pid, signal.SIGKILL)
            while process_alive(state, name):
                time.sleep(0.02)
    (state / "pids" / f"{name}.json").unlink(missing_ok=True)


class _ignore_gone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        return typ is ProcessLookupError


# --- configuration -----------------------------------------------------------------------------------------------

@dataclass
class ControlPlaneConfig:
    state: Path
    api_port: int = 6443
    etcd_port: int = 0
    etcd_peer_port: int = 0
    kcm_port: int = 0
    log_level: int = 1

    def resolve_ports(self) -> None:
        """Pick free ports for everything not fixed (0); refuse a taken API port rather than clash with a cluster."""
        if self.api_port == 0:
            self.api_port = free_port()
        elif not port_free(self.api_port):
            raise RuntimeError(f"127.0.0.1:{self.api_port} is in use (another cluster?); use --api-port 0 or another "
                               "port, or a separate state directory")
        taken = {self.api_port}
        for attr in ("etcd_port", "etcd_peer_port", "kcm_port"):
            if getattr(self, attr) == 0:
                port = free_port()
                while port in taken:
                    port = free_port()
                setattr(self, attr, port)
            taken.add(getattr(self, attr))


@dataclass
class ControlPlane:
    """What a running control plane offers its clients; saved as ``<state>/controlplane.json``."""

    state: Path
    api_port: int
    etcd_port: int
    kcm_port: int
    version: str
    kubeconfig: Path
    ca_cert: Path
    admin_cert: Path
    admin_key: Path
    processes: list[str] = field(default_factory=lambda: ["etcd", "kube-apiserver", "kube-controller-manager"])

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def save(self) -> None:
        data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        (self.state / "controlplane.json").write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, state: Path) -> ControlPlane | None:
        try:
            d = json.loads((state / "controlplane.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(state=Path(d["state"]), api_port=int(d["api_port"]), etcd_port=int(d["etcd_port"]),
                   kcm_port=int(d["kcm_port"]), version=str(d["version"]), kubeconfig=Path(d["kubeconfig"]),
                   ca_cert=Path(d["ca_cert"]), admin_cert=Path(d["admin_cert"]), admin_key=Path(d["admin_key"]),
                   processes=[str(n) for n in d["processes"]])


# --- API access with the standard library (fast, and usable before any client library is imported) -------------

def _ssl_context(cp: ControlPlane) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cp.ca_cert))
    ctx.load_cert_chain(str(cp.admin_cert), str(cp.admin_key))
    return ctx


def api_get(cp: ControlPlane, path: str, timeout: float = 5.0, method: str = "GET") -> tuple[int, bytes]:
    """GET (or ``method``) ``path`` as the admin user; (status, body). Connection errors raise OSError."""
    conn = http.client.HTTPSConnection("127.0.0.1", cp.api_port, context=_ssl_context(cp), timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _wait(cp: ControlPlane, path: str, what: str, deadline: float, processes: Sequence[str]) -> None:
    last = ""
    while True:
        for name in processes:
            if not process_alive(cp.state, name):
                raise RuntimeError(f"{name} exited while waiting for {what}; see {cp.state}/logs/{name}.log")
        try:
            status, body = api_get(cp, path)
            if status == 200:
                return
            last = f"HTTP {status}: {body[:300]!r}"
        except (OSError, http.client.HTTPException) as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready ({last}); see {cp.state}/logs/")
        time.sleep(0.1)


def wait_api_ready(cp: ControlPlane, timeout: float = 120.0) -> None:
    """Until the API server's /readyz is ok (RBAC bootstrap roles, priority classes, ... are in place)."""
    _wait(cp, "/readyz", "API server /readyz", time.monotonic() + timeout, ["etcd", "kube-apiserver"])


def wait_ready(cp: ControlPlane, timeout: float = 120.0) -> None:
    """Until /readyz is ok and the `default` ServiceAccount exists in `default` (pods can then be admitted)."""
    deadline = time.monotonic() + timeout
    _wait(cp, "/readyz", "API server /readyz", deadline, cp.processes)
    _wait(cp, "/api/v1/namespaces/default/serviceaccounts/default", "ServiceAccount default/default", deadline,
          cp.processes)


# --- start ---------------------------------------------------------------------------------------------------------

def _etcd_argv(cfg: ControlPlaneConfig) -> list[str]:
    client = f"http://127.0.0.1:{cfg.etcd_port}"
    peer = f"http://127.0.0.1:{cfg.etcd_peer_port}"
    return [
        str(build.binary("etcd")), "--name", "localcluster", "--data-dir", str(cfg.state / "etcd"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"localcluster={peer}", "--initial-cluster-state", "new",
        "--logger", "zap", "--log-level", "warn",
        "--quota-backend-bytes", str(2 * 2**30),
        "--snapshot-count", "10000",
        # A throw-away test cluster: losing the last writes on a machine crash is fine, fsync latency is not.
        "--unsafe-no-fsync",
    ]


def _apiserver_argv(cfg: ControlPlaneConfig, p: pki.Pki) -> list[str]:
    return [
        str(build.binary("kube-apiserver")),
        f"--etcd-servers=http://127.0.0.1:{cfg.etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={cfg.api_port}",
        f"--tls-cert-file={p.serving_cert}",
        f"--tls-private-key-file={p.serving_key}",
        f"--client-ca-file={p.ca_cert}",
        "--authorization-mode=Node,RBAC",
        "--anonymous-auth=true",  # upstream default: /readyz, /livez and /version stay readable, as in kubeadm
        # Defaults (NamespaceLifecycle, LimitRanger, ServiceAccount, PodSecurity, ResourceQuota, ...) stay on;
        # NodeRestriction is added as kubeadm does. PodSecurity enforces the pod-security.kubernetes.io/* labels.
        "--enable-admission-plugins=NodeRestriction",
        f"--service-account-issuer={ISSUER}",
        f"--service-account-key-file={p.sa_pub}",
        f"--service-account-signing-key-file={p.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Request-header authentication for the aggregation layer (extension API servers), as kubeadm sets it up.
        f"--requestheader-client-ca-file={p.front_proxy_ca.ca_cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={p.front_proxy_ca.client('front-proxy-client')[0]}",
        f"--proxy-client-key-file={p.front_proxy_ca.client('front-proxy-client')[1]}",
        "--allow-privileged=true",
        "--profiling=false",
        # Endpoints may not hold loopback addresses (ValidateNonSpecialIP), and ours is 127.0.0.1: no reconciler.
        "--endpoint-reconciler-type=none",
        f"--cert-dir={cfg.state / 'pki'}",
        f"--v={cfg.log_level}",
    ]


def _kcm_argv(cfg: ControlPlaneConfig, p: pki.Pki, kubeconfig: Path) -> list[str]:
    return [
        str(build.binary("kube-controller-manager")),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={cfg.kcm_port}",
        f"--cert-dir={cfg.state / 'pki' / 'kcm'}",
        f"--controllers={','.join(CONTROLLERS)}",
        "--use-service-account-credentials=true",
        f"--root-ca-file={p.ca_cert}",
        f"--service-account-private-key-file={p.sa_key}",
        f"--cluster-signing-cert-file={p.ca_cert}",
        f"--cluster-signing-key-file={p.ca_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--leader-elect=false",  # a single instance; a dead instance's lease would otherwise delay restarts 15 s
        "--profiling=false",
        f"--v={cfg.log_level}",
    ]


def start_control_plane(cfg: ControlPlaneConfig, timeout: float = 120.0) -> ControlPlane:
    """Start etcd, kube-apiserver and kube-controller-manager; return once the API can admit pods."""
    state = cfg.state
    cfg.resolve_ports()
    state.mkdir(parents=True, exist_ok=True)
    build.build(("etcd", "kube-apiserver", "kube-controller-manager"), verbose=True)
    p = pki.ensure_pki(state / "pki", SERVICE_IP)
    admin_cert, admin_key = pki.issue_client_cert(p, "admin", "kubernetes-admin", ("system:masters",))
    kcm_cert, kcm_key = pki.issue_client_cert(p, "kube-controller-manager", "system:kube-controller-manager")
    server = f"https://127.0.0.1:{cfg.api_port}"
    kubeconfig = pki.write_kubeconfig(state / "admin.kubeconfig", server, p, admin_cert, admin_key, "admin")
    kcm_kubeconfig = pki.write_kubeconfig(state / "kube-controller-manager.kubeconfig", server, p, kcm_cert, kcm_key,
                                          "system:kube-controller-manager")
    cp = ControlPlane(state=state, api_port=cfg.api_port, etcd_port=cfg.etcd_port, kcm_port=cfg.kcm_port,
                      version=build.k8s_version(), kubeconfig=kubeconfig, ca_cert=p.ca_cert, admin_cert=admin_cert,
                      admin_key=admin_key)
    cp.save()
    deadline = time.monotonic() + timeout
    spawn(state, "etcd", _etcd_argv(cfg))
    spawn(state, "kube-apiserver", _apiserver_argv(cfg, p))
    # The controller manager starts once RBAC's bootstrap roles exist: before that it cannot read its own
    # authentication configuration and exits.
    wait_api_ready(cp, timeout)
    spawn(state, "kube-controller-manager", _kcm_argv(cfg, p, kcm_kubeconfig))
    wait_ready(cp, max(1.0, deadline - time.monotonic()))
    return cp
