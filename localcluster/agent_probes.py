"""Readiness probes of the node agent, as kubelet's prober runs them (pkg/kubelet/prober, v1.33).

* ``exec``: the command runs in the pod's network namespace (``nsenter --net``) with the container's environment
  and user (``runAsUser``/``runAsGroup``, as the container itself), bounded by ``timeoutSeconds`` (default 1; a
  command still running then is killed and the probe fails, as with ExecProbeTimeout); exit code 0 = success.
* ``tcpSocket``: a TCP connect to ``host`` (default the pod IP) and ``port`` (number or the container's named port)
  from the node's network namespace, as kubelet dials from the node, bounded by ``timeoutSeconds``.
* Timing (``worker.run``/``doProbe``): a probe is tried when the container starts (kubelet's status sync triggers a
  manual run while a container has no result) and then every ``periodSeconds`` (default 10, minimum 1) from there;
  a try is skipped while the container has run less than ``initialDelaySeconds``. So the first real probe comes at
  the first tick at or after the initial delay.
* Results: the container is not ready until ``successThreshold`` (default 1) consecutive successes, and a ready one
  turns not ready after ``failureThreshold`` (default 3) consecutive failures; a restarted container starts over
  not ready (a new container ID resets the worker).

``httpGet`` and ``grpc`` probes are not run: a container with only those is ready while it runs (as before).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from localcluster.agent_containers import ContainerRun
from localcluster.network import NETNS_DIR
from localcluster.responder import run_in_netns

__all__ = ["ReadinessWorker", "probe_kind"]

log = logging.getLogger("localcluster.agent")


def probe_kind(container: dict[str, Any]) -> str | None:
    """``exec`` or ``tcpSocket`` when the container has a readiness probe the agent runs, else None."""
    probe = container.get("readinessProbe") or {}
    return next((k for k in ("exec", "tcpSocket") if probe.get(k)), None)


def _seconds(probe: dict[str, Any], key: str, default: int, minimum: int = 1) -> int:
    value = probe.get(key)
    return max(minimum, int(value)) if value is not None else default


class ReadinessWorker:
    """Probes one run of one container (one container ID) until it stops; sets ``container.probe_ready`` and calls
    `on_change` when readiness flips."""

    def __init__(self, container: ContainerRun, pod_ip: str, node_netns: str,
                 on_change: Callable[[ContainerRun], object]) -> None:
        self.c = container
        self.spec: dict[str, Any] = container.spec["readinessProbe"]
        self.kind = probe_kind(container.spec)
        self.pod_ip = pod_ip
        self.node_netns = node_netns
        self.on_change = on_change
        self.container_id = container.container_id
        self.period = _seconds(self.spec, "periodSeconds", 10)
        self.timeout = _seconds(self.spec, "timeoutSeconds", 1)
        self.initial_delay = _seconds(self.spec, "initialDelaySeconds", 0, minimum=0)
        self.success_threshold = _seconds(self.spec, "successThreshold", 1)
        self.failure_threshold = _seconds(self.spec, "failureThreshold", 3)
        self.stopped = threading.Event()
        self.last: bool | None = None
        self.run_length = 0
        self.started = time.monotonic()
        container.probe_ready = False  # kubelet's initial readiness result: Failure
        self.thread = threading.Thread(target=self.run, daemon=True, name=f"probe-{container.name}")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def current(self) -> bool:
        return not self.stopped.is_set() and self.c.container_id == self.container_id and self.c.running

    def run(self) -> None:
        tick = self.started
        while self.current():
            if time.monotonic() - self.started >= self.initial_delay:
                ok = self.probe()
                if not self.current():
                    return
                self.record(ok)
            tick += self.period
            if self.stopped.wait(max(0.0, tick - time.monotonic())):
                return

    def record(self, ok: bool) -> None:
        """doProbe's threshold logic: the result counts once it repeated `threshold` times in a row."""
        if ok == self.last:
            self.run_length += 1
        else:
            self.last, self.run_length = ok, 1
        if self.run_length < (self.success_threshold if ok else self.failure_threshold):
            return
        if self.c.probe_ready != ok:
            self.c.probe_ready = ok
            self.on_change(self.c)

    def probe(self) -> bool:
        try:
            return self.exec_probe() if self.kind == "exec" else self.tcp_probe()
        except Exception as exc:
            log.warning("readiness probe of %s failed to run: %s", self.c.name, exc)
            return False

    def exec_probe(self) -> bool:
        argv = [str(a) for a in (self.spec["exec"].get("command") or [])]
        if not argv:
            return False
        uid, gid = self.c.run_as()
        if uid is not None:
            argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]
        proc = subprocess.Popen(["nsenter", f"--net={NETNS_DIR}/{self.c.netns}", "--", *argv],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=self.c.env, cwd="/", start_new_session=True)
        try:
            return proc.wait(timeout=self.timeout) == 0
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return False

    def tcp_probe(self) -> bool:
        spec = self.spec["tcpSocket"]
        port = spec.get("port")
        if isinstance(port, str) and not port.isdigit():  # a named port of this container (ResolveContainerPort)
            port = next((p["containerPort"] for p in self.c.spec.get("ports") or [] if p.get("name") == port), None)
            if port is None:
                return False
        host = spec.get("host") or self.pod_ip

        def connect() -> bool:
            try:
                with socket.create_connection((host, int(port)), timeout=self.timeout):
                    return True
            except OSError:
                return False

        return run_in_netns(f"{NETNS_DIR}/{self.node_netns}", connect, name=f"tcp-probe-{self.c.name}")
