"""``make demo`` (``python -m localcluster.demo``): the auditor on a real local cluster, Flannel case then enforced.

1. localcluster in its own state directory (left-overs removed first), every node switched to "none" (the Flannel
   case: NetworkPolicies are accepted and nothing enforces them);
2. the seed app of ``localcluster/demo/`` (a three-tier shop with default-deny and allow policies, monitoring,
   an outside client, DNS);
3. the predicted allowed/denied matrix per port: ``netpol-auditor analyze`` on a ``kubectl get`` dump;
4. ``netpol-auditor run --probe`` as a subprocess, followed through its public outputs only (``/metrics`` and the
   Kubernetes Events it posts): probes, coverage, the mismatches, per-policy ``enforced``, CNI features;
5. every node healed to kube-router, one full probe cycle later: no mismatch, every policy enforced;
6. clean-up (operator stopped, ``down``) unless ``--keep``; Ctrl-C (or SIGTERM) cleans up at any point.

``--monitoring`` adds the monitoring stack of tests/monitoring (localcluster/monitoring.py): Debian's Prometheus
scraping the operator as the chart's ServiceMonitor would, with the chart's alerts (waits shortened to 10 s), and
Alertmanager sending to a receiver in the demo, which prints the enforcement alerts firing in phase 1 and resolved in
phase 2 (checked with ``--check``).

``--check`` makes it a test: exit 1 unless, in phase 1, every probe connected (nothing enforces anything) and every
pod pair with a predicted-denied port (one the destination declares) was reported unexpectedly allowed, every policy
``enforced`` 0; and in phase 2, after a full probe cycle, no mismatch and every policy ``enforced`` 1. Without
``--check`` the same verdicts are printed and the exit status is 0 unless a step could not be done.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import yaml

from localcluster import cluster, controlplane, faults, monitoring

__all__ = ["main"]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = Path(__file__).resolve().parent / "demo"
PROBE_RUN_CRD = ROOT / "charts" / "netpol-auditor" / "crds" / "proberuns.yaml"
DEFAULT_STATE = Path("/tmp/netpol-auditor-demo")
NAMESPACES = ("shop", "monitoring", "outside", "kube-system")
PROBER_REASONS = ("PolicyNotEnforced", "AllowedTrafficDropped", "MismatchResolved")
HEARTBEAT_SECONDS = 3.0
#: --monitoring: the chart values of the install the stack stands for (scraped every 2 s, alerts wait 10 s).
MONITORING_VALUES = {"serviceMonitor.enabled": True, "serviceMonitor.interval": "2s",
                     "serviceMonitor.scrapeTimeout": "2s", "prometheusRule.enabled": True,
                     "prometheusRule.for": {"*": "10s"}}
ENFORCEMENT_ALERTS = ("NetpolAuditorCNINotEnforcing", "NetpolAuditorPoliciesNotEnforced")


class DemoError(RuntimeError):
    """A step did not do what it must (the message says which and why)."""


class Interrupted(BaseException):
    """SIGTERM, handled like Ctrl-C."""


# -- terminal output -------------------------------------------------------------------------------------------


class Progress:
    """Every line starts with the time since the demo started. A watchdog thread never lets the terminal go quiet
    for more than a few seconds: it repeats what the demo is doing (``doing``) while a call blocks."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self._lock = threading.RLock()
        self._last_print = self.start
        self._activity: tuple[Callable[[], str], float] | None = None
        self._step: tuple[Callable[[], str], float] | None = None
        self._stopped = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="progress", daemon=True)
        self._watchdog.start()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def line(self, text: str = "") -> None:
        with self._lock:
            print(f"[{self.elapsed():6.1f}s] {text}" if text else "", flush=True)
            self._last_print = time.monotonic()

    def step(self, number: int, text: str) -> None:
        self.line()
        self.line(f"== {number}/6 {text}")
        with self._lock:
            self._step = (lambda: f"working on step {number}/6", time.monotonic())

    def block(self, text: str, indent: str = "    ") -> None:
        with self._lock:
            for row in text.rstrip("\n").splitlines():
                print(f"{indent}{row}", flush=True)
            self._last_print = time.monotonic()

    @contextlib.contextmanager
    def doing(self, what: str | Callable[[], str]) -> Iterator[None]:
        """While the body runs, the watchdog says ``what`` (text, or a function giving it) when the terminal is
        quiet."""
        text = what if callable(what) else (lambda: what)
        with self._lock:
            previous, self._activity = self._activity, (text, time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                self._activity = previous

    def close(self) -> None:
        self._stopped.set()
        self._watchdog.join()

    def _watch(self) -> None:
        while not self._stopped.wait(0.25):
            with self._lock:
                activity = self._activity or self._step
                quiet = time.monotonic() - self._last_print
            if activity is not None and quiet >= HEARTBEAT_SECONDS:
                what, since = activity
                try:
                    text = what()
                except Exception as exc:  # a status that cannot be read now is still worth a line
                    text = f"(status unavailable: {exc})"
                self.line(f"   {text} ({time.monotonic() - since:.0f} s)")

    def wait(self, what: str, check: Callable[[], T | None], status: Callable[[], str] | None = None,
             timeout: float = 300.0, interval: float = 1.0) -> T:
        """Poll ``check`` until it returns something truthy; say what we wait for (and how far) meanwhile."""
        with self.doing(f"waiting for {what}"):
            return self._wait(what, check, status, timeout, interval)

    def _wait(self, what: str, check: Callable[[], T | None], status: Callable[[], str] | None, timeout: float,
              interval: float) -> T:
        started = time.monotonic()
        deadline = started + timeout
        last_said = started
        last_status = ""
        while True:
            result = check()
            if result:
                return result
            now = time.monotonic()
            if now >= deadline:
                raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}"
                                + (f" ({last_status})" if last_status else ""))
            text = status() if status is not None else ""
            if now - last_said >= HEARTBEAT_SECONDS or (text != last_status and now - last_said >= 2.0):
                self.line(f"   waiting for {what} ({now - started:.0f} s){': ' + text if text else ''}")
                last_said, last_status = now, text
            time.sleep(interval)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


# -- the operator's public outputs -----------------------------------------------------------------------------


@dataclass
class Scrape:
    """One scrape of /metrics: (sample name, labels, value) triples."""

    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Scrape:
        from prometheus_client.parser import text_string_to_metric_families

        out = cls()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.samples.append((s.name, dict(s.labels), float(s.value)))
        return out

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(labels, value) for n, labels, value in self.samples if n == name]

    def value(self, name: str) -> float | None:
        found = self.series(name)
        return found[0][1] if found else None

    def total(self, name: str) -> float:
        return sum(v for _, v in self.series(name))


def scrape(url: str) -> Scrape | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return Scrape.parse(resp.read().decode())
    except OSError:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the demo --------------------------------------------------------------------------------------------------


@dataclass
class Expectation:
    """What ``analyze`` predicts for the demo's pods, and the policies it knows."""

    # (source namespace, destination namespace) -> pod pairs denied on at least one port the destination declares
    denied_pairs: dict[tuple[str, str], set[tuple[str, str]]]
    policies: set[tuple[str, str]]


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state: Path = args.state.resolve()
        self.work = self.state / "demo"
        self.p = Progress()
        self.cluster: cluster.Cluster | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.metrics_url = ""
        self.failures: list[str] = []
        self.flannel_scrape: Scrape | None = None
        self.summary: list[str] = []
        self.monitoring: monitoring.MonitoringStack | None = None

    # -- helpers ---------------------------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None) -> str:
        assert self.cluster is not None
        try:
            return self.cluster.kubectl(*args, input=input)
        except subprocess.CalledProcessError as exc:
            raise DemoError(f"kubectl {' '.join(args)} failed: {exc.stderr.strip()}") from None

    def netpol_auditor(self) -> list[str]:
        script = Path(sys.executable).with_name("netpol-auditor")
        if not script.exists():
            raise DemoError(f"{script} not found: install the package first (`make demo` does)")
        return [str(script)]

    def scrape(self) -> Scrape | None:
        if self.operator is not None and self.operator.poll() is not None:
            raise DemoError(f"the operator exited with status {self.operator.returncode}; its log:\n"
                            + self.operator_log_tail())
        return scrape(self.metrics_url)

    def operator_log_tail(self, lines: int = 30) -> str:
        log = self.work / "operator.log"
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check(self, ok: bool, what: str) -> None:
        self.p.line(f"   {'ok' if ok else 'FAILED'}: {what}")
        if not ok:
            self.failures.append(what)

    # -- steps -----------------------------------------------------------------------------------------------

    def start_cluster(self) -> None:
        self.p.step(1, f"localcluster in Flannel mode: {self.args.nodes} nodes, nothing enforces NetworkPolicies")
        if self.state.exists():
            self.p.line(f"removing the previous demo cluster in {self.state}")
            cluster.down(self.state)
        self.p.line(f"starting etcd, kube-apiserver, kube-controller-manager and {self.args.nodes} nodes in "
                    f"{self.state}")

        def started() -> str:
            procs = controlplane.recorded_processes(self.state) if (self.state / "pids").is_dir() else []
            return f"waiting for localcluster to be Ready; running: {', '.join(procs) or 'nothing yet'}"

        cfg = cluster.ClusterConfig(state=self.state, nodes=self.args.nodes, enforcer="kube-router", api_port=0,
                                    timeout=300.0)
        with self.p.doing(started):
            self.cluster = cluster.up(cfg)
        c = self.cluster
        self.p.line(f"localcluster is up in {c.up_seconds:.1f} s: {c.server} ({c.version})")
        for node in faults.modes(self.state):
            with self.p.doing(functools.partial("waiting for kube-router on {} to stop and flush its rules".format,
                                                     node)):
                faults.set_none(self.state, node)
        self.p.line(f"enforcement per node: {json.dumps(faults.modes(self.state))} (the Flannel case)")

    def deploy(self) -> None:
        self.p.step(2, "the seed app: shop (web -> api -> db) with default-deny and allow policies, monitoring, "
                       "a client, DNS")
        self.work.mkdir(parents=True, exist_ok=True)
        self.kubectl("apply", "-f", str(PROBE_RUN_CRD))
        nodes = self.args.nodes
        text = (MANIFESTS / "app.yaml").read_text()
        for k in range(9, 0, -1):  # node-K -> an existing node
            text = text.replace(f"nodeName: node-{k}", f"nodeName: node-{(k - 1) % nodes + 1}")
        self.kubectl("apply", "-f", "-", input=text)
        self.kubectl("apply", "-f", str(MANIFESTS / "policies.yaml"))
        self.p.line(f"applied {MANIFESTS.relative_to(ROOT)}/app.yaml and policies.yaml")

        def pods() -> list[dict[str, Any]]:
            data = json.loads(self.kubectl("get", "pods", "-A", "-o", "json"))
            return [p for p in data["items"] if p["metadata"]["namespace"] in NAMESPACES]

        def counts() -> tuple[int, int]:
            items = pods()
            return sum(p["status"].get("phase") == "Running" and bool(p["status"].get("podIP")) for p in items), len(
                items)

        def all_running() -> bool:
            up, total = counts()
            return up == total > 0

        self.p.wait("the app's pods", all_running, status=lambda: "{}/{} pods Running".format(*counts()),
                    timeout=120)
        rows = [[p["metadata"]["namespace"], p["metadata"]["name"], p["spec"].get("nodeName", ""),
                 p["status"].get("podIP", ""),
                 ",".join(f"{cp['containerPort']}/{cp.get('protocol', 'TCP')}" for c in p["spec"]["containers"]
                          for cp in c.get("ports", []))] for p in pods()]
        self.p.line("pods:")
        self.p.block(table(sorted(rows), ["namespace", "pod", "node", "IP", "ports"]))
        self.p.line("NetworkPolicies: " + self.kubectl("get", "networkpolicies", "-A", "-o",
                                                       "jsonpath={range .items[*]}{.metadata.namespace}/"
                                                       "{.metadata.name} {end}").strip())

    def predict(self) -> Expectation:
        self.p.step(3, "what the policies allow: netpol-auditor analyze on a dump of the live cluster")
        dump = self.work / "cluster.yaml"
        dump.write_text(self.kubectl("get", "namespaces,pods,networkpolicies", "-A", "-o", "yaml"))
        # A live cluster: per pod; the per-port truth tables (--matrix) that the probes are compared with.
        command = [*self.netpol_auditor(), "analyze", "--matrix", "--per-pod", "-f", str(dump)]
        self.p.line(f"$ kubectl get namespaces,pods,networkpolicies -A -o yaml > {dump}")
        self.p.line(f"$ netpol-auditor analyze --matrix --per-pod -f {dump}")
        shown = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if shown.returncode != 0:
            raise DemoError(f"netpol-auditor analyze failed: {shown.stderr.strip()}")
        self.p.block(shown.stdout)
        data = subprocess.run([*command, "-o", "json"], capture_output=True, text=True, timeout=120, check=True)
        verdicts = json.loads(data.stdout)["verdicts"]
        declared: dict[str, set[tuple[int, str]]] = defaultdict(set)
        policies: set[tuple[str, str]] = set()
        for item in yaml.safe_load(dump.read_text())["items"]:
            meta = item["metadata"]
            if item["kind"] == "Pod":
                for c in item["spec"]["containers"]:
                    for cp in c.get("ports", []):
                        declared[f"{meta['namespace']}/{meta['name']}"].add(
                            (cp["containerPort"], cp.get("protocol", "TCP")))
            elif item["kind"] == "NetworkPolicy":
                policies.add((meta["namespace"], meta["name"]))
        pairs: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        paths = 0
        for v in verdicts:
            if v["allowed"] is False and (v["port"], v["protocol"]) in declared[v["to"]]:
                paths += 1
                pairs[(v["from"].split("/")[0], v["to"].split("/")[0])].add((v["from"], v["to"]))
        self.p.line(f"predicted: {paths} denied paths to declared ports, between "
                    f"{sum(len(p) for p in pairs.values())} ordered pod pairs: what the CNI must block")
        return Expectation(dict(pairs), policies)

    def start_operator(self) -> None:
        assert self.cluster is not None
        port, liveness = free_port(), free_port()
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        command = [
            *self.netpol_auditor(), "run", "--kubeconfig", str(self.cluster.kubeconfig), "--standalone",
            "--metrics-address", "127.0.0.1", "--metrics-port", str(port),
            "--liveness", f"http://127.0.0.1:{liveness}/healthz",
            "--probe", "--probe-interval", "2", "--probe-settle", "2", "--probe-retry", "4",
            # the demo's DNS server runs in kube-system, which a production install leaves out of probing
            "--probe-system-namespaces",
            "--events-per-minute", "120", "--recompute-delay", "0.2",
        ]
        log = self.work / "operator.log"
        self.p.line("$ netpol-auditor " + " ".join(command[1:]))
        with open(log, "wb") as out:
            self.operator = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True, cwd=self.work)
        self.p.line(f"operator pid {self.operator.pid}, log {log}")
        self.p.line(f"metrics: {self.metrics_url}")

        def ready() -> bool:
            if self.operator is not None and self.operator.poll() is not None:
                self.scrape()  # raises with the log
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        self.p.wait("the operator's initial listing (/readyz)", ready, timeout=120, interval=0.5)
        self.p.line("operator ready: it watches the cluster and runs probe pods")

    def start_monitoring(self) -> None:
        """--monitoring: Prometheus and Alertmanager with the chart's ServiceMonitor scrape and alerts."""
        try:
            with self.p.doing("rendering the chart's ServiceMonitor and PrometheusRule with helm (helm is built "
                              "from its Go module the first time)"):
                docs = monitoring.render_chart(MONITORING_VALUES, release="demo", namespace="netpol-auditor")
            address = self.metrics_url.removeprefix("http://").removesuffix("/metrics")
            with self.p.doing("starting Prometheus and Alertmanager"):
                self.monitoring = monitoring.start_for_chart(docs, self.work / "monitoring", address=address,
                                                             pod="demo-netpol-auditor-0", detach=self.args.keep)
        except (RuntimeError, TimeoutError) as exc:
            raise DemoError(f"the monitoring stack did not start: {exc}") from None
        self.p.line(f"Prometheus {self.monitoring.prometheus_url} (the chart's alerts, waits 10 s), Alertmanager "
                    f"{self.monitoring.alertmanager_url}, notifications in {self.work / 'monitoring'}")

    def show_alerts(self, status: str) -> None:
        """--monitoring: wait until the enforcement alerts reached the receiver with ``status`` (for "resolved":
        every one of them that fired), and print what the receiver holds, each alert in its latest state."""
        stack = self.monitoring
        if stack is None:
            return

        def latest() -> dict[str, dict[str, Any]]:
            return {a["fingerprint"]: a for a in stack.receiver.alerts()}  # in order received: the last wins

        def reached() -> dict[str, dict[str, Any]] | None:
            alerts = [a for a in latest().values() if a["labels"]["alertname"] in ENFORCEMENT_ALERTS]
            names = {a["labels"]["alertname"] for a in alerts if a["status"] == status}
            done = set(ENFORCEMENT_ALERTS) <= names and (status == "firing" or
                                                         all(a["status"] == status for a in alerts))
            return latest() if done else None

        alerts = self.p.wait(f"Alertmanager to send the enforcement alerts {status}", reached, timeout=120,
                             interval=0.5)
        rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for a in alerts.values():
            rows[(a["labels"]["alertname"], a["status"])].append(a)
        self.p.line(f"alerts received from Alertmanager ({stack.alertmanager_url}), each in its latest state:")
        self.p.block(table([[name, state, a[0]["labels"]["severity"], str(len(a)), a[0]["annotations"]["summary"]]
                            for (name, state), a in sorted(rows.items())],
                           ["alert", "state", "severity", "alerts", "e.g. summary"]))
        self.p.line(f"   runbooks: {', '.join(sorted({a['annotations']['runbook_url'] for a in alerts.values()}))}")
        self.check(True, f"{' and '.join(ENFORCEMENT_ALERTS)} reached the receiver {status}")

    def follow_cycles(self, after: float, cycles: int, what: str) -> Scrape:
        """Follow /metrics until ``cycles`` probe cycles have completed after wall-clock time ``after``."""
        seen: list[float] = []

        last: list[Scrape | None] = [None]

        def status() -> str:
            s = last[0]
            if s is None:
                return "no /metrics yet"
            by_result: dict[str, float] = defaultdict(float)
            for labels, v in s.series("netpol_auditor_probes_total"):
                by_result[labels.get("result", "")] += v
            coverage = s.value("netpol_auditor_probe_coverage_ratio")
            return (f"{s.total('netpol_auditor_probes_total'):.0f} probes made ("
                    + ", ".join(f"{k} {v:.0f}" for k, v in sorted(by_result.items())) + "), "
                    f"coverage {coverage if coverage is not None else 0:.2f}, "
                    f"{s.total('netpol_auditor_probe_pods_running'):.0f} probe pods running, "
                    f"{s.total('netpol_auditor_mismatches'):.0f} mismatching class pairs, "
                    f"cycles done {len(seen)}/{cycles}")

        def done() -> Scrape | None:
            s = last[0] = self.scrape()
            if s is None:
                return None
            completed = s.value("netpol_auditor_probe_cycle_last_completed_timestamp_seconds")
            if completed and completed > after and completed not in seen:
                seen.append(completed)
                self.p.line(f"   probe cycle completed ({len(seen)}/{cycles} {what})")
            return s if len(seen) >= cycles else None

        return self.p.wait(f"probe cycles {what}", done, status=status, timeout=self.args.timeout)

    def show(self, s: Scrape, before: Scrape | None, phase: str
             ) -> tuple[list[tuple[dict[str, str], float]], dict[tuple[str, str], float]]:
        """Print what the operator exports: probe counts (this phase's), mismatches, enforcement, features."""
        base = before or Scrape()

        def delta(name: str, key: str) -> dict[tuple[str, ...], float]:
            earlier = {tuple(labels[k] for k in key.split(",")): v for labels, v in base.series(name)}
            out = {}
            for labels, v in s.series(name):
                k = tuple(labels[k] for k in key.split(","))
                if v - earlier.get(k, 0.0) > 0:
                    out[k] = v - earlier.get(k, 0.0)
            return out

        probes = delta("netpol_auditor_probes_total", "protocol,result")
        self.p.line(f"probe connections {phase} (netpol_auditor_probes_total): {sum(probes.values()):.0f}")
        self.p.block(table([[*k, f"{v:.0f}"] for k, v in sorted(probes.items())], ["protocol", "result", "probes"]))
        inconclusive = delta("netpol_auditor_probes_inconclusive_total", "reason")
        if inconclusive:
            self.p.line("inconclusive (netpol_auditor_probes_inconclusive_total): "
                        + ", ".join(f"{k[0]} {v:.0f}" for k, v in sorted(inconclusive.items())))
        mismatches = [(labels, v) for labels, v in s.series("netpol_auditor_mismatches") if v > 0]
        self.p.line(f"mismatches (netpol_auditor_mismatches): {sum(v for _, v in mismatches):.0f} class pairs")
        if mismatches:
            rows = [[f"{m['source_namespace']} -> {m['destination_namespace']}", f"{m['port']}/{m['protocol']}",
                     m["kind"], m["policy"] or "-", f"{v:.0f}"]
                    for m, v in sorted(mismatches, key=lambda x: sorted(x[0].items()))]
            self.p.block(table(rows, ["source ns -> destination ns", "port", "kind", "policy", "class pairs"]))
        enforced = {(labels["namespace"], labels["policy"]): v for labels, v in
                    s.series("netpol_auditor_policy_enforced")}
        self.p.line("per-policy enforcement (netpol_auditor_policy_enforced; 1 confirmed, 0 violated):")
        self.p.block(table([[f"{ns}/{name}", f"{v:.0f}"] for (ns, name), v in sorted(enforced.items())],
                           ["policy", "enforced"]))
        features: dict[str, dict[str, str]] = defaultdict(dict)
        for labels, v in s.series("netpol_auditor_cni_feature_enforced"):
            features[labels["feature"]][labels["node"]] = f"{v:.0f}"
        nodes = sorted({n for per in features.values() for n in per})
        self.p.line("CNI features (netpol_auditor_cni_feature_enforced; 1 enforced, 0 not, blank: not probed):")
        self.p.block(table([[f, *(features[f].get(n, "") for n in nodes)] for f in sorted(features)],
                           ["feature", *nodes]))
        return mismatches, enforced

    def show_events(self, reasons: tuple[str, ...], since: str) -> list[dict[str, Any]]:
        def ours() -> list[dict[str, Any]]:
            items = json.loads(self.kubectl("get", "events", "-A", "-o", "json"))["items"]
            return [e for e in items if e.get("reason") in reasons
                    and (e.get("lastTimestamp") or e.get("eventTime") or "") >= since]

        found = self.p.wait(f"Kubernetes Events {'/'.join(reasons)}", ours, timeout=30)
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for e in found:
            obj = e["involvedObject"]
            grouped[(e["reason"], f"{obj.get('kind')} {obj.get('namespace', '')}/{obj.get('name')}")].append(e)
        self.p.line(f"Kubernetes Events (kubectl get events -A): {len(found)}")
        for (reason, obj), events in sorted(grouped.items()):
            self.p.line(f"   {reason} on {obj}: {len(events)}, e.g. {events[0]['message']}")
        return found

    @staticmethod
    def unseen(s: Scrape, expect: Expectation) -> dict[tuple[str, str], int]:
        """Per namespace pair: pod pairs with a predicted-denied port, minus the class pairs reported unexpectedly
        allowed (on any port: the prober probes one port of each group of ports the policies treat alike), when
        positive. Every pod of the demo is its own class."""
        got: dict[tuple[str, str], float] = defaultdict(float)
        for m, v in s.series("netpol_auditor_mismatches"):
            if m["kind"] == "unexpectedly_allowed":
                got[(m["source_namespace"], m["destination_namespace"])] += v
        return {k: len(p) - int(got.get(k, 0)) for k, p in expect.denied_pairs.items() if got.get(k, 0) < len(p)}

    @staticmethod
    def lost(before: Scrape | None, after: Scrape) -> float:
        """Probe connections between two scrapes that did not connect (timed out, refused, error)."""
        def unanswered(s: Scrape | None) -> float:
            return sum(v for labels, v in (s.series("netpol_auditor_probes_total") if s else [])
                       if labels.get("result") != "connected")

        return unanswered(after) - unanswered(before)

    def flannel_phase(self, expect: Expectation) -> None:
        self.p.step(4, "the auditor on the Flannel-mode cluster: probes, mismatches, metrics, Events")
        self.start_operator()
        if self.args.monitoring:
            self.start_monitoring()
        since = _rfc3339(time.time() - 1)
        previous, s = None, self.follow_cycles(0.0, 1, "with no enforcement")
        # With nothing enforced every probe must connect. One that did not (a probe pod started too late, a lost
        # packet under load) agrees with a predicted-denied verdict and hides that path for a cycle; every cycle
        # probes every path again, so follow up to two more.
        for _ in range(2):
            lost, missing = self.lost(previous, s), self.unseen(s, expect)
            if not lost and not missing:
                break
            self.p.line(f"   in this cycle {lost:.0f} probe connection(s) got no answer and {sum(missing.values())} "
                        "pod pair(s) with a predicted-denied port were not found open: following one more cycle")
            completed = s.value("netpol_auditor_probe_cycle_last_completed_timestamp_seconds") or 0.0
            previous, s = s, self.follow_cycles(completed, 1, "with no enforcement")
        mismatches, enforced = self.show(s, None, "since the operator started")
        self.show_events(("PolicyNotEnforced",), since)
        lost, missing = self.lost(previous, s), self.unseen(s, expect)
        pairs = sum(len(p) for p in expect.denied_pairs.values())
        self.p.line("verdict:")
        self.check(s.value("netpol_auditor_probe_coverage_ratio") == 1.0, "every planned class pair was probed")
        self.check(not lost, "every probe connection of the last cycle connected (nothing enforces anything)"
                   + (f"; {lost:.0f} did not" if lost else ""))
        self.check(not missing, f"each of the {pairs} pod pairs with a predicted-denied port was found open "
                   "(unexpectedly_allowed)" + (f"; not found: {missing}" if missing else ""))
        self.check(all(m["kind"] == "unexpectedly_allowed" for m, _ in mismatches),
                   "no allowed traffic was dropped")
        self.check(bool(enforced) and set(enforced.values()) == {0.0} and set(enforced) == expect.policies,
                   "every NetworkPolicy is reported not enforced (netpol_auditor_policy_enforced 0)")
        self.show_alerts("firing")
        self.flannel_scrape = s
        self.summary.append(f"Flannel case: {sum(v for _, v in mismatches):.0f} mismatching class pairs, "
                            f"{sum(v == 0 for v in enforced.values())}/{len(enforced)} policies not enforced")

    def enforced_phase(self, expect: Expectation) -> None:
        self.p.step(5, "the same cluster with a real enforcer: kube-router on every node")
        for node in faults.modes(self.state):
            waiting = functools.partial("waiting for kube-router on {} to install its rules".format, node)
            with self.p.doing(waiting):
                faults.heal(self.state, node)
            self.p.line(f"{node}: kube-router running and enforcing")
        healed = time.time()
        since = _rfc3339(healed - 1)
        self.p.line("a full probe cycle that starts after this point must find no mismatch")
        s = self.follow_cycles(healed, 2, "with kube-router")
        mismatches, enforced = self.show(s, self.flannel_scrape, "with kube-router")
        self.show_events(("MismatchResolved",), since)
        self.p.line("verdict:")
        self.check(s.value("netpol_auditor_probe_coverage_ratio") == 1.0, "every planned class pair was probed")
        self.summary.append(f"kube-router: {sum(v for _, v in mismatches):.0f} mismatching class pairs, "
                            f"{sum(v == 1 for v in enforced.values())}/{len(enforced)} policies enforced")
        self.check(not mismatches, "zero mismatches")
        self.check(bool(enforced) and set(enforced.values()) == {1.0} and set(enforced) == expect.policies,
                   "every NetworkPolicy is confirmed enforced (netpol_auditor_policy_enforced 1)")
        self.show_alerts("resolved")

    def stop_operator(self) -> None:
        proc, self.operator = self.operator, None
        if proc is None or proc.poll() is not None:
            return
        self.p.line(f"stopping the operator (pid {proc.pid}); it deletes its probe pods")
        proc.send_signal(signal.SIGTERM)
        with self.p.doing("waiting for the operator to delete its probe pods and exit"):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.p.step(6, "clean-up")
        if self.monitoring is not None:
            with self.p.doing("stopping Prometheus and Alertmanager"):
                self.monitoring.stop()
        self.stop_operator()
        with self.p.doing("waiting for localcluster to stop"):
            cluster.down(self.state)
        self.p.line(f"localcluster stopped and {self.state} removed")

    def keep_message(self) -> None:
        assert self.cluster is not None
        self.p.step(6, "left running (--keep)")
        pid = self.operator.pid if self.operator is not None else None
        self.p.block(f"""\
export KUBECONFIG={self.cluster.kubeconfig}
kubectl get pods,networkpolicies -A          # the app (probe pods come and go every few seconds)
kubectl get events -A                        # PolicyNotEnforced / MismatchResolved on the policies
curl -s {self.metrics_url} | grep '^netpol_auditor_'
python3 -m localcluster --state {self.state} fault set-none node-1   # break enforcement again, watch /metrics
less {self.work / 'operator.log'}
To stop: kill {pid} && python3 -m localcluster --state {self.state} down""", indent="   ")
        if self.monitoring is not None:
            pids = " ".join(str(p.pid) for p in self.monitoring.processes.values())
            self.p.block(f"""\
{self.monitoring.prometheus_url}/alerts                  # the chart's alerts (waits 10 s)
{self.monitoring.alertmanager_url}                         # Alertmanager (the demo's receiver has stopped)
To stop Prometheus and Alertmanager: kill {pids}""", indent="   ")

    def run(self) -> int:
        self.start_cluster()
        self.deploy()
        expect = self.predict()
        self.flannel_phase(expect)
        self.enforced_phase(expect)
        return 1 if self.failures else 0


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted()


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m localcluster.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="leave the cluster and the operator running at the end")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless the Flannel phase finds every predicted-denied path open and the enforced "
                         "phase finds no mismatch (the demo's own test)")
    ap.add_argument("--monitoring", action="store_true",
                    help="also run Prometheus and Alertmanager with the chart's alerts, and show the alerts they send")
    ap.add_argument("--nodes", type=int, default=2, help="simulated nodes, at least 2 (default 2)")
    ap.add_argument("--state", type=Path, default=DEFAULT_STATE,
                    help=f"localcluster state directory (default {DEFAULT_STATE}; removed first if left over)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each phase's probe cycles")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.nodes < 2:
        parser().error("--nodes: at least 2 (web runs on another node than api and db, see demo/app.yaml)")
    if os.geteuid() != 0:
        parser().error("must run as root: localcluster runs its nodes and pods in network namespaces")
    signal.signal(signal.SIGTERM, _raise_interrupted)
    demo = Demo(args)
    rc = 1
    interrupted = False
    try:
        rc = demo.run()
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        rc = 130
        demo.p.line("interrupted: cleaning up")
    except DemoError as exc:
        demo.p.line(f"error: {exc}")
        if demo.operator is not None:
            demo.p.line("the operator's last log lines:")
            demo.p.block(demo.operator_log_tail())
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave half a cluster behind
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if args.keep and not interrupted and demo.cluster is not None:
            demo.keep_message()
        else:
            demo.cleanup()
    total = demo.p.elapsed()
    for text in demo.summary:
        demo.p.line(text)
    if demo.failures:
        demo.p.line(f"FAILED after {total:.0f} s: " + "; ".join(demo.failures))
    elif rc == 0:
        demo.p.line(f"demo complete in {total:.0f} s ({total / 60:.1f} min)")
    demo.p.close()
    if demo.failures and not args.check:
        return 0  # the demo ran; what it found is shown above (--check turns findings into the exit status)
    return rc


if __name__ == "__main__":
    sys.exit(main())
