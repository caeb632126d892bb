"""A real monitoring stack for the tests and the demo: Debian's Prometheus and Alertmanager on loopback.

Prometheus scrapes the operator the way the Prometheus Operator scrapes it through the chart's ServiceMonitor
(`service_monitor_scrape_config`), evaluates the chart's own alert rules (the PrometheusRule ``helm template``
renders, `render_chart`) and sends to Alertmanager, which routes every alert to a `WebhookReceiver` that records
what it gets. Everything listens on 127.0.0.1 on free ports and lives in one directory. Test and demo
infrastructure, like the rest of localcluster/: never shipped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["MonitoringStack", "WebhookReceiver", "helm_binary", "render_chart", "service_monitor_scrape_config",
           "start_for_chart"]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "netpol-auditor"
INSTALL_HELM = ROOT / "charts" / "install-helm.sh"
PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"  # Debian's name of the alertmanager binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the chart -------------------------------------------------------------------------------------------------


def helm_binary() -> Path:
    """The helm v3 binary charts/install-helm.sh installs (built once, then cached)."""
    proc = subprocess.run(["bash", str(INSTALL_HELM)], capture_output=True, text=True, timeout=1500, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"charts/install-helm.sh failed:\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


def render_chart(values: Mapping[str, Any], *, release: str, namespace: str,
                 helm: Path | None = None) -> list[dict[str, Any]]:
    """The documents ``helm template`` renders from the chart with ``values`` (dotted keys, set as JSON)."""
    args = [str(helm or helm_binary()), "template", release, str(CHART), "--namespace", namespace]
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"helm template failed:\n{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _sanitize(name: str) -> str:
    """A Kubernetes label name as service discovery spells it in a ``__meta_`` label."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _relabel(config: Mapping[str, Any]) -> dict[str, Any]:
    """A ServiceMonitor RelabelConfig (camelCase) as Prometheus configuration (snake_case, action lower case)."""
    out = {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): v for k, v in config.items()}
    if "action" in out:
        out["action"] = str(out["action"]).lower()
    return out


def service_monitor_scrape_config(service_monitor: Mapping[str, Any], service: Mapping[str, Any], *, address: str,
                                  pod: str, container: str) -> dict[str, Any]:
    """The scrape config the Prometheus Operator generates for the ServiceMonitor's endpoint, with one static
    target standing in for the metrics Service's endpoint at ``address``.

    The target carries the ``__meta_kubernetes_*`` labels Prometheus' endpoints discovery would give it, and the
    relabelings are the operator's (prometheus-operator pkg/prometheus/promcfg.go; its golden files
    pkg/prometheus/testdata/*ServiceMonitor*.golden): keep on the selector's labels and the port name, target
    labels ``namespace``, ``service``, ``pod``, ``container``, ``endpoint`` and ``job`` (the Service's name), then
    the endpoint's own relabelings; ``honor_labels`` false, so a scraped label that a target label already has
    (the operator's ``namespace`` label) is kept as ``exported_<name>``. Hash-mod sharding (one shard) is left out.
    """
    (endpoint,) = service_monitor["spec"]["endpoints"]
    selector = service_monitor["spec"]["selector"]["matchLabels"]
    svc_ns = service["metadata"]["namespace"]
    wanted = service_monitor["spec"].get("namespaceSelector", {}).get("matchNames", [svc_ns])
    if svc_ns not in wanted:
        raise ValueError(f"the ServiceMonitor does not select namespace {svc_ns} (only {wanted})")
    (port,) = [p for p in service["spec"]["ports"] if p.get("name") == endpoint["port"]]
    meta: dict[str, str] = {
        "__meta_kubernetes_namespace": svc_ns,
        "__meta_kubernetes_service_name": service["metadata"]["name"],
        "__meta_kubernetes_endpoint_port_name": port["name"],
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": pod,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_container_name": container,
        "__meta_kubernetes_pod_phase": "Running",
    }
    for key, value in (service["metadata"].get("labels") or {}).items():
        meta[f"__meta_kubernetes_service_label_{_sanitize(key)}"] = str(value)
        meta[f"__meta_kubernetes_service_labelpresent_{_sanitize(key)}"] = "true"
    relabel: list[dict[str, Any]] = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    relabel += [{"action": "keep", "source_labels": [f"__meta_kubernetes_service_label_{_sanitize(k)}",
                                                     f"__meta_kubernetes_service_labelpresent_{_sanitize(k)}"],
                 "regex": f"({re.escape(str(v))});true"} for k, v in sorted(selector.items())]
    relabel += [
        {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": endpoint["port"]},
        *({"source_labels": ["__meta_kubernetes_endpoint_address_target_kind",
                             "__meta_kubernetes_endpoint_address_target_name"],
           "separator": ";", "regex": f"{kind};(.*)", "replacement": "${1}", "target_label": label}
          for kind, label in (("Node", "node"), ("Pod", "pod"))),
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"},
        {"target_label": "endpoint", "replacement": endpoint["port"]},
        *(_relabel(r) for r in endpoint.get("relabelings", [])),
    ]
    config: dict[str, Any] = {
        "job_name": f"serviceMonitor/{service_monitor['metadata']['namespace']}/"
                    f"{service_monitor['metadata']['name']}/0",
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "metrics_path": endpoint.get("path", "/metrics"),
        "static_configs": [{"targets": [address], "labels": meta}],
        "relabel_configs": relabel,
    }
    if endpoint.get("interval"):
        config["scrape_interval"] = endpoint["interval"]
    if endpoint.get("scrapeTimeout"):
        config["scrape_timeout"] = endpoint["scrapeTimeout"]
    if endpoint.get("metricRelabelings"):
        config["metric_relabel_configs"] = [_relabel(r) for r in endpoint["metricRelabelings"]]
    return config


def _one(docs: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def start_for_chart(docs: Sequence[Mapping[str, Any]], directory: Path, *, address: str, pod: str,
                    **options: Any) -> MonitoringStack:
    """The stack a chart rendered with its ServiceMonitor and PrometheusRule (``docs``) asks for: the
    ServiceMonitor's scrape of the operator at ``address`` (standing for the pod ``pod`` of the chart's
    Deployment), the PrometheusRule's alerts. ``options`` go to `MonitoringStack.start`."""
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    scrape = service_monitor_scrape_config(_one(docs, "ServiceMonitor"), _one(docs, "Service"), address=address,
                                           pod=pod, container=container["name"])
    return MonitoringStack.start(directory, scrape_configs=[scrape], rules=_one(docs, "PrometheusRule")["spec"],
                                 **options)


# -- the receiver ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """One webhook call of Alertmanager (payload version 4): when it came and what it said."""

    received: float  # time.time()
    payload: dict[str, Any]


class WebhookReceiver:
    """An HTTP server on loopback that records every JSON body POSTed to it (Alertmanager's webhook_config), and
    appends each as one line to ``record`` when given."""

    def __init__(self, record: Path | None = None) -> None:
        self.notifications: list[Notification] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                notification = Notification(time.time(), json.loads(body))
                with receiver._lock:
                    receiver.notifications.append(notification)
                    if record is not None:
                        with record.open("a") as f:
                            f.write(json.dumps({"received": notification.received, **notification.payload}) + "\n")
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the recorded notifications are the log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()

    def alerts(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Every alert of every notification received at or after ``since``, in order, each with ``received``."""
        with self._lock:
            return [{**alert, "received": n.received} for n in self.notifications if n.received >= since
                    for alert in n.payload.get("alerts", [])]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- the stack -------------------------------------------------------------------------------------------------


def _get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as rsp:
        return json.loads(rsp.read())


@dataclass
class MonitoringStack:
    """Prometheus and Alertmanager processes with their ``directory`` (configs, data, logs) and the receiver."""

    directory: Path
    prometheus_url: str
    alertmanager_url: str
    receiver: WebhookReceiver
    detach: bool = False
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def start(cls, directory: Path, *, scrape_configs: Sequence[Mapping[str, Any]], rules: Mapping[str, Any],
              evaluation_interval: str = "1s", group_wait: str = "1s", group_interval: str = "2s",
              repeat_interval: str = "1h", timeout: float = 60.0, detach: bool = False) -> MonitoringStack:
        """Start the stack: ``rules`` is a rules file's content (``{"groups": [...]}``, a PrometheusRule's spec).

        Alertmanager sends every alert to the receiver, grouped by alert name, ``group_wait`` after the first,
        ``group_interval`` after a change (a new or resolved alert), again after ``repeat_interval``. ``detach``
        starts Prometheus and Alertmanager in their own session, so that they outlive the caller (the receiver
        does not)."""
        directory.mkdir(parents=True, exist_ok=True)
        receiver = WebhookReceiver(directory / "notifications.jsonl")
        prom_port, am_port = free_port(), free_port()
        am_config = {
            "route": {"receiver": "webhook", "group_by": ["alertname"], "group_wait": group_wait,
                      "group_interval": group_interval, "repeat_interval": repeat_interval},
            "receivers": [{"name": "webhook",
                           "webhook_configs": [{"url": receiver.url, "send_resolved": True}]}],
        }
        prom_config = {
            "global": {"evaluation_interval": evaluation_interval},
            "rule_files": [str(directory / "rules.yaml")],
            "alerting": {"alertmanagers": [{"api_version": "v2",
                                            "static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [dict(c) for c in scrape_configs],
        }
        (directory / "rules.yaml").write_text(yaml.safe_dump(dict(rules), sort_keys=False))
        (directory / "alertmanager.yaml").write_text(yaml.safe_dump(am_config, sort_keys=False))
        (directory / "prometheus.yaml").write_text(yaml.safe_dump(prom_config, sort_keys=False))
        stack = cls(directory, f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}", receiver, detach)
        try:
            stack._spawn("alertmanager", [
                ALERTMANAGER, f"--config.file={directory / 'alertmanager.yaml'}",
                f"--storage.path={directory / 'alertmanager-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=", "--log.level=info"])
            stack._spawn("prometheus", [
                PROMETHEUS, f"--config.file={directory / 'prometheus.yaml'}",
                f"--storage.tsdb.path={directory / 'prometheus-data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=info"])
            for name, url in (("alertmanager", stack.alertmanager_url), ("prometheus", stack.prometheus_url)):
                stack._wait(f"{name} ready", functools.partial(_ready, url), timeout)
        except BaseException:
            stack.stop()
            raise
        return stack

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.directory / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, start_new_session=self.detach)

    def _wait(self, what: str, check: Callable[[], T | None], timeout: float) -> T:
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.log_tail(name)}")
            with contextlib.suppress(OSError, ValueError):
                got = check()
                if got:
                    return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.directory / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- Prometheus' HTTP API (api/v1) --

    def _api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        body = _get_json(f"{self.prometheus_url}/api/v1/{path}" + (f"?{query}" if query else ""))
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (at ``at``, default now): the result vector (``metric``, ``value``)."""
        data = self._api("query", query=expr, time=at)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else \
            [{"metric": {}, "value": data["result"]}]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range query: the result matrix (``metric``, ``values``)."""
        result: list[dict[str, Any]] = self._api("query_range", query=expr, start=start, end=end,
                                                 step=step)["result"]
        return result

    def label_values(self, label: str, match: str, start: float, end: float) -> list[str]:
        """The values ``label`` takes in the series ``match`` selects between ``start`` and ``end`` (what
        Grafana's ``label_values(match, label)`` asks)."""
        values: list[str] = self._api(f"label/{label}/values", **{"match[]": match}, start=start, end=end)
        return values

    def targets(self) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self._api("targets", state="active")["activeTargets"]
        return targets

    def rule_alerts(self) -> list[dict[str, Any]]:
        """Prometheus' pending and firing alerts (``labels``, ``annotations``, ``state``, ``activeAt``)."""
        alerts: list[dict[str, Any]] = self._api("alerts")["alerts"]
        return alerts

    def alertmanager_alerts(self) -> list[dict[str, Any]]:
        """Alertmanager's active alerts (api/v2: ``labels``, ``annotations``, ``status``, ``startsAt``, ...)."""
        alerts: list[dict[str, Any]] = _get_json(f"{self.alertmanager_url}/api/v2/alerts")
        return alerts

    def wait_scraped(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Every target scraped once, healthy; returns the targets."""
        def healthy() -> list[dict[str, Any]] | None:
            targets = self.targets()
            return targets if targets and all(t["health"] == "up" for t in targets) else None

        return self._wait("every target scraped", healthy, timeout)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.receiver.stop()

    def __enter__(self) -> MonitoringStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as rsp:
        return bool(rsp.status == 200)

