"""Harness for the operator tests against the real API server (the session ``cluster`` of tests/conftest.py).

* ``InProcessOperator``: the real Operator in a thread with its own event loop, so a test can compare its index
  with a rebuild from a fresh LIST;
* ``OperatorProcess``: the real ``python -m netpol_auditor.controller`` (= ``netpol-auditor run``) as a child
  process, for kill/restart, HA and RBAC tests; talks to it over /metrics and /readyz only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netpol_auditor.controller.app import Operator
from netpol_auditor.controller.settings import Settings
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import parse_object
from netpol_auditor.model import PortProtocol

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], T], timeout: float = 60.0, interval: float = 0.2) -> T:
    """Poll *check* until it returns something truthy; fail with *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # not yet: connection refused, API not back, ...
            last = exc
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def scrape(port: int) -> dict[str, list[Any]]:
    """Parse /metrics with prometheus_client's text parser: family name -> samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as rsp:
        text = rsp.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as rsp:
            return rsp.status, rsp.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


def list_all(api_client: Any) -> list[dict[str, Any]]:
    """Every Namespace, Pod and NetworkPolicy as the API has them now (a fresh LIST)."""
    from netpol_auditor.controller.resync import list_objects
    from netpol_auditor.model import ObjectKind

    out: list[dict[str, Any]] = []
    for kind, api_kind, version in ((ObjectKind.NAMESPACE, "Namespace", "v1"), (ObjectKind.POD, "Pod", "v1"),
                                    (ObjectKind.NETWORK_POLICY, "NetworkPolicy", "networking.k8s.io/v1")):
        out.extend({**o, "kind": api_kind, "apiVersion": version} for o in list_objects(api_client, kind))
    return out


def rebuild(api_client: Any) -> ReachabilityIndex:
    parsed = [parse_object(o, "api") for o in list_all(api_client)]
    return ReachabilityIndex.from_objects(o for o in parsed if o is not None)


def index_fingerprint(index: ReachabilityIndex, ports: tuple[PortProtocol, ...] = (PortProtocol(80),)) -> Any:
    """What must be equal between the live index and a rebuild: objects, selections and path counts."""
    return (
        index.pods(),
        index.policies(),
        [(ns.name, dict(ns.labels)) for ns in index.namespaces()],
        index.policy_selected_pods(),
        index.path_counts(ports),
    )


class InProcessOperator:
    """The real Operator on its own event loop in a thread."""

    def __init__(self, settings: Settings, api_client: Any) -> None:
        self.settings = settings
        self._api_client = api_client
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.operator: Operator | None = None
        self.error: BaseException | None = None

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self.error = exc
            self._started.set()

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.operator = Operator(self.settings, self._api_client)
        self._started.set()
        await self.operator.run(self._stop)

    def start(self) -> InProcessOperator:
        self._thread.start()
        self._started.wait(30)
        if self.error is not None:
            raise self.error
        wait_for("the operator to be ready", lambda: self.call(lambda op: op.synced), timeout=60)
        return self

    def call(self, fn: Callable[[Operator], T]) -> T:
        """Run *fn(operator)* on the operator's loop (the index is only touched there) and return its result."""
        assert self.loop is not None and self.operator is not None
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn(self.operator))  # type: ignore[arg-type]
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    def stop(self) -> None:
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(60)
            assert not self._thread.is_alive(), "the operator did not stop within 60s"


class OperatorProcess:
    """``python -m netpol_auditor.controller`` as a child process with its own ports and log file."""

    def __init__(self, kubeconfig: Path | str, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.log = log
        argv = [sys.executable, "-m", "netpol_auditor.controller", "--kubeconfig", str(kubeconfig),
                "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port),
                "--liveness", f"http://127.0.0.1:{self.health_port}/healthz", *args]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_AUDITOR_")}
        full_env.update(env or {})
        self._log_file = open(log, "ab")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._log_file, stderr=subprocess.STDOUT, env=full_env)

    def scrape(self) -> dict[str, list[Any]]:
        return scrape(self.metrics_port)

    def readyz(self) -> tuple[int, str]:
        return readyz(self.metrics_port)

    def healthz(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=5) as rsp:
            return int(rsp.status)

    def gauge(self, name: str, **labels: str) -> float | None:
        for sample in self.scrape().get(name, []):
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
        return None

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_for(f"/readyz of {self.log.name}", lambda: self.readyz() == (200, "ready"), timeout=timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_file.close()
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def apply(cluster: Any, manifest: str | Path) -> None:
    if isinstance(manifest, Path):
        cluster.kubectl("apply", "-f", str(manifest))
    else:
        cluster.kubectl("apply", "-f", "-", input=manifest)


CLUSTER_POLICY_CRDS = Path(__file__).with_name("manifests") / "cluster-policy-crds.yaml"
_CLUSTER_POLICY_APIS = (("adminnetworkpolicies", "v1alpha1"), ("baselineadminnetworkpolicies", "v1alpha1"),
                        ("clusternetworkpolicies", "v1alpha2"))


def cluster_policy_api_served(api_client: Any, plural: str, version: str) -> bool:
    """Whether the API server serves policy.networking.k8s.io/*version* *plural* (a LIST answers, not 404)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        client.CustomObjectsApi(api_client).list_cluster_custom_object("policy.networking.k8s.io", version, plural,
                                                                       limit=1)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def install_cluster_policy_crds(cluster: Any, api_client: Any) -> None:
    """The stand-in CRDs of AdminNetworkPolicy, BaselineAdminNetworkPolicy and ClusterNetworkPolicy, once served."""
    cluster.kubectl("apply", "-f", str(CLUSTER_POLICY_CRDS))
    wait_for("the cluster policy APIs to be served",
             lambda: all(cluster_policy_api_served(api_client, *api) for api in _CLUSTER_POLICY_APIS), timeout=60)


def remove_cluster_policy_crds(cluster: Any, api_client: Any) -> None:
    """No cluster policy API served (their objects go with the CRDs)."""
    cluster.kubectl("delete", "-f", str(CLUSTER_POLICY_CRDS), "--ignore-not-found", "--wait=true", timeout=120)
    wait_for("the cluster policy APIs to be gone",
             lambda: not any(cluster_policy_api_served(api_client, *api) for api in _CLUSTER_POLICY_APIS), timeout=60)


def delete_namespaces(cluster: Any, *names: str) -> None:
    cluster.kubectl("delete", "namespace", "--ignore-not-found", "--wait=false", *names)


def json_of(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json"))


def fresh_namespaces(cluster: Any, *names: str) -> None:
    """Make sure *names* do not exist (left over by an earlier, failed run): delete them and wait until gone."""
    cluster.kubectl("delete", "namespace", "--ignore-not-found", "--wait=true", *names, timeout=180)
