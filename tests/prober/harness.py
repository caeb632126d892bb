"""Drive the real ProbeLoop against the real API server from a test: an index kept in sync by re-listing (as the
operator's watch would), the loop in its own event loop thread, and expectations per fault mode."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from prometheus_client import CollectorRegistry

from netpol_auditor.controller.settings import Settings
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import parse_object
from netpol_auditor.model import Namespace, NetworkPolicy, ObjectKind, Pod
from netpol_auditor.prober.compare import Outcome
from netpol_auditor.prober.loop import ProbeLoop
from netpol_auditor.prober.plan import MANAGED_BY_LABEL, MANAGED_BY_VALUE, PathKey

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "charts" / "netpol-auditor" / "crds" / "proberuns.yaml"
MANIFESTS = Path(__file__).resolve().parent / "manifests"


def wait_for(what: str, check: Callable[[], T], timeout: float = 60.0, interval: float = 0.3) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # not yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def client_server(namespace: str, server_ports: str = "[{name: http, containerPort: 8080}]") -> str:
    """A namespace with a ``client`` pod on node-1 (port 7000) and a ``server`` pod on node-2 (``server_ports``)."""
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {namespace}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {namespace}, labels: {{app: client}}}}
spec:
  nodeName: node-1
  containers: [{{name: c, image: client, ports: [{{containerPort: 7000}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: server, namespace: {namespace}, labels: {{app: server}}}}
spec:
  nodeName: node-2
  containers: [{{name: s, image: server, ports: {server_ports}}}]
"""


def deny_to_server(namespace: str) -> str:
    """A NetworkPolicy ``deny-to-server`` isolating the ``server`` pod of `client_server` for ingress."""
    return f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny-to-server, namespace: {namespace}}}
spec:
  podSelector: {{matchLabels: {{app: server}}}}
  policyTypes: [Ingress]
"""


def list_objects(api: Any) -> list[Namespace | Pod | NetworkPolicy]:
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    out: list[Namespace | Pod | NetworkPolicy] = []
    for kind, api_version, items in (
        ("Namespace", "v1", core.list_namespace().items),
        ("Pod", "v1", core.list_pod_for_all_namespaces().items),
        ("NetworkPolicy", "networking.k8s.io/v1", net.list_network_policy_for_all_namespaces().items),
    ):
        for item in items:
            raw = api.sanitize_for_serialization(item)
            raw.update(kind=kind, apiVersion=api_version)
            if kind == "Pod" and (raw["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE:
                continue  # the operator's own probe pods are not workloads
            obj = parse_object(raw)
            if obj is not None:
                out.append(obj)
    return out


def sync_index(index: ReachabilityIndex, api: Any) -> None:
    """Bring ``index`` in line with the cluster: upsert what exists, delete what is gone."""
    _apply(index, list_objects(api))


def install_crd(cluster: Any) -> None:
    cluster.kubectl("apply", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/proberuns.netpol-auditor.io", "--timeout=60s")


def apply(cluster: Any, path: Path | str, text: str | None = None, timeout: float = 60.0) -> None:
    """``kubectl apply``, retried while a namespace created by the same apply has no ``default`` ServiceAccount
    yet (the serviceaccount controller creates it asynchronously, so pods in it are refused for a moment; apply is
    idempotent)."""
    args = ("apply", "-f", "-") if text is not None else ("apply", "-f", str(path))
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster.kubectl(*args, input=text)
            return
        except subprocess.CalledProcessError as exc:
            if 'serviceaccount "default" not found' not in (exc.stderr or "") or time.monotonic() > deadline:
                raise
            time.sleep(1)


def pods_running(cluster: Any, namespaces: Iterable[str]) -> bool:
    for ns in namespaces:
        data = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json"))
        if not data["items"] or any(p["status"].get("phase") != "Running" for p in data["items"]):
            return False
    return True


def probe_pods(cluster: Any) -> list[dict[str, Any]]:
    data = json.loads(cluster.kubectl("get", "pods", "-A", "-l", f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}",
                                      "-o", "json"))
    items: list[dict[str, Any]] = data["items"]
    return items


class ProbePodWatch:
    """Every version of every probe pod, through a watch: on a loaded machine a probe pod can start, connect and be
    deleted between two polls (`probe_pods`), so a test that must see each one watches instead."""

    def __init__(self, api_client: Any) -> None:
        self.versions: list[dict[str, Any]] = []
        self._api = api_client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe-pod-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self._api)
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    listed = core.list_pod_for_all_namespaces(label_selector=selector)
                    self.versions += [self._api.sanitize_for_serialization(p) for p in listed.items]
                    version = listed.metadata.resource_version
                for event in watch.Watch().stream(core.list_pod_for_all_namespaces, label_selector=selector,
                                                  resource_version=version, timeout_seconds=1):
                    obj = event["object"]
                    version = obj.metadata.resource_version
                    self.versions.append(self._api.sanitize_for_serialization(obj))
            except ApiException as exc:
                if exc.status == 410:
                    version = ""  # expired: list again (a pod that came and went meanwhile is lost: rare)
                else:
                    time.sleep(0.2)

    def stop(self) -> dict[str, dict[str, Any]]:
        """Stop watching; the last version seen of each probe pod, by name."""
        self._stop.set()
        self._thread.join(timeout=10)
        return {v["metadata"]["name"]: v for v in self.versions}


def fault(cluster: Any, *args: str) -> None:
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "localcluster", "--state", str(cluster.state),
                    "fault", *args], check=True, capture_output=True, cwd=ROOT, timeout=180)


@dataclass
class RunningProber:
    """A ProbeLoop running in a background thread (its own asyncio loop), with the index re-synced every second."""

    loop: ProbeLoop
    api: Any
    thread: threading.Thread
    aio: asyncio.AbstractEventLoop
    stopped: asyncio.Event
    registry: CollectorRegistry
    lock: threading.Lock

    @classmethod
    def start(cls, api: Any, settings: Settings, index: ReachabilityIndex | None = None) -> RunningProber:
        index = index if index is not None else ReachabilityIndex()
        sync_index(index, api)
        registry = CollectorRegistry()
        loop = ProbeLoop(index, settings, api, registry=registry)
        aio = asyncio.new_event_loop()
        ready = threading.Event()
        holder: dict[str, Any] = {}

        def main() -> None:
            asyncio.set_event_loop(aio)
            stopped = asyncio.Event()
            holder["stopped"] = stopped
            ready.set()

            async def resync() -> None:
                while not stopped.is_set():
                    await asyncio.sleep(1.0)
                    objs = await asyncio.to_thread(list_objects, api)
                    _apply(index, objs)

            async def both() -> None:
                task = asyncio.ensure_future(resync())
                try:
                    await loop.run(stopped)
                finally:
                    task.cancel()

            aio.run_until_complete(both())

        thread = threading.Thread(target=main, name="prober", daemon=True)
        thread.start()
        ready.wait(10)
        return cls(loop, api, thread, aio, holder["stopped"], registry, threading.Lock())

    def cycles(self) -> int:
        return self.loop.planner.cycles_completed

    def wait_cycles(self, n: int, timeout: float = 240.0) -> None:
        wait_for(f"{n} completed probe cycles", lambda: self.cycles() >= n, timeout=timeout, interval=0.5)

    def stop(self, timeout: float = 60.0) -> None:
        self.aio.call_soon_threadsafe(self.stopped.set)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the probe loop did not stop"

    def mismatched(self) -> set[PathKey]:
        return set(self.loop.comparator.mismatches)

    def mismatched_within(self, expected: Callable[[], set[PathKey]], cycles: int = 3) -> set[PathKey]:
        """The mismatches once they equal ``expected()``, waiting up to ``cycles`` more probe cycles for it.

        Right after a fault stops kube-router on a node, fresh pods on that node can see routed connections (to
        another node or outside the cluster) time out for seconds while bridged ones on the node succeed: no rule
        is left (iptables-save shows none), yet the connection looks DROPped, so a path the fault opened can be
        judged as enforced for one cycle. Reproduced outside the prober with plain probe pods (3 of 56 pods
        after `fault set-none`; none of 600 in a cluster that never ran kube-router). A path's latest
        observation is what counts, so the next cycle corrects it; the caller's assertion stays exact."""
        got = self.mismatched()
        for _ in range(cycles):
            if got == expected():
                break
            self.wait_cycles(self.cycles() + 1)
            got = self.mismatched()
        return got

    def judged(self) -> dict[PathKey, Any]:
        return {k: v for k, v in self.loop.observations.items() if v[2] in (Outcome.MATCH, Outcome.MISMATCH)}


def _apply(index: ReachabilityIndex, objs: list[Namespace | Pod | NetworkPolicy]) -> None:
    # the loop reads the index between awaits only, from the same event loop thread: no lock needed
    for obj in objs:
        index.upsert(obj)
    pods = {(o.namespace, o.name) for o in objs if isinstance(o, Pod)}
    pols = {(o.namespace, o.name) for o in objs if isinstance(o, NetworkPolicy)}
    for p in index.pods():
        if (p.namespace, p.name) not in pods:
            index.delete(ObjectKind.POD, p.namespace, p.name)
    for pol in index.policies():
        if (pol.namespace, pol.name) not in pols:
            index.delete(ObjectKind.NETWORK_POLICY, pol.namespace, pol.name)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OperatorProcess:
    """The real operator (``python -m netpol_auditor.controller``, i.e. ``netpol-auditor run``) as a child process;
    read over /metrics only."""

    def __init__(self, kubeconfig: Path | str, log: Path, *args: str) -> None:
        import os
        import sys

        self.metrics_port = free_port()
        self.health_port = free_port()
        argv = [sys.executable, "-m", "netpol_auditor.controller", "--kubeconfig", str(kubeconfig), "--standalone",
                "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port),
                "--liveness", f"http://127.0.0.1:{self.health_port}/healthz", *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_AUDITOR_")}
        self.log = log
        self._log_file = open(log, "ab")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)

    def samples(self, name: str) -> list[Any]:
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as rsp:
            text = rsp.read().decode()
        return [s for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` matching ``labels`` (0 when there is none)."""
        return sum(s.value for s in self.samples(name) if all(s.labels.get(k) == v for k, v in labels.items()))

    def kill(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log_file.close()

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if not self._log_file.closed:
            self._log_file.close()
