"""Churn soak: the real operator probing kube-router on the local cluster while the workload keeps changing.

The operator is the real ``python -m netpol_auditor.controller --probe`` process (= ``netpol-auditor run``), probing
only the soak's namespaces (``soak-*``). A seeded churn driver makes one change every ``--change-every`` seconds:
pods created, deleted and relabelled, namespaces created (with a pod or two), deleted and relabelled, NetworkPolicies
created, modified and deleted (ingress and egress, numeric and named ports, an ``endPort`` range, a UDP port, pod
and namespace selectors). Everything about the operator is read from outside it: RSS and CPU time from /proc;
probes, cycles, mismatches, inconclusive paths and the event loop's lag from /metrics and its log; the mismatches
themselves (source -> destination, port, nodes) from the Events it posts (``PolicyNotEnforced``,
``AllowedTrafficDropped``).

Every mismatch is a false alarm here unless it is one of kube-router v2.1.0's known gaps, which the soak's policies
are written to stay out of (`known_gap` lists a mismatch of their shape apart; every mismatch is listed with the
changes made shortly before it):

* ``same_node_egress``: no egress filtering between two pods of one node when a policy that isolates the source for
  egress also admits the destination's ingress (``kube_router_gap`` in tests/prober/test_prober_cluster.py). The
  soak's policies hold one direction each.
* ``unresolved_named_port`` (found by this soak): a rule with peers whose ports are all named, where the name
  resolves on none of the pods concerned (the policy's pods for ingress, the peers for egress), is left with no port
  at all, which kube-router programs as "every port": the peers are admitted on every port
  (pkg/controllers/netpol/policy.go: ``processNetworkPolicyPorts``, then the ``len(ports) == 0 &&
  len(namedPorts) == 0`` case of ``processIngressRules``/``processEgressRules``). The soak's rules with peers always
  carry a numeric port too.
* ``egress_named_port_without_peers`` (found by this soak): an egress rule without ``to`` resolves its named ports on
  the pods of the policy's own namespace, not on each destination (``buildNetworkPolicyInfo``:
  ``ListPodsByNamespaceAndLabels(policy.Namespace, ...)``), then admits that number to every destination: traffic
  to a destination that declares the name is dropped when no pod of the policy's namespace declares it (or declares
  it with another number), and that number is open to destinations that do not use it for the name. The soak's
  egress rules without ``to`` use numeric ports only.

    .venv/bin/python bench/soak.py --duration 300 --seed 1 --json /tmp/soak.json
    .venv/bin/python bench/soak.py --state /tmp/netpol-soak --duration 3600   # reuse (or create) that cluster

Exit status: 0 when no mismatch outside the known gaps was raised, the operator never exited and no probe pod was
left behind; 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # localcluster/: test and bench infrastructure, never installed

from kubernetes import client, watch  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from localcluster import cluster as lc  # noqa: E402

__all__ = [
    "ChurnDriver",
    "MismatchEvents",
    "OperatorUnderTest",
    "SoakConfig",
    "histogram_quantile",
    "install_crd",
    "main",
    "problems",
    "run_soak",
]

_Watch: Any = watch.Watch  # the client's watch is untyped
PREFIX = "soak-"
CRD = ROOT / "charts" / "netpol-auditor" / "crds" / "proberuns.yaml"
MANAGED_BY = "app.kubernetes.io/managed-by=netpol-auditor"
APPS = ("web", "api", "db")
TEAMS = ("red", "blue")
ENVS = ("prod", "dev")
#: Declared ports by the kind a pod is created as (fixed: a pod's ports cannot change, its labels can). ``http`` is
#: 8080 on one kind and 9090 on another, so a policy naming it treats them apart.
PORTS: dict[str, list[dict[str, Any]]] = {
    "web": [{"name": "http", "containerPort": 8080}],
    "api": [{"name": "http", "containerPort": 9090}, {"name": "stats", "containerPort": 8125, "protocol": "UDP"}],
    "db": [{"name": "db", "containerPort": 5432}],
}
PORT_SPECS: tuple[list[dict[str, Any]], ...] = (
    [],
    [{"port": 8080}],
    [{"port": "http"}],
    [{"port": 5432}],
    [{"port": 9000, "endPort": 9100}],
    [{"port": "db"}, {"port": 8080}],
    [{"port": "http"}, {"port": 5432}],
    [{"port": 8125, "protocol": "UDP"}],
    [{"port": "stats", "protocol": "UDP"}, {"port": "http"}],
    [{"port": "stats", "protocol": "UDP"}, {"port": 5432}],
)


def named_only(ports: list[dict[str, Any]]) -> bool:
    return bool(ports) and all(isinstance(p["port"], str) for p in ports)


def named_any(ports: list[dict[str, Any]]) -> bool:
    return any(isinstance(p["port"], str) for p in ports)


#: Ports of a rule with peers: never named ports alone (kube-router's ``unresolved_named_port`` gap, module doc).
PEER_PORT_SPECS = tuple(spec for spec in PORT_SPECS if not named_only(spec))
#: Ports of an egress rule without ``to``: numeric only (kube-router's ``egress_named_port_without_peers`` gap).
NUMERIC_PORT_SPECS = tuple(spec for spec in PORT_SPECS if not named_any(spec))


def rule_ports(rng: random.Random, direction: str, has_peers: bool) -> list[dict[str, Any]]:
    """One of `PORT_SPECS`, save those that would run into a known kube-router gap (module doc)."""
    if has_peers:
        return rng.choice(PEER_PORT_SPECS)
    return rng.choice(PORT_SPECS if direction == "Ingress" else NUMERIC_PORT_SPECS)


#: Change types and their weights.
CHANGES: dict[str, float] = {
    "pod_create": 1.5,
    "pod_delete": 1.5,
    "pod_relabel": 3.0,
    "namespace_create": 0.7,
    "namespace_delete": 0.7,
    "namespace_relabel": 1.5,
    "policy_create": 2.0,
    "policy_modify": 2.0,
    "policy_delete": 1.5,
}
_CYCLE = re.compile(r"probe cycle (\d+) complete: coverage ([\d.]+) \((\d+) paths judged, (\d+) inconclusive\), "
                    r"(\d+) current mismatches")
_LOOP_HELD = re.compile(r"the event loop was held for ([\d.]+)s")
_RUN_STARTED = re.compile(r"probe run \S+ started")
_MISMATCH = re.compile(r"^(?P<src>\S+) → (?P<dst>\S+):(?P<port>\S+) (?P<result>[^;]+); (?P<why>.*) "
                       r"\(probed from node (?P<src_node>\S+) to node (?P<dst_node>\S+)\)$")
_POLICIES = re.compile(r"policy (?P<names>.+) predicts")


@dataclass(frozen=True)
class SoakConfig:
    duration: float = 3600.0
    change_every: float = 3.0
    seed: int = 1
    sample_every: float = 10.0
    base_namespaces: int = 4
    pods_per_namespace: int = 3
    max_pods_per_namespace: int = 5
    max_dynamic_namespaces: int = 2
    max_policies_per_namespace: int = 4
    # the operator's prober: quick cycles, its own defaults for the settle time and the retry window
    probe_interval: float = 2.0
    probe_settle: float = 5.0
    probe_retry: float = 10.0
    probe_max_pods: int = 12
    quiesce_timeout: float = 600.0  # after the churn: wait this long at most for a complete cycle of the final state
    canary: bool = False  # after the churn: make a real enforcement gap on purpose, which must be detected
    canary_timeout: float = 180.0
    extra_operator_args: tuple[str, ...] = ()


def core_api(api: Any) -> Any:
    """The typed client's models are too strict for manifests as dicts: the APIs are used untyped."""
    return client.CoreV1Api(api)


def networking_api(api: Any) -> Any:
    return client.NetworkingV1Api(api)


# -- the churn driver ------------------------------------------------------------------------------------------


@dataclass
class World:
    """What the driver has made: namespaces (labels), pods (labels, node, kind), policies (spec)."""

    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    dynamic: list[str] = field(default_factory=list)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    policies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    policy_history: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # every spec it had

    def pods_in(self, ns: str) -> list[tuple[str, str]]:
        return sorted(k for k in self.pods if k[0] == ns)

    def policies_in(self, ns: str) -> list[tuple[str, str]]:
        return sorted(k for k in self.policies if k[0] == ns)


def _selector(rng: random.Random) -> dict[str, Any]:
    r = rng.random()
    if r < 0.2:
        return {}
    if r < 0.75:
        return {"matchLabels": {"app": rng.choice(APPS)}}
    return {"matchExpressions": [{"key": "app", "operator": "In", "values": sorted(rng.sample(APPS, 2))}]}


def _peer(rng: random.Random) -> dict[str, Any]:
    r = rng.random()
    if r < 0.4:
        return {"podSelector": _selector(rng)}
    if r < 0.65:
        return {"namespaceSelector": {"matchLabels": {"team": rng.choice(TEAMS)}}}
    if r < 0.9:
        return {"namespaceSelector": {"matchLabels": {"env": rng.choice(ENVS)}},
                "podSelector": {"matchLabels": {"app": rng.choice(APPS)}}}
    return {"namespaceSelector": {}}


def policy_spec(rng: random.Random, direction: str) -> dict[str, Any]:
    """A policy of one direction only (``Ingress`` or ``Egress``, which keeps kube-router's same-node gap out): 0 rules
    (deny all that way) to 2, each with 0-2 peers and ports from `rule_ports`."""
    rules = []
    for _ in range(rng.choice((0, 1, 1, 1, 2))):
        rule: dict[str, Any] = {}
        peers = [_peer(rng) for _ in range(rng.choice((0, 1, 1, 2)))]
        if peers:
            rule["from" if direction == "Ingress" else "to"] = peers
        ports = rule_ports(rng, direction, bool(peers))
        if ports:
            rule["ports"] = ports
        rules.append(rule)
    spec: dict[str, Any] = {"podSelector": _selector(rng), "policyTypes": [direction]}
    if rules:
        spec[direction.lower()] = rules
    return spec


def pod_body(name: str, kind: str, labels: dict[str, str], node: str) -> dict[str, Any]:
    """A pod pinned to ``node`` whose container has no command: the node agent answers on its declared ports."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "app", "image": kind, "ports": PORTS[kind]}]},
    }


@dataclass
class ChangeRecord:
    at: float  # seconds since the soak started
    kind: str
    what: str
    namespaces: tuple[str, ...]
    error: str = ""


class ChurnDriver:
    """Seeded changes to the soak's namespaces, pods and policies through the API (the only writer there)."""

    def __init__(self, api: Any, config: SoakConfig, nodes: list[str], started: float) -> None:
        self.core = core_api(api)
        self.net = networking_api(api)
        self.config = config
        self.nodes = nodes
        self.rng = random.Random(config.seed)
        self.world = World()
        self.started = started
        self.log: list[ChangeRecord] = []
        self._serial = 0

    def _name(self, stem: str) -> str:
        self._serial += 1
        return f"{stem}-{self._serial}"

    def _ns_labels(self) -> dict[str, str]:
        return {"team": self.rng.choice(TEAMS), "env": self.rng.choice(ENVS), "soak": "true"}

    # -- population --------------------------------------------------------------------------------------------

    def populate(self) -> None:
        """The base namespaces, each with its pods and two policies (recorded as changes of kind ``initial``)."""
        for i in range(self.config.base_namespaces):
            ns = f"{PREFIX}{chr(ord('a') + i)}"
            labels = self._ns_labels()
            self._create_namespace(ns, labels)
            made = [f"{ns} {labels}"]
            made += [self._create_pod(ns) for _ in range(self.config.pods_per_namespace)]
            made += [self._create_policy(ns) for _ in range(2)]
            at = round(time.monotonic() - self.started, 2)
            self.log.extend(ChangeRecord(at, "initial", what, (ns,)) for what in made)

    def wait_running(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pods = self.core.list_pod_for_all_namespaces(label_selector="soak-pod=true").items
            running = {(p.metadata.namespace, p.metadata.name) for p in pods if p.status.phase == "Running"}
            if set(self.world.pods) <= running:
                return
            if time.monotonic() > deadline:
                missing = sorted(set(self.world.pods) - running)
                raise RuntimeError(f"soak pods not running after {timeout:.0f}s: {missing}")
            time.sleep(1)

    # -- primitive operations ----------------------------------------------------------------------------------

    def _create_namespace(self, ns: str, labels: dict[str, str]) -> None:
        self.core.create_namespace({"metadata": {"name": ns, "labels": labels}})
        self.world.namespaces[ns] = dict(labels)

    def _create_pod(self, ns: str) -> str:
        kind = self.rng.choice(APPS)
        name = self._name(kind)
        labels = {"app": self.rng.choice(APPS) if self.rng.random() < 0.3 else kind, "soak-pod": "true"}
        node = self.rng.choice(self.nodes)
        body = pod_body(name, kind, labels, node)
        deadline = time.monotonic() + 30
        while True:  # a new namespace's default ServiceAccount is created asynchronously
            try:
                self.core.create_namespaced_pod(ns, body)
                break
            except ApiException as exc:
                if 'serviceaccount "default" not found' not in (exc.body or "") or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.world.pods[(ns, name)] = {"labels": labels, "node": node, "kind": kind}
        return f"{ns}/{name} ({kind} on {node}, app={labels['app']})"

    def _create_policy(self, ns: str) -> str:
        direction = self.rng.choice(("Ingress", "Egress"))
        name = self._name(direction.lower())
        spec = policy_spec(self.rng, direction)
        self.net.create_namespaced_network_policy(ns, {"metadata": {"name": name}, "spec": spec})
        self.world.policies[(ns, name)] = spec
        self.world.policy_history.setdefault((ns, name), []).append(spec)
        return f"{ns}/{name}: {json.dumps(spec, separators=(',', ':'))}"

    # -- one change --------------------------------------------------------------------------------------------

    def _possible(self) -> dict[str, Callable[[], tuple[str, tuple[str, ...]]]]:
        w, cfg = self.world, self.config
        namespaces = sorted(w.namespaces)
        out: dict[str, Callable[[], tuple[str, tuple[str, ...]]]] = {}
        roomy = [ns for ns in namespaces if len(w.pods_in(ns)) < cfg.max_pods_per_namespace]
        if roomy:
            out["pod_create"] = lambda: self._pod_create(roomy)
        deletable = [ns for ns in namespaces if len(w.pods_in(ns)) > 1]
        if deletable:
            out["pod_delete"] = lambda: self._pod_delete(deletable)
        if w.pods:
            out["pod_relabel"] = self._pod_relabel
        if len(w.dynamic) < cfg.max_dynamic_namespaces:
            out["namespace_create"] = self._namespace_create
        if w.dynamic:
            out["namespace_delete"] = self._namespace_delete
        out["namespace_relabel"] = self._namespace_relabel
        with_room = [ns for ns in namespaces if len(w.policies_in(ns)) < cfg.max_policies_per_namespace]
        if with_room:
            out["policy_create"] = lambda: self._policy_create(with_room)
        if w.policies:
            out["policy_modify"] = self._policy_modify
            out["policy_delete"] = self._policy_delete
        return out

    def change(self) -> ChangeRecord:
        """Make one change, picked by weight among those possible now; an API error is recorded, not raised."""
        possible = self._possible()
        kinds = sorted(possible)
        kind = self.rng.choices(kinds, weights=[CHANGES[k] for k in kinds])[0]
        at = time.monotonic() - self.started
        try:
            what, namespaces = possible[kind]()
            record = ChangeRecord(round(at, 2), kind, what, namespaces)
        except ApiException as exc:
            record = ChangeRecord(round(at, 2), kind, "", (), f"{exc.status} {exc.reason}")
        self.log.append(record)
        return record

    def _pod_create(self, namespaces: list[str]) -> tuple[str, tuple[str, ...]]:
        ns = self.rng.choice(namespaces)
        return self._create_pod(ns), (ns,)

    def _pod_delete(self, namespaces: list[str]) -> tuple[str, tuple[str, ...]]:
        ns = self.rng.choice(namespaces)
        _, name = self.rng.choice(self.world.pods_in(ns))
        del self.world.pods[(ns, name)]
        self.core.delete_namespaced_pod(name, ns)
        return f"{ns}/{name}", (ns,)

    def _pod_relabel(self) -> tuple[str, tuple[str, ...]]:
        ns, name = self.rng.choice(sorted(self.world.pods))
        labels = self.world.pods[(ns, name)]["labels"]
        if self.rng.random() < 0.2:  # a label no selector reads: an event that changes no verdict
            value = None if "track" in labels else self.rng.choice(("stable", "canary"))
            patch: dict[str, str | None] = {"track": value}
        else:
            patch = {"app": self.rng.choice([a for a in APPS if a != labels["app"]])}
        self.core.patch_namespaced_pod(name, ns, {"metadata": {"labels": patch}})
        for k, v in patch.items():
            if v is None:
                labels.pop(k, None)
            else:
                labels[k] = v
        return f"{ns}/{name} {patch}", (ns,)

    def _namespace_create(self) -> tuple[str, tuple[str, ...]]:
        ns = self._name(f"{PREFIX}dyn")
        labels = self._ns_labels()
        self._create_namespace(ns, labels)
        self.world.dynamic.append(ns)
        pods = [self._create_pod(ns) for _ in range(self.rng.choice((1, 2)))]
        if self.rng.random() < 0.5:
            pods.append(self._create_policy(ns))
        return f"{ns} {labels}: {'; '.join(pods)}", (ns,)

    def _namespace_delete(self) -> tuple[str, tuple[str, ...]]:
        ns = self.rng.choice(self.world.dynamic)
        self.world.dynamic.remove(ns)
        del self.world.namespaces[ns]
        for key in self.world.pods_in(ns):
            del self.world.pods[key]
        for key in self.world.policies_in(ns):
            del self.world.policies[key]
        self.core.delete_namespace(ns)
        return ns, (ns,)

    def _namespace_relabel(self) -> tuple[str, tuple[str, ...]]:
        ns = self.rng.choice(sorted(self.world.namespaces))
        labels = self.world.namespaces[ns]
        key = self.rng.choice(("team", "env"))
        value = next(v for v in (TEAMS if key == "team" else ENVS) if v != labels[key])
        self.core.patch_namespace(ns, {"metadata": {"labels": {key: value}}})
        labels[key] = value
        return f"{ns} {key}={value}", (ns,)

    def _policy_create(self, namespaces: list[str]) -> tuple[str, tuple[str, ...]]:
        ns = self.rng.choice(namespaces)
        return self._create_policy(ns), (ns,)

    def _policy_modify(self) -> tuple[str, tuple[str, ...]]:
        ns, name = self.rng.choice(sorted(self.world.policies))
        direction = self.world.policies[(ns, name)]["policyTypes"][0]
        spec = policy_spec(self.rng, direction)
        self.net.replace_namespaced_network_policy(name, ns, {"metadata": {"name": name}, "spec": spec})
        self.world.policies[(ns, name)] = spec
        self.world.policy_history[(ns, name)].append(spec)
        return f"{ns}/{name}: {json.dumps(spec, separators=(',', ':'))}", (ns,)

    def _policy_delete(self) -> tuple[str, tuple[str, ...]]:
        ns, name = self.rng.choice(sorted(self.world.policies))
        del self.world.policies[(ns, name)]
        self.net.delete_namespaced_network_policy(name, ns)
        return f"{ns}/{name}", (ns,)


# -- the operator --------------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proc_stats(pid: int) -> dict[str, float]:
    """RSS (VmRSS), peak RSS (VmHWM) and CPU time (utime + stime) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = {line.split(":")[0]: line.split(":")[1].strip() for line in status.splitlines() if ":" in line}
    stat = Path(f"/proc/{pid}/stat").read_text()
    parts = stat[stat.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "peak_rss_mib": int(fields["VmHWM"].split()[0]) / 1024,
        "cpu_seconds": (int(parts[11]) + int(parts[12])) / ticks,
    }


class OperatorUnderTest:
    """The real operator process with probing on; read over /metrics, /proc and its log only."""

    def __init__(self, kubeconfig: Path, log: Path, config: SoakConfig) -> None:
        self.metrics_port = _free_port()
        argv = [
            sys.executable, "-m", "netpol_auditor.controller", "--kubeconfig", str(kubeconfig), "--standalone",
            "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port),
            "--liveness", f"http://127.0.0.1:{_free_port()}/healthz",
            "--probe", "--probe-namespaces", f"{PREFIX}*",
            "--probe-interval", str(config.probe_interval), "--probe-settle", str(config.probe_settle),
            "--probe-retry", str(config.probe_retry), "--probe-max-pods", str(config.probe_max_pods),
            # every mismatch must reach an Event (the soak reads source -> destination and nodes from them)
            "--events-per-minute", "1000", "--events-dedup", "60",
            *config.extra_operator_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_AUDITOR_")}
        self.log = log
        self._log_file = open(log, "ab")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self._log_offset = 0
        self.cycles: list[tuple[float, dict[str, float]]] = []  # (when read, cycle line values)
        self.loop_held: list[float] = []
        self.runs_started = 0  # probe runs the prober started (more than one: it restarted within the process)
        self.log_errors: list[str] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def scrape(self, *names: str) -> dict[str, list[Any]]:
        """/metrics (or only the named families), by family name; a histogram's name[] is its sample names."""
        query = "?" + "&".join(f"name[]={n}" for n in names) if names else ""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics{query}"
        with urllib.request.urlopen(url, timeout=30) as rsp:
            text = rsp.read().decode()
        return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the operator exited ({self.proc.returncode}); see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=5) as rsp:
                    if rsp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the operator was not ready within {timeout:.0f}s; see {self.log}")

    def follow_log(self, now: float) -> None:
        """Read the log lines written since the last call: completed cycles, event-loop stalls, errors."""
        with open(self.log, "rb") as f:
            f.seek(self._log_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            if m := _CYCLE.search(line):
                self.cycles.append((round(now, 1), {"cycle": int(m[1]), "coverage": float(m[2]),
                                                    "judged": int(m[3]), "inconclusive": int(m[4]),
                                                    "mismatches": int(m[5])}))
            elif m := _LOOP_HELD.search(line):
                self.loop_held.append(float(m[1]))
            elif _RUN_STARTED.search(line):
                self.runs_started += 1
            elif "ERROR" in line or "Traceback" in line:
                self.log_errors.append(line.strip()[:400])

    def stop(self) -> int | None:
        """SIGTERM (the prober deletes its run's pods on the way out); the exit code, None if it had to be killed."""
        code: int | None = None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        else:
            code = self.proc.returncode
        if not self._log_file.closed:
            self._log_file.close()
        return code


def total(families: dict[str, list[Any]], family: str, sample: str | None = None, **labels: str) -> float:
    return float(sum(s.value for s in families.get(family, []) if s.name == (sample or family)
               and all(s.labels.get(k) == v for k, v in labels.items())))


def by_label(families: dict[str, list[Any]], family: str, sample: str, label: str) -> dict[str, float]:
    out: Counter[str] = Counter()
    for s in families.get(family, []):
        if s.name == sample:
            out[s.labels.get(label, "")] += s.value
    return dict(out)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative ``(le, count)`` buckets sorted by ``le``: linear within
    the bucket holding the rank; a rank in the +Inf bucket gives the highest finite bound."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def loop_lag(families: dict[str, list[Any]], held: list[float]) -> dict[str, Any]:
    """p50 / p99 from ``netpol_auditor_event_loop_lag_seconds``; the max from the operator's "held for" warnings
    (it logs every stall over 100 ms, the worst one a minute), else the bound of the highest non-empty bucket."""
    name = "netpol_auditor_event_loop_lag_seconds"
    buckets = sorted((float(s.labels["le"]), s.value) for s in families.get(name, []) if s.name == f"{name}_bucket")
    count = buckets[-1][1] if buckets else 0.0
    below = dict(buckets)
    bound = next((le for le, c in buckets if c == count), None) if count else None
    return {
        "observations": int(count),
        "p50_seconds": _round(histogram_quantile(0.5, buckets)),
        "p99_seconds": _round(histogram_quantile(0.99, buckets)),
        "max_seconds": round(max(held), 3) if held else None,
        "max_at_most_seconds": bound,
        "over_100ms": int(count - below.get(0.1, count)),
        "over_1s": int(count - below.get(1.0, count)),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# -- mismatches ------------------------------------------------------------------------------------------------


class DetectedCounter:
    """``netpol_auditor_mismatches_detected_total`` summed over time: its series of a deleted policy or namespace
    are removed, so the increments are accumulated per series from poll to poll (a series that comes back lower
    started again from zero)."""

    def __init__(self) -> None:
        self.last: dict[tuple[tuple[str, str], ...], float] = {}
        self.total = 0.0
        self.by_kind: Counter[str] = Counter()

    def update(self, families: dict[str, list[Any]]) -> None:
        for s in families.get("netpol_auditor_mismatches_detected", []):
            if s.name != "netpol_auditor_mismatches_detected_total":
                continue
            key = tuple(sorted(s.labels.items()))
            before = self.last.get(key, 0.0)
            grown = s.value - before if s.value >= before else s.value
            if grown > 0:
                self.total += grown
                self.by_kind[s.labels.get("kind", "")] += int(grown)
            self.last[key] = s.value


class MismatchEvents:
    """Watches the operator's mismatch Events (``PolicyNotEnforced``, ``AllowedTrafficDropped``) from now on, in a
    thread: they carry the source and destination pods, the port and the nodes (a namespace deleted later takes its
    Events with it, so they are read as they come)."""

    REASONS = ("PolicyNotEnforced", "AllowedTrafficDropped")

    def __init__(self, api: Any, started: float) -> None:
        self.core = core_api(api)
        self.seen: dict[str, dict[str, Any]] = {}  # message -> first event seen with it
        self.lock = threading.Lock()
        self.started = started  # time.monotonic() of the soak's start: what seen_at counts from
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mismatch-events", daemon=True)
        self._rv = self.core.list_event_for_all_namespaces(limit=1).metadata.resource_version
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            w = _Watch()
            try:
                for ev in w.stream(self.core.list_event_for_all_namespaces, resource_version=self._rv,
                                   timeout_seconds=30, allow_watch_bookmarks=True):
                    obj = ev["object"]
                    self._rv = obj.metadata.resource_version or self._rv
                    if ev["type"] in ("ADDED", "MODIFIED") and obj.reason in self.REASONS:
                        self._record(obj)
                    if self._stop.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:  # expired: pick up from now (events in between are lost; poll() lists them)
                    self.poll()
                    self._rv = self.core.list_event_for_all_namespaces(limit=1).metadata.resource_version
                else:
                    time.sleep(1)
            except Exception:  # a dropped connection: watch again
                time.sleep(1)
            finally:
                w.stop()

    def poll(self) -> None:
        """List the mismatch Events that exist now (a safety net for the watch)."""
        for reason in self.REASONS:
            for obj in self.core.list_event_for_all_namespaces(field_selector=f"reason={reason}").items:
                self._record(obj)

    def _record(self, obj: Any) -> None:
        message = obj.message or ""
        m = _MISMATCH.match(message)
        if m is None or not (m["src"].startswith(PREFIX) and m["dst"].startswith(PREFIX)):
            return
        stamp = obj.event_time or obj.first_timestamp or obj.metadata.creation_timestamp
        if stamp is not None and stamp.timestamp() < time.time() - (time.monotonic() - self.started) - 5:
            return  # from before this soak
        with self.lock:
            if message in self.seen:
                return
            policies = _POLICIES.search(m["why"])
            self.seen[message] = {
                "seen_at": round(time.monotonic() - self.started, 1),
                "kind": "unexpectedly_allowed" if obj.reason == "PolicyNotEnforced" else "unexpectedly_denied",
                "source": m["src"], "destination": m["dst"], "port": m["port"], "result": m["result"],
                "policies": [p.strip() for p in policies["names"].split(",")] if policies else [],
                "src_node": m["src_node"], "dst_node": m["dst_node"], "message": message,
            }

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(40)

    def items(self) -> list[dict[str, Any]]:
        with self.lock:
            return sorted(self.seen.values(), key=lambda e: e["seen_at"])


def _policy_key(name: str) -> tuple[str, str]:
    ns, _, policy = name.partition("/")
    return ns, policy


def known_gap(mismatch: dict[str, Any], world: World) -> str | None:
    """Which known kube-router gap (module doc) a mismatch has the shape of, judged from every spec its policies
    (those the operator names: the denying ones for unexpectedly allowed, the admitting ones for unexpectedly denied)
    ever had. The soak's policies stay out of all three, so this is None unless that design changes."""
    specs = [spec for name in mismatch["policies"] for spec in world.policy_history.get(_policy_key(name), [])]
    rules = [(d, r) for spec in specs for d in ("ingress", "egress") for r in spec.get(d, [])]
    if any(d == "egress" and not r.get("to") and named_any(r.get("ports", [])) for d, r in rules):
        return "egress_named_port_without_peers"
    if mismatch["kind"] != "unexpectedly_allowed":
        return None
    if mismatch["src_node"] == mismatch["dst_node"] and any(
            {"Ingress", "Egress"} <= set(spec["policyTypes"]) for spec in specs):
        return "same_node_egress"
    if any((r.get("from") or r.get("to")) and named_only(r.get("ports", [])) for _, r in rules):
        return "unresolved_named_port"
    return None


def changes_before(log: list[ChangeRecord], seen_at: float, namespaces: set[str], window: float = 60.0) -> list[str]:
    """The changes made in the ``window`` seconds before a mismatch was seen (any namespace-label change and any
    change in the pair's namespaces), as evidence."""
    return [f"t={c.at:.1f}s {c.kind} {c.what}" for c in log if seen_at - window <= c.at <= seen_at
            and (c.kind == "namespace_relabel" or set(c.namespaces) & namespaces)]


# -- the soak --------------------------------------------------------------------------------------------------


def operator_source() -> str:
    """The commit the operator runs from, and the files under operator/ that differ from it (the soak runs the
    working tree)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout

    changed = git("status", "--porcelain", "--", "operator").splitlines()
    return git("rev-parse", "--short", "HEAD").strip() + (f" + {len(changed)} changed file(s) under operator/: "
                                                  f"{', '.join(line[3:] for line in changed)}" if changed else "")


def install_crd(cluster: lc.Cluster) -> None:
    cluster.kubectl("apply", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/proberuns.netpol-auditor.io", "--timeout=60s")


def soak_namespaces(core: Any) -> list[str]:
    return sorted(ns.metadata.name for ns in core.list_namespace().items if ns.metadata.name.startswith(PREFIX))


def delete_soak_namespaces(core: Any, timeout: float = 180.0) -> None:
    """Delete every ``soak-*`` namespace and wait until they are gone."""
    for ns in soak_namespaces(core):
        try:
            core.delete_namespace(ns)
        except ApiException as exc:
            if exc.status != 404:
                raise
    deadline = time.monotonic() + timeout
    while soak_namespaces(core):
        if time.monotonic() > deadline:
            raise RuntimeError(f"soak namespaces still there after {timeout:.0f}s: {soak_namespaces(core)}")
        time.sleep(1)


def probe_pods(core: Any) -> list[str]:
    return [f"{p.metadata.namespace}/{p.metadata.name}"
            for p in core.list_pod_for_all_namespaces(label_selector=MANAGED_BY).items]


@dataclass
class _Poll:
    """What the soak reads from the operator while it runs."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    detected: DetectedCounter = field(default_factory=DetectedCounter)
    max_concurrent: float = 0.0
    coverage: list[float] = field(default_factory=list)
    scrape_failures: int = 0
    probes_at_first_change: float | None = None


POLL_FAMILIES = ("netpol_auditor_mismatches", "netpol_auditor_mismatches_detected_total",
                 "netpol_auditor_probes_total", "netpol_auditor_probe_coverage_ratio")


def _poll(op: OperatorUnderTest, state: _Poll, now: float) -> dict[str, list[Any]] | None:
    op.follow_log(now)
    try:
        families = op.scrape(*POLL_FAMILIES)
    except OSError:
        state.scrape_failures += 1
        return None
    state.detected.update(families)
    state.max_concurrent = max(state.max_concurrent, total(families, "netpol_auditor_mismatches"))
    if families.get("netpol_auditor_probe_coverage_ratio"):
        state.coverage.append(total(families, "netpol_auditor_probe_coverage_ratio"))
    return families


def _sample(op: OperatorUnderTest, state: _Poll, families: dict[str, list[Any]], now: float) -> None:
    stats = proc_stats(op.pid)
    state.samples.append({
        "t": round(now, 1),
        "rss_mib": round(stats["rss_mib"], 1),
        "cpu_seconds": round(stats["cpu_seconds"], 2),
        "probes": int(total(families, "netpol_auditor_probes", "netpol_auditor_probes_total")),
        "mismatches": int(total(families, "netpol_auditor_mismatches")),
        "cycles": op.cycles[-1][1]["cycle"] if op.cycles else 0,
        "coverage": state.coverage[-1] if state.coverage else None,
    })


def run_soak(cluster: lc.Cluster, config: SoakConfig, workdir: Path,
             progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run the soak against ``cluster`` (localcluster, kube-router): populate, start the operator, churn for
    ``config.duration`` seconds while polling, let a last cycle judge the final state, stop the operator, check that
    its probe pods are gone and remove the soak's namespaces. Returns the report (see `problems`)."""
    api = cluster.api_client()
    core = core_api(api)
    nodes = sorted(n.metadata.name for n in core.list_node().items)
    install_crd(cluster)
    delete_soak_namespaces(core)  # leftovers of an interrupted run
    started = time.monotonic()
    driver = ChurnDriver(api, config, nodes, started)
    driver.populate()
    driver.wait_running()
    progress(f"workload: {len(driver.world.namespaces)} namespaces, {len(driver.world.pods)} pods, "
             f"{len(driver.world.policies)} policies on {', '.join(nodes)}")
    events = MismatchEvents(api, started)
    op = OperatorUnderTest(cluster.kubeconfig, workdir / "operator.log", config)
    state = _Poll()
    report: dict[str, Any] = {"seed": config.seed, "change_every_seconds": config.change_every, "nodes": nodes,
                              "operator_log": str(op.log), "operator_source": operator_source(),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    churn_started = started
    try:
        op.wait_ready()
        families = _wait_first_cycle(op, state, started, config)
        progress(f"operator ready, first probe cycle complete after {time.monotonic() - started:.0f}s")
        churn_started = time.monotonic()
        report["first_cycle_seconds"] = round(churn_started - started, 1)
        state.probes_at_first_change = total(families, "netpol_auditor_probes", "netpol_auditor_probes_total")
        _churn(driver, op, state, config, churn_started, progress)
        report["churn_seconds"] = round(time.monotonic() - churn_started, 1)
        report["quiesce"] = _quiesce(op, state, started, config)
        progress(f"after the churn: {report['quiesce']}")
        try:
            final = op.scrape()
        except OSError:  # the operator is gone: what was polled last stands
            final = {}
        state.detected.update(final)
        op.follow_log(time.monotonic() - started)
        report.update(_final_metrics(final, op, state))
        report["operator_exited_during_run"] = None if op.alive() else op.proc.returncode
        if config.canary and op.alive():
            report["canary"] = _canary(cluster, driver, op, events, _Poll(), config)
            progress(f"canary: {report['canary']}")
    finally:
        exit_code = op.stop()
        events.poll()
        events.stop()
        report["operator_exit_code"] = exit_code
        report["probe_pods_left"] = _wait_no_probe_pods(core)
        delete_soak_namespaces(core)
    report.update(_summary(driver, state, op, events, report, churn_started - started))
    return report


def _wait_first_cycle(op: OperatorUnderTest, state: _Poll, started: float, config: SoakConfig) -> dict[str, Any]:
    deadline = time.monotonic() + max(300.0, config.quiesce_timeout)
    while True:
        now = time.monotonic() - started
        families = _poll(op, state, now)
        if families is not None and op.cycles:
            _sample(op, state, families, now)
            return families
        if not op.alive():
            raise RuntimeError(f"the operator exited ({op.proc.returncode}); see {op.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no complete probe cycle before the churn; see {op.log}")
        time.sleep(1)


def _churn(driver: ChurnDriver, op: OperatorUnderTest, state: _Poll, config: SoakConfig, churn_started: float,
           progress: Callable[[str], None]) -> None:
    next_change = churn_started
    next_poll = churn_started
    next_sample = churn_started + config.sample_every
    next_progress = churn_started + 60
    end = churn_started + config.duration
    while time.monotonic() < end and op.alive():
        now = time.monotonic()
        if now >= next_change:
            driver.change()
            next_change += config.change_every
            if next_change < now:  # fell behind (a slow API call): keep the rate, skip the missed slots
                next_change = now + config.change_every
        if now >= next_poll:
            families = _poll(op, state, now - driver.started)
            next_poll = now + 2.0
            if families is not None and now >= next_sample:
                _sample(op, state, families, now - driver.started)
                next_sample += config.sample_every
        if now >= next_progress:
            s = state.samples[-1] if state.samples else {}
            made = sum(c.kind != "initial" for c in driver.log)
            progress(f"{now - churn_started:.0f}s: {made} changes, cycle {s.get('cycles')}, "
                     f"{s.get('probes')} probes, {s.get('mismatches')} mismatches now, "
                     f"{state.detected.total:.0f} detected, RSS {s.get('rss_mib')} MiB")
            next_progress += 60
        time.sleep(max(0.0, min(next_change, next_poll) - time.monotonic()))


def _quiesce(op: OperatorUnderTest, state: _Poll, started: float, config: SoakConfig) -> dict[str, Any]:
    """After the last change: wait for a probe cycle that started after it and completed (its paths were judged
    against the final state)."""
    t0 = time.monotonic()
    base = op.cycles[-1][1]["cycle"] if op.cycles else 0
    while time.monotonic() - t0 < config.quiesce_timeout and op.alive():
        _poll(op, state, time.monotonic() - started)
        done = [c for _, c in op.cycles if c["cycle"] >= base + 2]  # base + 1 may have begun during the churn
        if done:
            return {"cycle": done[0]["cycle"], "seconds": round(time.monotonic() - t0, 1), **{
                k: done[0][k] for k in ("coverage", "judged", "inconclusive", "mismatches")}}
        time.sleep(1)
    return {"cycle": None, "seconds": round(time.monotonic() - t0, 1)}


def _fault(cluster: lc.Cluster, verb: str, node: str) -> None:
    subprocess.run([sys.executable, "-m", "localcluster", "--state", str(cluster.state), "fault", verb, node],
                   check=True, capture_output=True, cwd=ROOT, timeout=180)


def _canary(cluster: lc.Cluster, driver: ChurnDriver, op: OperatorUnderTest, events: MismatchEvents, state: _Poll,
            config: SoakConfig) -> dict[str, Any]:
    """A real enforcement gap made on purpose once the churn is over, so that the soak's zero means something: with
    kube-router stopped on the node of a pod of a base namespace (``fault stop-enforcer``) and a deny-all-ingress
    policy put in that namespace, paths into that pod are open though predicted denied, and must come back as a
    mismatch Event on that node; then the node is healed and the mismatches must clear."""
    started = driver.started
    ns, pod = next(k for k in sorted(driver.world.pods) if k[0] not in driver.world.dynamic)
    node = driver.world.pods[(ns, pod)]["node"]
    out: dict[str, Any] = {"namespace": ns, "node": node, "started_at": round(time.monotonic() - started, 1)}
    t0 = time.monotonic()
    _fault(cluster, "stop-enforcer", node)
    try:
        driver.net.create_namespaced_network_policy(ns, {"metadata": {"name": "canary-deny"},
                                                         "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
        while time.monotonic() - t0 < config.canary_timeout and op.alive():
            _poll(op, state, time.monotonic() - started)  # the canary's own poll state: the soak's totals stay
            hits = [m for m in events.items() if m["seen_at"] >= out["started_at"] and m["dst_node"] == node
                    and m["destination"].startswith(f"{ns}/") and m["kind"] == "unexpectedly_allowed"]
            if hits:
                out["detected_seconds"] = round(time.monotonic() - t0, 1)
                out["example"] = hits[0]["message"]
                break
            time.sleep(1)
    finally:
        _fault(cluster, "heal", node)
        with contextlib.suppress(ApiException):
            driver.net.delete_namespaced_network_policy("canary-deny", ns)
    healed = time.monotonic()
    while time.monotonic() - healed < config.canary_timeout and op.alive():
        with contextlib.suppress(OSError):
            if total(op.scrape("netpol_auditor_mismatches"), "netpol_auditor_mismatches") == 0:
                out["cleared_seconds"] = round(time.monotonic() - healed, 1)
                break
        time.sleep(2)
    out["mismatch_events"] = len([m for m in events.items() if m["seen_at"] >= out["started_at"]])
    return out


def _final_metrics(families: dict[str, list[Any]], op: OperatorUnderTest, state: _Poll) -> dict[str, Any]:
    probes = by_label(families, "netpol_auditor_probes", "netpol_auditor_probes_total", "result")
    return {
        "probes": {"total": int(sum(probes.values())), "by_result": {k: int(v) for k, v in sorted(probes.items())},
                   "after_first_change": int(sum(probes.values()) - (state.probes_at_first_change or 0))},
        "inconclusive_by_reason": {k: int(v) for k, v in sorted(by_label(
            families, "netpol_auditor_probes_inconclusive", "netpol_auditor_probes_inconclusive_total",
            "reason").items())},
        "probe_errors_by_stage": {k: int(v) for k, v in sorted(by_label(
            families, "netpol_auditor_probe_errors", "netpol_auditor_probe_errors_total", "stage").items())},
        "index_events": int(total(families, "netpol_auditor_index_events", "netpol_auditor_index_events_total")),
        "plan_self_check_failures": int(total(families, "netpol_auditor_probe_plan_self_check_failures",
                                              "netpol_auditor_probe_plan_self_check_failures_total")),
        "event_loop_lag": loop_lag(families, op.loop_held),
    }


def _wait_no_probe_pods(core: Any, timeout: float = 90.0) -> list[str]:
    deadline = time.monotonic() + timeout
    left = probe_pods(core)
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = probe_pods(core)
    return left


def _summary(driver: ChurnDriver, state: _Poll, op: OperatorUnderTest, events: MismatchEvents,
             report: dict[str, Any], churn_at: float) -> dict[str, Any]:
    changes = Counter(c.kind for c in driver.log if not c.error and c.kind != "initial")
    errors = Counter(c.kind for c in driver.log if c.error)
    canary_at = (report.get("canary") or {}).get("started_at", math.inf)
    mismatches = [m for m in events.items() if m["seen_at"] < canary_at]  # the canary's are its own
    for m in mismatches:
        m["known_gap"] = known_gap(m, driver.world)
        ns = {m["source"].split("/")[0], m["destination"].split("/")[0]}
        m["changes_before"] = changes_before(driver.log, m["seen_at"], ns)
    gap = [m for m in mismatches if m["known_gap"]]
    false = [m for m in mismatches if not m["known_gap"]]
    rss = [s["rss_mib"] for s in state.samples]
    cpu = [s["cpu_seconds"] for s in state.samples]
    span = state.samples[-1]["t"] - state.samples[0]["t"] if len(state.samples) > 1 else 0.0
    churn_end = churn_at + (report.get("churn_seconds") or 0.0)
    cycles_during = [c for t, c in op.cycles if churn_at < t <= churn_end]
    return {
        "duration_seconds": report.get("churn_seconds"),
        "changes": {"total": sum(changes.values()), "by_type": dict(sorted(changes.items())),
                    "api_errors": dict(sorted(errors.items()))},
        "probe_cycles": {"total": op.cycles[-1][1]["cycle"] if op.cycles else 0,
                         "completed_during_churn": len(cycles_during),
                         "judged_paths_in_cycles_during_churn": sum(int(c["judged"]) for c in cycles_during),
                         "coverage_min": min(state.coverage) if state.coverage else None,
                         "coverage_last": state.coverage[-1] if state.coverage else None},
        "mismatches": {
            "detected_total": int(state.detected.total),
            "detected_by_kind": dict(state.detected.by_kind),
            "max_concurrent": int(state.max_concurrent),
            "events": len(mismatches),
            "false": len(false),
            "known_gap": len(gap),
            "false_list": false,
            "known_gap_list": gap,
        },
        "operator_restarts": max(0, op.runs_started - 1),  # of its prober; the process is the one started here
        "scrape_failures": state.scrape_failures,
        "rss_mib": {"min": min(rss, default=None), "max": max(rss, default=None),
                    "last": rss[-1] if rss else None},
        "cpu_seconds": {"total": cpu[-1] if cpu else None,
                        "per_minute": round((cpu[-1] - cpu[0]) / span * 60, 2) if span else None},
        "log_errors": op.log_errors[:20],
        "samples": state.samples,
        "change_log": [c.__dict__ for c in driver.log],
    }


def problems(report: dict[str, Any]) -> list[str]:
    """What makes the soak fail: a mismatch outside the known gap (as an Event, or counted without one), an operator
    that exited or restarted, probe pods left behind."""
    out = []
    mm = report["mismatches"]
    for m in mm["false_list"]:
        out.append(f"false mismatch: {m['message']}")
    if mm["detected_total"] and not mm["events"]:
        out.append(f"{mm['detected_total']} mismatch(es) counted in netpol_auditor_mismatches_detected_total, "
                   "none posted as an Event")
    if report.get("operator_exited_during_run") is not None:
        out.append(f"the operator exited during the run ({report['operator_exited_during_run']})")
    if report.get("operator_restarts"):
        out.append(f"the operator restarted {report['operator_restarts']} time(s)")
    canary = report.get("canary")
    if canary is not None and "detected_seconds" not in canary:
        out.append("the canary (kube-router stopped on a node under a deny-all policy) was not detected: the soak "
                   "cannot see mismatches")
    if canary is not None and "cleared_seconds" not in canary:
        out.append("the canary's mismatches did not clear after kube-router was healed")
    if report.get("probe_pods_left"):
        out.append(f"probe pods left after the operator stopped: {report['probe_pods_left']}")
    return out


def render(report: dict[str, Any]) -> str:
    """The report in a few lines (the JSON has everything, samples and the change log included)."""
    mm, lag, cyc = report["mismatches"], report["event_loop_lag"], report["probe_cycles"]
    lines = [
        f"churn soak, seed {report['seed']}, started {report['started']}: {report['duration_seconds']}s of churn, one "
        f"change every {report['change_every_seconds']}s; nodes {', '.join(report['nodes'])}; operator from "
        f"{report['operator_source']}",
        f"changes: {report['changes']['total']} {report['changes']['by_type']}"
        + (f"; API errors {report['changes']['api_errors']}" if report["changes"]["api_errors"] else ""),
        f"probe cycles: {cyc['total']} ({cyc['completed_during_churn']} completed during the churn, "
        f"{cyc['judged_paths_in_cycles_during_churn']} paths judged in them); coverage min {cyc['coverage_min']}, "
        f"last {cyc['coverage_last']}; after the churn: {report['quiesce']}",
        f"probes: {report['probes']['total']} {report['probes']['by_result']} "
        f"({report['probes']['after_first_change']} after the first change)",
        f"inconclusive by reason: {report['inconclusive_by_reason']}",
        f"mismatches raised: {mm['detected_total']} (max {mm['max_concurrent']} at once); as Events: "
        f"{mm['events']}, false {mm['false']}, kube-router's known gap {mm['known_gap']}",
    ]
    for m in mm["false_list"] + mm["known_gap_list"]:
        tag = f"known gap ({m['known_gap']})" if m["known_gap"] else "FALSE"
        lines.append(f"  {tag} at t={m['seen_at']}s: {m['message']}")
        lines.extend(f"    {c}" for c in m["changes_before"])
    lines += [
        f"operator RSS MiB: min {report['rss_mib']['min']}, max {report['rss_mib']['max']}, last "
        f"{report['rss_mib']['last']}; CPU {report['cpu_seconds']['total']} s total, "
        f"{report['cpu_seconds']['per_minute']} s per minute",
        f"event loop lag: p50 {lag['p50_seconds']} s, p99 {lag['p99_seconds']} s, max {lag['max_seconds']} s "
        f"(highest bucket <= {lag['max_at_most_seconds']} s; {lag['over_100ms']} of {lag['observations']} over "
        f"100 ms)",
        *([f"canary: {report['canary']}"] if "canary" in report else []),
        f"probe errors by stage: {report['probe_errors_by_stage']}; operator restarts "
        f"{report['operator_restarts']}, exit code {report['operator_exit_code']}; probe pods left "
        f"{len(report['probe_pods_left'])}; log errors {len(report['log_errors'])}",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def local_cluster(state: Path | None, keep: bool) -> Iterator[lc.Cluster]:
    """The local cluster in ``state`` (reused as is when it runs with kube-router and 2 nodes), or a new one in a
    temporary state directory. A cluster started here is torn down at the end unless ``keep``."""
    path = (state or Path(f"/tmp/netpol-soak-{os.getpid()}")).resolve()
    existing = lc.Cluster.load(path)
    c = lc.up(lc.ClusterConfig(state=path, api_port=0, nodes=2, enforcer="kube-router"))
    started_here = not c.reused or existing is None
    try:
        yield c
    finally:
        if started_here and not keep:
            lc.down(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of churn (default 3600)")
    parser.add_argument("--change-every", type=float, default=3.0, help="seconds between changes (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the churn (default 1)")
    parser.add_argument("--sample-every", type=float, default=10.0,
                        help="seconds between RSS/CPU samples of the operator (default 10)")
    parser.add_argument("--state", type=Path, help="localcluster state directory: reuse the cluster running there "
                        "or create one (default: a new one in /tmp/netpol-soak-<pid>, torn down at the end)")
    parser.add_argument("--keep", action="store_true", help="leave a cluster this run started running")
    parser.add_argument("--json", type=Path, help="write the full report (samples and change log too) here")
    parser.add_argument("--workdir", type=Path, help="where the operator's log goes (default: a new temporary "
                        "directory)")
    parser.add_argument("--namespaces", type=int, default=SoakConfig.base_namespaces,
                        help=f"base namespaces, {SoakConfig.pods_per_namespace} pods each to start with (default "
                             f"{SoakConfig.base_namespaces}); up to {SoakConfig.max_dynamic_namespaces} others come "
                             "and go")
    parser.add_argument("--canary", action="store_true", help="after the churn, stop kube-router on a node under a "
                        "deny-all policy and check that the mismatch is detected and clears once healed")
    parser.add_argument("--probe-settle", type=float, default=SoakConfig.probe_settle)
    parser.add_argument("--probe-retry", type=float, default=SoakConfig.probe_retry)
    parser.add_argument("--probe-max-pods", type=int, default=SoakConfig.probe_max_pods)
    args = parser.parse_args(argv)
    config = SoakConfig(duration=args.duration, change_every=args.change_every, seed=args.seed,
                        sample_every=args.sample_every, probe_settle=args.probe_settle, probe_retry=args.probe_retry,
                        probe_max_pods=args.probe_max_pods, canary=args.canary, base_namespaces=args.namespaces)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="netpol-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def progress(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    with local_cluster(args.state, args.keep) as c:
        progress(f"cluster {c.server} ({c.state}); operator log in {workdir}")
        report = run_soak(c, config, workdir, progress)
    report["problems"] = problems(report)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    for p in report["problems"]:
        print(f"PROBLEM: {p}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
