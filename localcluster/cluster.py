"""``up`` / ``down`` / ``status``: the control plane first, then the simulated nodes (``localcluster.nodes``).

``up`` is idempotent (a healthy cluster with the same settings is reused) and recovers from crashes (leftover
processes, network namespaces and state from a previous run are removed first). ``down`` stops every process it
started, deletes every namespace and mount it created and removes the state directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from localcluster import controlplane
from localcluster.controlplane import ControlPlane, ControlPlaneConfig
from localcluster.paths import cache_dir

__all__ = ["Cluster", "ClusterConfig", "down", "leftovers", "memory", "status", "up"]

ENFORCERS = ("kube-router", "kube-network-policies", "none")
CONTROL_PLANE_PROCESSES = ("kube-controller-manager", "kube-apiserver", "etcd")  # stop order



class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries kubectl's own stderr (what a test report needs to show)."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nkubectl stderr:\n{(self.stderr or '').strip()}"


@dataclass
class ClusterConfig:
    state: Path
    nodes: int = 2
    enforcer: str = "kube-router"
    api_port: int = 6443  # 0: any free port
    timeout: float = 180.0


@dataclass
class Cluster:
    """A running cluster, as ``up`` leaves it and ``status`` reports it (``<state>/cluster.json``)."""

    state: Path
    kubeconfig: Path
    server: str
    version: str
    nodes: int
    enforcer: str
    up_seconds: float  # `up` to Ready: API ready, default ServiceAccount present, every node Ready and enforcing
    control_plane_seconds: float = 0.0
    nodes_seconds: float = 0.0
    reused: bool = False  # `up` found this cluster running and changed nothing

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0) -> str:
        """Run the real ``kubectl`` against this cluster; stdout (raises CalledProcessError with stderr on failure)."""
        proc = subprocess.run(["kubectl", f"--kubeconfig={self.kubeconfig}", *args], input=input, text=True,
                              capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        return proc.stdout

    def api_client(self) -> Any:
        """A new ``kubernetes.client.ApiClient`` for the admin user (the Python client is imported on demand)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def fault(self, *args: str) -> int:
        """Run a fault-injection verb (``localcluster.faults``) against this cluster."""
        rc: int = importlib.import_module("localcluster.faults").main([*args, "--state", str(self.state)])
        return rc

    def save(self) -> None:
        d = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        (self.state / "cluster.json").write_text(json.dumps(d, indent=2) + "\n")

    @classmethod
    def load(cls, state: Path) -> Cluster | None:
        try:
            d = json.loads((state / "cluster.json").read_text())
        except (OSError, ValueError):
            return None
        d["state"], d["kubeconfig"] = Path(d["state"]), Path(d["kubeconfig"])
        d.pop("reused", None)
        return cls(**d)


@contextlib.contextmanager
def _locked(state: Path) -> Iterator[None]:
    """One ``up``/``down`` at a time per state directory (the lock lives in the cache, not in the state dir)."""
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:16]
    with open(lock_dir / f"{key}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _nodes_available() -> bool:
    return importlib.util.find_spec("localcluster.nodes") is not None


def _start_nodes(cfg: ClusterConfig, cp: ControlPlane) -> None:
    if cfg.nodes == 0:
        return
    if not _nodes_available():
        raise RuntimeError("localcluster.nodes is not available: only --nodes 0 works")
    nodes = importlib.import_module("localcluster.nodes")
    nodes.start_nodes(nodes.NodeSetConfig(state_dir=cfg.state, kubeconfig=cp.kubeconfig, api_host="127.0.0.1",
                                          api_port=cp.api_port, count=cfg.nodes, enforcer=cfg.enforcer))


def _stop_nodes(state: Path) -> None:
    if _nodes_available():
        importlib.import_module("localcluster.nodes").stop_nodes(state)


def _healthy(state: Path) -> ControlPlane | None:
    cp = ControlPlane.load(state)
    if cp is None or not all(controlplane.process_alive(state, n) for n in cp.processes):
        return None
    try:
        code, _ = controlplane.api_get(cp, "/readyz", timeout=2.0)
    except OSError:
        return None
    return cp if code == 200 else None


def up(cfg: ClusterConfig) -> Cluster:
    """Start (or reuse) the cluster in ``cfg.state``; return when the API is ready and every node is Ready."""
    if cfg.enforcer not in ENFORCERS:
        raise ValueError(f"enforcer must be one of {ENFORCERS}, not {cfg.enforcer!r}")
    if cfg.nodes > 0 and not _nodes_available():
        raise RuntimeError("localcluster.nodes is not available: only --nodes 0 works")
    start = time.monotonic()
    state = cfg.state.resolve()
    with _locked(state):
        cp = _healthy(state)
        existing = Cluster.load(state)
        if cp is not None and existing is not None:
            everything_alive = all(controlplane.process_alive(state, n) for n in controlplane.recorded_processes(state))
            if (existing.nodes, existing.enforcer) == (cfg.nodes, cfg.enforcer) and everything_alive:
                existing.reused = True
                return existing
            # Other node settings, or a node process died: restart the nodes only. Their Node objects go too (no
            # node-lifecycle controller would ever mark a vanished node NotReady); the pod GC removes their pods.
            _stop_nodes(state)
            code, body = controlplane.api_get(cp, "/api/v1/nodes", timeout=30.0, method="DELETE")
            if code != 200:
                raise RuntimeError(f"deleting Node objects failed: HTTP {code}: {body[:300]!r}")
        else:
            _down_locked(state)
            cp = None
        try:
            if cp is None:
                cp = controlplane.start_control_plane(
                    ControlPlaneConfig(state=state, api_port=cfg.api_port), timeout=cfg.timeout)
            control_plane_done = time.monotonic()
            _start_nodes(cfg, cp)
        except BaseException:
            _stop_all(state)  # no half-started cluster keeps running; logs stay in <state>/logs until `down`
            raise
        done = time.monotonic()
        cluster = Cluster(state=state, kubeconfig=cp.kubeconfig, server=cp.server, version=cp.version,
                          nodes=cfg.nodes, enforcer=cfg.enforcer, up_seconds=round(done - start, 2),
                          control_plane_seconds=round(control_plane_done - start, 2),
                          nodes_seconds=round(done - control_plane_done, 2))
        cluster.save()
        return cluster


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
    return pids


def _processes_mentioning(state: Path) -> list[int]:
    """Pids of processes whose command line names a path in ``state``: what a crashed cluster left running.

    Never this process, its ancestors, or a ``python -m localcluster`` command (it only *operates on* the state).
    """
    pattern = re.compile(rb"(?:^|[=:,])" + re.escape(str(state).encode()) + rb"(?:/|,|$)")
    skip = _ancestors()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in skip:
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(argv[i:i + 2] == [b"-m", b"localcluster"] for i in range(len(argv))):
            continue
        if any(pattern.search(a) for a in argv):
            found.append(int(proc.name))
    return found


def _mounts_under(state: Path) -> list[str]:
    prefix = str(state)
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            mounts.append(point)
    return mounts


def leftovers(state: Path) -> dict[str, list[str]]:
    """What of a cluster in ``state`` still exists on this machine (empty lists after a clean ``down``).

    Processes: recorded ones still alive, any whose command line names the state directory, and any running inside
    one of the cluster's network namespaces.
    """
    state = state.resolve()
    netns: list[str] = []
    pids = set(_processes_mentioning(state))
    for name in controlplane.recorded_processes(state) if (state / "pids").is_dir() else []:
        rec = controlplane.read_pid(state, name)
        if rec is not None and controlplane.process_alive(state, name) and isinstance(rec["pid"], int):
            pids.add(rec["pid"])
    with contextlib.suppress(ImportError):
        from localcluster import network

        netns = network.list_netns(network.cluster_prefix(state))
        for ns in netns:
            pids.update(network.pids_in_netns(ns))
    return {
        "processes": [str(p) for p in sorted(pids)],
        "netns": netns,
        "mounts": _mounts_under(state),
        "dirs": [str(state)] if state.exists() else [],
    }


def _kill_strays(state: Path) -> None:
    for _ in range(50):
        pids = _processes_mentioning(state)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _stop_all(state: Path) -> None:
    """Stop nodes and control plane, kill strays, unmount; the state directory itself stays."""
    _stop_nodes(state)
    if not state.exists():
        return
    for name in CONTROL_PLANE_PROCESSES:
        controlplane.stop_process(state, name)
    for name in controlplane.recorded_processes(state):
        controlplane.stop_process(state, name)
    _kill_strays(state)
    for mount in sorted(_mounts_under(state), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    (state / "cluster.json").unlink(missing_ok=True)


def _down_locked(state: Path) -> None:
    _stop_all(state)
    shutil.rmtree(state, ignore_errors=True)


def down(state: Path) -> None:
    """Stop everything ``up`` started in ``state`` and remove it; safe to run any number of times."""
    state = state.resolve()
    with _locked(state):
        _down_locked(state)


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(proc.name))
    return kids


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory(state: Path) -> dict[str, int]:
    """Resident memory (bytes) of each recorded process together with its descendants (pod processes, ...)."""
    state = state.resolve()
    kids = _children()
    out: dict[str, int] = {}
    for name in controlplane.recorded_processes(state):
        rec = controlplane.read_pid(state, name)
        if rec is None or not controlplane.process_alive(state, name) or not isinstance(rec["pid"], int):
            continue
        total, todo, seen = 0, [rec["pid"]], set()
        while todo:
            pid = todo.pop()
            if pid not in seen:
                seen.add(pid)
                total += _rss_bytes(pid)
                todo += kids.get(pid, [])
        out[name] = total
    return out


def status(state: Path) -> dict[str, object]:
    """Endpoints, kubeconfig path, processes and readiness of the cluster in ``state``."""
    state = state.resolve()
    cluster = Cluster.load(state)
    cp = ControlPlane.load(state)
    if cp is None:
        return {"state": str(state), "running": False}
    procs = {n: controlplane.process_alive(state, n) for n in controlplane.recorded_processes(state)}
    ready = _healthy(state) is not None
    out: dict[str, object] = {
        "state": str(state),
        "running": ready,
        "server": cp.server,
        "kubeconfig": str(cp.kubeconfig),
        "version": cp.version,
        "etcd": f"http://127.0.0.1:{cp.etcd_port}",
        "controller_manager": f"https://127.0.0.1:{cp.kcm_port}/healthz",
        "processes": procs,
        "rss_mib": round(sum(memory(state).values()) / 2**20, 1),
    }
    if cluster is not None:
        out.update(nodes=cluster.nodes, enforcer=cluster.enforcer)
    return out
