"""The node agent: what stands in for kubelet + a container runtime on one localcluster node.

``python -m localcluster.agent --node node-1 --index 1 --prefix P --kubeconfig K --state-dir S [--scheduler]``

* registers the Node (spec.podCIDR, InternalIP, Ready) and keeps it alive: a Lease in kube-node-lease renewed every
  10 s and the Ready condition's heartbeat, so KCM's node lifecycle controller never taints it;
* admits each Pod bound to it as kubelet does, or rejects it (agent_admission.py: OS, node affinity, NoExecute
  taints);
* runs each admitted Pod: a network namespace with a veth on the node bridge and an IP from the node's pod CIDR,
  responders on the declared containerPorts, command containers for real (agent_containers.py; images under
  ``.invalid`` fail to pull), readiness probes (agent_probes.py), mesh sidecars that capture the pod's TCP
  (agent_sidecar.py), and patches ``status`` as kubelet does (phase, podIP(s), hostIP(s), startTime, conditions incl.
  readiness gates, containerStatuses); honours restartPolicy, activeDeadlineSeconds and graceful deletion;
* with ``--scheduler`` (one agent per cluster) also binds unscheduled pods (scheduler.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import platform
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from localcluster import network
from localcluster.agent_admission import NodeView, Rejection, admit, post_rejection_event
from localcluster.agent_api import ApiClient, ApiError, pod_path
from localcluster.agent_containers import ContainerRun, build_env, image_pull_error, now
from localcluster.agent_probes import ReadinessWorker, probe_kind
from localcluster.agent_sidecar import install_capture, mesh_of
from localcluster.responder import Listener, ResponderLoop, open_listener, sctp_supported

__all__ = ["Agent", "main"]

log = logging.getLogger("localcluster.agent")
Obj = dict[str, Any]
LEASE_SECONDS = 40
LEASE_RENEW = 10
STATUS_HEARTBEAT = 30
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0  # kubelet's CrashLoopBackOff: 10 s doubling up to 5 min
# kubelet's image pull back-off (pkg/kubelet/kubelet.go imageBackOffPeriod, MaxImageBackOff): 10 s doubling to 5 min
IMAGE_BACKOFF_START, IMAGE_BACKOFF_MAX = 10.0, 300.0
# A failed pull fails the pod's sync; the next sync (kubelet: the sandbox's PLEG event, the worker's requeue) finds
# the image in back-off and reports ImagePullBackOff. The agent makes that next sync this long after the failure.
IMAGE_RESYNC_SECONDS = 1.0
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


def micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


class PodRuntime:
    """Everything the agent holds for one pod (keyed by UID)."""

    def __init__(self, pod: Obj) -> None:
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.key = f"{self.namespace}/{self.name}/{self.uid}"
        self.lock = threading.RLock()
        self.ip: str | None = None
        self.netns: str | None = None
        self.containers: list[ContainerRun] = []
        self.init_containers: list[ContainerRun] = []
        self.probes: list[ReadinessWorker] = []
        self.initialized = False
        self.start_time: str | None = None
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.transitions: dict[str, tuple[str, str]] = {}
        self.stopped = False  # processes killed, sandbox gone (terminal or deleting)
        self.deleting = False
        self.last_status: Obj | None = None
        self.seen_at = time.monotonic()  # when the agent first saw it: admission reads a Node at least this fresh

    @property
    def spec(self) -> Obj:
        return dict(self.pod["spec"])

    @property
    def host_network(self) -> bool:
        return bool(self.spec.get("hostNetwork"))

    @property
    def restart_policy(self) -> str:
        return str(self.spec.get("restartPolicy") or "Always")

    def grace(self) -> float:
        meta = self.pod["metadata"]
        g = meta.get("deletionGracePeriodSeconds")
        if g is None:
            g = self.spec.get("terminationGracePeriodSeconds", 30)
        return float(g)


class Agent:
    """One node's agent. Thread-safe: watch thread, worker pool, container waiters, heartbeat."""

    def __init__(self, api: ApiClient, node: network.NodeNet, prefix: str, state_dir: Path) -> None:
        self.api = api
        self.node = node
        self.prefix = prefix
        self.dir = state_dir / "agents" / node.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ipam = network.IPAM(node.pod_cidr)
        self.pods: dict[str, PodRuntime] = {}
        self.pods_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pod")
        self.responders = ResponderLoop()
        self.stopping = threading.Event()
        self.version = "v0.0.0"
        self.node_view = NodeView(api, node.name)

    # ---- Node object and heartbeats
    def node_status(self) -> Obj:
        t = now()
        cond = [
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
             "message": "kubelet has sufficient memory available"},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
             "message": "kubelet has no disk pressure"},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
             "message": "kubelet has sufficient PID available"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"},
        ]
        for c in cond:
            c["lastHeartbeatTime"] = t
            c.setdefault("lastTransitionTime", self._node_since)
        res = {"cpu": "2", "memory": "8Gi", "pods": "250", "ephemeral-storage": "20Gi"}
        return {
            "addresses": [{"type": "InternalIP", "address": self.node.node_ip},
                          {"type": "Hostname", "address": self.node.name}],
            "capacity": res,
            "allocatable": res,
            "conditions": cond,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": platform.release(), "osImage": "localcluster network namespace",
                "containerRuntimeVersion": "localcluster://0.1.0", "kubeletVersion": self.version,
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        }

    def register(self) -> None:
        """Create (or adopt) the Node with spec.podCIDR and post a Ready status, then the Lease."""
        self._node_since = now()
        with contextlib.suppress(ApiError, KeyError):
            self.version = self.api.get("/version")["gitVersion"]
        body = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.node.name, "labels": {
                "kubernetes.io/hostname": self.node.name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "localcluster/node-index": str(self.node.index)}},
            "spec": {"podCIDR": self.node.pod_cidr, "podCIDRs": [self.node.pod_cidr]},
        }
        try:
            self.api.create("/api/v1/nodes", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
        self.api.patch(f"/api/v1/nodes/{self.node.name}/status", {"status": self.node_status()})
        self.renew_lease()
        self.untaint_ready()

    def untaint_ready(self) -> None:
        """Drop the node.kubernetes.io/not-ready:NoSchedule taint that the TaintNodesByCondition admission plugin
        puts on every new Node. KCM's node lifecycle controller removes it once the node is Ready; localcluster does
        not run that controller (it would also evict pods on missed heartbeats), so the agent does it."""
        node = self.api.get(f"/api/v1/nodes/{self.node.name}")
        taints = (node.get("spec") or {}).get("taints") or []
        kept = [t for t in taints if t.get("key") != "node.kubernetes.io/not-ready"]
        if kept != taints:
            self.api.patch(f"/api/v1/nodes/{self.node.name}", {"spec": {"taints": kept or None}}, kind="merge")

    def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node.name}"
        spec = {"holderIdentity": self.node.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro_now()}
        try:
            self.api.patch(path, {"spec": spec}, kind="merge")
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.api.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node.name, "namespace": "kube-node-lease"}, "spec": spec})

    def heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stopping.wait(LEASE_RENEW):
            try:
                self.renew_lease()
                if time.monotonic() - last_status >= STATUS_HEARTBEAT:
                    self.api.patch(f"/api/v1/nodes/{self.node.name}/status", {"status": self.node_status()})
                    last_status = time.monotonic()
            except Exception:
                log.exception("heartbeat failed")

    # ---- Pod event dispatch
    def watch_loop(self) -> None:
        seen: set[str] = set()
        for kind, pod in self.api.list_and_watch("/api/v1/pods", fieldSelector=f"spec.nodeName={self.node.name}"):
            if self.stopping.is_set():
                return
            if kind == "RELIST":
                seen = set()
                continue
            if kind == "SYNCED":
                with self.pods_lock:
                    gone = [rt for uid, rt in self.pods.items() if uid not in seen]
                for rt in gone:
                    self.pool.submit(self.forget, rt)
                continue
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            try:
                self.on_event(kind, pod)
            except Exception:
                log.exception("event %s %s failed", kind, pod["metadata"].get("name"))

    def on_event(self, kind: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        with self.pods_lock:
            rt = self.pods.get(uid)
            if kind == "DELETED":
                if rt:
                    self.pool.submit(self.forget, rt)
                return
            if rt is None:
                phase = (pod.get("status") or {}).get("phase")
                if pod["metadata"].get("deletionTimestamp") or phase in ("Succeeded", "Failed"):
                    rt = None
                else:
                    rt = self.pods[uid] = PodRuntime(pod)
                    rt.ip = self.reuse_ip(rt)  # reserved now, before any other pod of the relist allocates
                    self.pool.submit(self.start_pod, rt)
                    return
            else:
                rt.pod = pod
        if rt is None:  # never ran here: deleting or finished before we saw it
            if pod["metadata"].get("deletionTimestamp"):
                self.pool.submit(self.delete_from_api, pod)
            return
        if pod["metadata"].get("deletionTimestamp") and not rt.deleting:
            rt.deleting = True
            self.pool.submit(self.terminate, rt)
        elif not rt.deleting:
            self.pool.submit(self.sync_status, rt)  # readiness gates may have changed

    # ---- Pod lifecycle
    def admission(self, rt: PodRuntime) -> Rejection | None:
        """kubelet's canAdmitPod against the Node as it is now (agent_admission.py)."""
        try:
            node = self.node_view.get(rt.seen_at)
        except ApiError as exc:  # predicateAdmitHandler: getNodeAnyWayFunc failed
            log.warning("admission of %s: cannot get node: %s", rt.key, exc)
            return Rejection("InvalidNodeInfo", "Kubelet cannot get node info.")
        return admit(rt.pod, node)

    def reject(self, rt: PodRuntime, rejection: Rejection) -> None:
        """kubelet's rejectPod: a Warning Event and phase Failed with the reason; nothing of the pod ever runs."""
        log.info("rejected %s: %s: %s", rt.key, rejection.reason, rejection.message)
        rt.stopped = True
        rt.phase, rt.reason, rt.message = "Failed", rejection.reason, rejection.status_message
        if rt.ip:
            self.ipam.release(rt.ip)
            rt.ip = None
        post_rejection_event(self.api, rt.pod, self.node.name, rejection)
        # the status manager's SetPodStatus: only phase/reason/message, plus the startTime it always fills in
        status = {"phase": "Failed", "reason": rejection.reason, "message": rejection.status_message,
                  "startTime": now()}
        try:
            self.api.patch(pod_path(rt.namespace, rt.name, "status"), {"metadata": {"uid": rt.uid}, "status": status})
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("status of %s: %s", rt.key, exc)

    def start_pod(self, rt: PodRuntime) -> None:
        with rt.lock:
            if rt.deleting:
                return
            rejection = self.admission(rt)
            if rejection is not None:
                self.reject(rt, rejection)
                return
            try:
                rt.start_time = now()
                if rt.host_network:  # the node's own namespace and address, as kubelet gives hostNetwork pods
                    rt.ip, rt.netns = self.node.node_ip, self.node.netns
                else:
                    rt.ip = rt.ip or self.ipam.allocate()
                    rt.netns = network.create_pod(self.prefix, self.node, rt.key, rt.ip).netns
                net = network.PodNet(netns=rt.netns, ip=rt.ip, host_veth="")
                # spec.securityContext.sysctls: the namespaced net.* ones apply to the pod's network namespace
                for sc in (rt.spec.get("securityContext") or {}).get("sysctls") or []:
                    if str(sc.get("name", "")).startswith("net.") and not rt.host_network:
                        network.sysctl(net.netns, sc["name"], sc.get("value", ""))
            except Exception as exc:
                log.exception("sandbox for %s failed", rt.key)
                rt.reason, rt.message = "FailedCreatePodSandBox", str(exc)
                self.patch_status(rt)
                return
            pod = rt.pod
            spec = rt.spec
            pod_dir = self.dir / rt.uid

            def on_exit(cr: ContainerRun, rt: PodRuntime = rt) -> None:
                self.pool.submit(self.container_exited, rt, cr)

            for kind, target in (("initContainers", rt.init_containers), ("containers", rt.containers)):
                for c in spec.get(kind) or []:
                    target.append(ContainerRun(
                        spec=c, pod_spec=spec, netns=net.netns, dir=pod_dir / c["name"],
                        env=build_env(pod, c, rt.ip, self.node.node_ip),
                        on_exit=on_exit))
            self.start_responders(rt)
            deadline = spec.get("activeDeadlineSeconds")
            if deadline is not None:
                timer = threading.Timer(float(deadline), self.deadline_exceeded, args=(rt,))
                timer.daemon = True
                timer.start()
            self.advance(rt)  # patches the status

    def reuse_ip(self, rt: PodRuntime) -> str | None:
        """A pod that already has an IP from this node (the agent restarted) keeps it: pod IPs are immutable."""
        ip = (rt.pod.get("status") or {}).get("podIP")
        if not ip or ipaddress.ip_address(ip) not in ipaddress.ip_network(self.node.pod_cidr):
            return None
        if ip in self.ipam.used:
            return None
        self.ipam.reserve(ip)
        return str(ip)

    def start_responders(self, rt: PodRuntime) -> None:
        listeners = []
        identity = f"{rt.namespace}/{rt.name}"
        done: set[tuple[str, int]] = set()
        for c in rt.containers:  # a mesh sidecar first: its init container would have run before any container
            mesh = mesh_of(c.spec)
            if mesh is None or rt.host_network or not rt.netns:
                continue
            uid, gid = c.run_as()
            try:
                captured = install_capture(rt.netns, f"{network.NETNS_DIR}/{rt.netns}", mesh, uid, gid, identity)
            except Exception:
                log.exception("%s: mesh capture for %s failed", identity, c.name)
                continue
            listeners += captured
            done.update(("TCP", lst.port) for lst in captured)
        for c in rt.containers:
            if c.argv is not None:
                continue  # a command container serves its own ports
            if image_pull_error(str(c.spec.get("image") or "")):
                continue  # it never starts: nothing of it listens
            for p in c.spec.get("ports") or []:
                proto = p.get("protocol") or "TCP"
                port = int(p["containerPort"])
                if (proto, port) in done:
                    continue
                done.add((proto, port))
                if proto == "SCTP" and not sctp_supported():
                    log.warning("%s: sctp/%d not answered: kernel lacks SCTP", identity, port)
                    continue
                sock = open_listener(proto, port, f"{network.NETNS_DIR}/{rt.netns}")
                listeners.append(Listener(sock, proto, port, identity))
        self.responders.add(rt.uid, listeners)

    def advance(self, rt: PodRuntime) -> None:
        """Start the next init container, or all app containers once init is done (kubelet's order)."""
        with rt.lock:
            if rt.stopped or rt.deleting:
                return
            if not rt.initialized:
                for ic in rt.init_containers:
                    t = ic.terminated
                    if t and t["exitCode"] == 0:
                        continue
                    if not ic.running and not t and not ic.image_failed:
                        self.start_container(rt, ic)
                        self.patch_status(rt)
                    return
                rt.initialized = True
            for c in rt.containers:
                if "waiting" in c.state and c.state["waiting"].get("reason") == "ContainerCreating":
                    self.start_container(rt, c)
            self.update_phase(rt)
            self.patch_status(rt)

    def start_container(self, rt: PodRuntime, c: ContainerRun) -> None:
        """Start `c` (and its readiness probe); if its image cannot be pulled, schedule the ImagePullBackOff sync and
        the next pull."""
        c.start()
        if c.running and c in rt.containers and probe_kind(c.spec) and rt.ip:
            rt.probes = [w for w in rt.probes if w.current()]
            worker = ReadinessWorker(c, rt.ip, self.node.netns, lambda _c: self.pool.submit(self.sync_status, rt))
            rt.probes.append(worker)
            worker.start()
        if c.image_failed:
            delay = min(IMAGE_BACKOFF_START * 2 ** (c.pull_failures - 1), IMAGE_BACKOFF_MAX)
            for after, action in ((IMAGE_RESYNC_SECONDS, self.image_back_off), (delay, self.retry_pull)):
                timer = threading.Timer(after, action, args=(rt, c, c.pull_failures))
                timer.daemon = True
                timer.start()

    def image_back_off(self, rt: PodRuntime, c: ContainerRun, attempt: int) -> None:
        """A sync inside the back-off window: kubelet's EnsureImageExists answers ImagePullBackOff with
        "Back-off pulling image <image>: <previous error>" (pkg/kubelet/images/image_manager.go)."""
        with rt.lock:
            if rt.stopped or rt.deleting or c.pull_failures != attempt or c.state["waiting"].get("reason") != \
                    "ErrImagePull":
                return
            previous = c.state["waiting"].get("message", "")
            c.state = {"waiting": {"reason": "ImagePullBackOff",
                                   "message": f'Back-off pulling image "{c.spec.get("image", "")}": '
                                              f"ErrImagePull: {previous}"}}
            self.update_phase(rt)
            self.patch_status(rt)

    def retry_pull(self, rt: PodRuntime, c: ContainerRun, attempt: int) -> None:
        with rt.lock:
            if rt.stopped or rt.deleting or c.pull_failures != attempt or not c.image_failed:
                return
            self.start_container(rt, c)
            self.update_phase(rt)
            self.patch_status(rt)

    def container_exited(self, rt: PodRuntime, cr: ContainerRun) -> None:
        with rt.lock:
            if rt.stopped or cr.stopping:
                return
            t = cr.terminated or {}
            code = int(t.get("exitCode", 1))
            restart = rt.restart_policy == "Always" or (rt.restart_policy == "OnFailure" and code != 0)
            if cr in rt.init_containers and code == 0:
                self.pool.submit(self.advance, rt)
                self.patch_status(rt)
                return
            if restart:
                delay = min(BACKOFF_START * (2 ** cr.restart_count), BACKOFF_MAX)
                cr.last_state = {"terminated": t}
                cr.state = {"waiting": {"reason": "CrashLoopBackOff",
                                        "message": f"back-off {int(delay)}s restarting failed container={cr.name}"
                                                   f" pod={rt.name}_{rt.namespace}({rt.uid})"}}
                timer = threading.Timer(delay, self.restart_container, args=(rt, cr))
                timer.daemon = True
                timer.start()
            self.update_phase(rt)
            self.patch_status(rt)
            if rt.phase in ("Succeeded", "Failed"):
                self.stop_sandbox(rt, grace=0)

    def restart_container(self, rt: PodRuntime, cr: ContainerRun) -> None:
        with rt.lock:
            if rt.stopped or rt.deleting:
                return
            cr.restart_count += 1
            self.start_container(rt, cr)
            if cr in rt.init_containers:
                return
            self.update_phase(rt)
            self.patch_status(rt)

    def update_phase(self, rt: PodRuntime) -> None:
        """kubelet's getPhase (pkg/kubelet/kubelet_pods.go) for a started pod: Pending while a container waits
        without ever having run (e.g. its image cannot be pulled), else Running while any container runs or will
        restart, else Succeeded/Failed."""
        if rt.reason == "DeadlineExceeded":
            rt.phase = "Failed"
            return
        if not rt.initialized:
            failed_init = any((ic.terminated or {}).get("exitCode", 0) != 0 for ic in rt.init_containers)
            rt.phase = "Failed" if failed_init and rt.restart_policy == "Never" else "Pending"
            return
        running = waiting = stopped = succeeded = 0
        for c in rt.containers:
            if c.running:
                running += 1
            elif c.terminated is not None:
                stopped += 1
                succeeded += int(c.terminated["exitCode"]) == 0
            elif c.last_state.get("terminated"):
                stopped += 1  # waiting to restart (CrashLoopBackOff)
            else:
                waiting += 1
        if waiting:
            rt.phase = "Pending"
        elif running or rt.restart_policy == "Always" or (rt.restart_policy == "OnFailure" and stopped != succeeded):
            rt.phase = "Running"
        else:
            rt.phase = "Succeeded" if stopped == succeeded else "Failed"

    def deadline_exceeded(self, rt: PodRuntime) -> None:
        with rt.lock:
            if rt.stopped or rt.deleting:
                return
            rt.reason, rt.message = "DeadlineExceeded", DEADLINE_MESSAGE
            self.stop_sandbox(rt, grace=rt.grace())
            rt.phase = "Failed"
            self.patch_status(rt)

    def stop_sandbox(self, rt: PodRuntime, grace: float) -> None:
        """Kill every container, stop the responders, delete the pod netns and free its IP (podIP stays in status)."""
        with rt.lock:
            if rt.stopped:
                return
            rt.stopped = True
            for w in rt.probes:
                w.stop()
            for c in rt.containers + rt.init_containers:
                c.stop(grace)
            self.responders.remove(rt.uid)
            if rt.host_network:
                pass  # the node's namespace stays; only the pod's own processes were stopped
            elif rt.netns:
                for pid in network.pids_in_netns(rt.netns):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                network.delete_pod(self.prefix, self.node, rt.key)
            if rt.ip and not rt.host_network:
                self.ipam.release(rt.ip)
            shutil.rmtree(self.dir / rt.uid, ignore_errors=True)

    def terminate(self, rt: PodRuntime) -> None:
        """Graceful deletion: kill with the pod's grace period, tear down, then delete with gracePeriodSeconds=0."""
        with rt.lock:
            self.stop_sandbox(rt, grace=rt.grace())
        self.delete_from_api(rt.pod)
        with self.pods_lock:
            self.pods.pop(rt.uid, None)

    def forget(self, rt: PodRuntime) -> None:
        with rt.lock:
            self.stop_sandbox(rt, grace=0)
        with self.pods_lock:
            self.pods.pop(rt.uid, None)

    def delete_from_api(self, pod: Obj) -> None:
        meta = pod["metadata"]
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]}}
        with contextlib.suppress(ApiError):
            self.api.delete(pod_path(meta["namespace"], meta["name"]), body)

    # ---- Status
    def _condition(self, rt: PodRuntime, ctype: str, status: bool, reason: str | None = None,
                   message: str | None = None) -> Obj:
        s = "True" if status else "False"
        prev = rt.transitions.get(ctype)
        if prev is None or prev[0] != s:
            rt.transitions[ctype] = (s, now())
        # reason/message always present: null deletes a stale value under a strategic merge patch
        return {"type": ctype, "status": s, "lastProbeTime": None, "lastTransitionTime": rt.transitions[ctype][1],
                "reason": reason or None, "message": message or None}

    @staticmethod
    def _container_status(c: ContainerRun) -> Obj:
        st: Obj = {"name": c.name, "image": c.spec.get("image", ""), "imageID": "",
                   "ready": c.ready, "started": c.running, "restartCount": c.restart_count,
                   "state": c.state, "lastState": c.last_state}
        if c.container_id and "waiting" not in c.state:
            st["containerID"] = c.container_id
        return st

    def build_status(self, rt: PodRuntime) -> Obj:
        """PodStatus as kubelet's generateAPIPodStatus would write it (pkg/kubelet/kubelet_pods.go)."""
        ready_containers = bool(rt.containers) and all(c.ready for c in rt.containers)
        not_ready = [c.name for c in rt.containers if not c.ready]
        terminal = rt.phase in ("Succeeded", "Failed")
        conds = [
            self._condition(rt, "PodReadyToStartContainers", rt.netns is not None and not rt.stopped),
            self._condition(rt, "Initialized", rt.initialized, None if rt.initialized else "ContainersNotInitialized",
                            None if rt.initialized else "containers with incomplete status: "
                            f"[{' '.join(c.name for c in rt.init_containers if not c.terminated)}]"),
        ]
        cr_reason = None if ready_containers else ("PodCompleted" if terminal else "ContainersNotReady")
        cr_msg = None if ready_containers or terminal else f"containers with unready status: [{' '.join(not_ready)}]"
        # Readiness gates: Ready needs every spec.readinessGates[].conditionType condition to be True
        # (pkg/kubelet/status/generate.go GeneratePodReadyCondition).
        ready, reason, message = ready_containers, cr_reason, cr_msg
        if ready:
            current = {c["type"]: c.get("status") for c in (rt.pod.get("status") or {}).get("conditions") or []}
            missing = []
            for gate in rt.spec.get("readinessGates") or []:
                ctype = gate["conditionType"]
                if ctype not in current:
                    missing.append(f"corresponding condition of pod readiness gate \"{ctype}\" does not exist.")
                elif current[ctype] != "True":
                    missing.append(f"the status of pod readiness gate \"{ctype}\" is not \"True\", but "
                                   f"{current[ctype]}")
            if missing:
                ready, reason, message = False, "ReadinessGatesNotReady", ", ".join(missing)
        conds += [
            self._condition(rt, "Ready", ready, reason, message),
            self._condition(rt, "ContainersReady", ready_containers, cr_reason, cr_msg),
            self._condition(rt, "PodScheduled", True),
        ]
        status: Obj = {
            "phase": rt.phase,
            "conditions": conds,
            "hostIP": self.node.node_ip,
            "hostIPs": [{"ip": self.node.node_ip}],
            "startTime": rt.start_time,
            "containerStatuses": [self._container_status(c) for c in rt.containers],
        }
        if rt.init_containers:
            status["initContainerStatuses"] = [self._container_status(c) for c in rt.init_containers]
        if rt.ip:
            status["podIP"] = rt.ip
            status["podIPs"] = [{"ip": rt.ip}]
        if rt.reason:
            status["reason"] = rt.reason
            status["message"] = rt.message
        return status

    def patch_status(self, rt: PodRuntime) -> None:
        with rt.lock:
            status = self.build_status(rt)
            if status == rt.last_status:
                return
            body = {"metadata": {"uid": rt.uid}, "status": status}
            try:
                self.api.patch(pod_path(rt.namespace, rt.name, "status"), body)
                rt.last_status = status
            except ApiError as exc:
                if exc.status not in (404, 409):
                    log.warning("status of %s: %s", rt.key, exc)

    def sync_status(self, rt: PodRuntime) -> None:
        with rt.lock:
            if rt.netns is not None and not rt.deleting:
                self.patch_status(rt)

    # ---- Run
    def run(self, scheduler: bool) -> None:
        while True:
            try:
                self.register()
                break
            except Exception as exc:
                log.warning("registering %s: %s; retrying", self.node.name, exc)
                time.sleep(1)
        self.responders.start()
        threading.Thread(target=self.heartbeat_loop, daemon=True, name="heartbeat").start()
        if scheduler:
            from localcluster.scheduler import Scheduler

            threading.Thread(target=Scheduler(self.api).run, daemon=True, name="scheduler").start()
        threading.Thread(target=self.watch_loop, daemon=True, name="watch").start()
        log.info("agent for %s running (pod CIDR %s)", self.node.name, self.node.pod_cidr)
        self.stopping.wait()

    def shutdown(self) -> None:
        """Stop every pod sandbox this agent started (the cluster is going down)."""
        self.stopping.set()
        with self.pods_lock:
            runtimes = list(self.pods.values())
        for rt in runtimes:
            self.stop_sandbox(rt, grace=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="localcluster node agent (kubelet stand-in)")
    parser.add_argument("--node", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--prefix", required=True, help="network namespace prefix of this cluster")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--scheduler", action="store_true", help="also bind unscheduled pods to Ready nodes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    node = network.node_net(args.prefix, args.index)
    if node.name != args.node:
        parser.error(f"node {args.node} does not match index {args.index} ({node.name})")
    agent = Agent(ApiClient(args.kubeconfig), node, args.prefix, args.state_dir)

    def on_term(*_: object) -> None:
        agent.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    agent.run(args.scheduler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
