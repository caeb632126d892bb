"""Containers of a pod, run for real inside the pod's network namespace with the host's tools.

There are no images: a container with a `command` (or `args`) runs that argv (``sh``, ``nc``, ``socat``,
``python3``… from the host) in the pod's netns; a container with neither is a *responder* container whose declared
ports the agent answers (see responder.py) and which runs until the pod stops.

``terminationMessagePath`` (default ``/dev/termination-log``) is made real per container: ``ip netns exec`` gives the
process a private mount namespace, in which ``/dev`` is overlaid (lowerdir = the host's /dev, upperdir = a
per-container directory holding the termination-log file), so whatever the process writes there lands in our file and
becomes ``state.terminated.message``. Paths outside ``/dev`` are not supported (the message is then empty).
``securityContext.runAsUser``/``runAsGroup`` (container, else pod level) are applied with ``setpriv``.

Images are never pulled, with one exception that makes a real kubelet fail: an image whose registry host is under
``.invalid`` (RFC 2606: reserved, can never resolve), e.g. ``registry.invalid/netshoot:v1``. Its container never
starts: ``state.waiting.reason: ErrImagePull`` with containerd's resolve error (`image_pull_error`); the agent then
backs off as kubelet's image manager does (``ImagePullBackOff``, see agent.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ContainerRun", "build_env", "expand", "image_pull_error", "image_reference", "now"]

# Kubernetes caps the termination message at 4096 bytes (and the fallback log tail at 80 lines).
# https://kubernetes.io/docs/tasks/debug/debug-application/determine-reason-pod-failure/
MAX_MESSAGE = 4096
FALLBACK_LINES = 80
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

LAUNCH = r"""
upper=$1 work=$2; shift 2
if [ -n "$upper" ]; then
  mount -t overlay overlay -o "lowerdir=/dev,upperdir=$upper,workdir=$work" /dev || exit 126
  mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts 2>/dev/null
  mount -t tmpfs -o mode=1777 tmpfs /dev/shm 2>/dev/null
fi
exec "$@"
"""


def image_reference(image: str) -> tuple[str, str, str]:
    """(registry host, repository path, tag or digest) of an image reference, with kubelet's defaults: docker.io
    when the first path component is no host (no ``.``/``:``, not ``localhost``), tag ``latest`` when there is neither
    tag nor digest (pkg/kubelet/images ``applyDefaultImageTag``)."""
    name, sep, digest = image.partition("@")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = "docker.io", name
    repo, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
    if sep:
        return host, repo if colon else path, digest
    return host, repo, tag if colon else "latest"


def image_pull_error(image: str) -> str | None:
    """The pull error a real node gets for `image`, or None when the agent "has" it (every other image).

    Only a registry host under ``.invalid`` fails: what containerd's resolver returns for it, wrapped by CRI's gRPC
    status, is what kubelet puts in ``state.waiting.message`` (pkg/kubelet/images ``evalCRIPullErr`` falls back to
    ``err.Error()`` with reason ErrImagePull)."""
    host, repo, ref = image_reference(image)
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if not (hostname == "invalid" or hostname.endswith(".invalid")):
        return None
    full = f"{host}/{repo}" + (f"@{ref}" if ref.startswith("sha256:") else f":{ref}")
    return (f'rpc error: code = Unknown desc = failed to pull and unpack image "{full}": failed to resolve reference '
            f'"{full}": failed to do request: Head "https://{host}/v2/{repo}/manifests/{ref}": dial tcp: lookup '
            f"{hostname}: no such host")


def now() -> str:
    """RFC 3339 time, second precision, as the API server stores metav1.Time."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion in command/args/env values: defined vars expand, $$ escapes, others stay."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, text)


def _field_ref(pod: dict[str, Any], path: str, pod_ip: str, host_ip: str) -> str:
    meta = pod["metadata"]
    simple: dict[str, str] = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    return ""


def build_env(pod: dict[str, Any], container: dict[str, Any], pod_ip: str, host_ip: str) -> dict[str, str]:
    """The container's environment: PATH/HOSTNAME/HOME plus `env` (value and fieldRef; others are empty)."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": pod["metadata"]["name"], "HOME": "/root"}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = expand(var.get("value") or "", env)
        elif (var.get("valueFrom") or {}).get("fieldRef"):
            env[var["name"]] = _field_ref(pod, var["valueFrom"]["fieldRef"]["fieldPath"], pod_ip, host_ip)
        else:
            env[var["name"]] = ""
    return env


@dataclass
class ContainerRun:
    """One container's process and its Kubernetes-visible state (state/lastState/restartCount)."""

    spec: dict[str, Any]
    pod_spec: dict[str, Any]
    netns: str
    dir: Path
    env: dict[str, str]
    on_exit: Callable[[ContainerRun], None]
    proc: subprocess.Popen[bytes] | None = None
    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    container_id: str = ""
    stopping: bool = False
    pull_failures: int = 0  # consecutive failed pulls of its image (kubelet's image back-off counts them)
    probe_ready: bool | None = None  # its readiness probe's verdict (agent_probes.py); None: it has no probe run

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def argv(self) -> list[str] | None:
        """The argv to run, or None for a responder container (no command, no args)."""
        cmd = list(self.spec.get("command") or [])
        args = list(self.spec.get("args") or [])
        if not cmd and not args:
            return None
        return [expand(a, self.env) for a in cmd + args]

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def ready(self) -> bool:
        """containerStatuses[].ready: running and, with a readiness probe, that probe passed."""
        return self.running and self.probe_ready is not False

    @property
    def image_failed(self) -> bool:
        """Waiting because its image cannot be pulled (ErrImagePull / ImagePullBackOff)."""
        return self.state.get("waiting", {}).get("reason") in ("ErrImagePull", "ImagePullBackOff")

    @property
    def terminated(self) -> dict[str, Any] | None:
        t = self.state.get("terminated")
        return t if isinstance(t, dict) else None

    def _security(self, key: str) -> Any:
        own = (self.spec.get("securityContext") or {}).get(key)
        return own if own is not None else (self.pod_spec.get("securityContext") or {}).get(key)

    def run_as(self) -> tuple[int | None, int | None]:
        """(uid, gid) from securityContext.runAsUser/runAsGroup (container, else pod); gid defaults to the uid."""
        uid, gid = self._security("runAsUser"), self._security("runAsGroup")
        if uid is None:
            return None, None
        return int(uid), int(uid if gid is None else gid)

    def _termination_file(self) -> tuple[Path | None, list[str]]:
        path = self.spec.get("terminationMessagePath") or "/dev/termination-log"
        upper, work = self.dir / "upper", self.dir / "work"
        if os.path.dirname(path) != "/dev":
            return None, ["", ""]
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        f = upper / os.path.basename(path)
        f.write_bytes(b"")
        f.chmod(0o666)
        return f, [str(upper), str(work)]

    @property
    def log_path(self) -> Path:
        return self.dir / "log"

    def start(self) -> None:
        """Pull its image, then start the process (or, for a responder container, just mark it running). A failed
        pull leaves it waiting with reason ErrImagePull (the caller schedules the back-off and the next pull)."""
        error = image_pull_error(str(self.spec.get("image") or ""))
        if error is not None:
            self.pull_failures += 1
            self.state = {"waiting": {"reason": "ErrImagePull", "message": error}}
            return
        self.pull_failures = 0
        self.container_id = f"localcluster://{uuid.uuid4().hex}"
        self.stopping = False
        argv = self.argv
        if argv is None:
            self.state = {"running": {"startedAt": now()}}
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        _, overlay = self._termination_file()
        uid, gid = self.run_as()
        if uid is not None:
            argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]
        workdir = self.spec.get("workingDir") or "/"
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    ["ip", "netns", "exec", self.netns, "sh", "-c", LAUNCH, "sh", *overlay, *argv],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                    cwd=workdir if os.path.isdir(workdir) else "/", start_new_session=True,
                )
            except OSError as exc:
                self.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(exc),
                                             "startedAt": now(), "finishedAt": now()}}
                self.on_exit(self)
                return
        self.state = {"running": {"startedAt": now()}}
        threading.Thread(target=self._wait, args=(self.proc,), daemon=True, name=f"wait-{self.name}").start()

    def _wait(self, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        if proc is not self.proc:
            return
        exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128+N, as container runtimes report
        started = self.state.get("running", {}).get("startedAt", now())
        term: dict[str, Any] = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                "startedAt": started, "finishedAt": now(), "containerID": self.container_id}
        message = self._message(exit_code)
        if message:
            term["message"] = message
        self.state = {"terminated": term}
        self.on_exit(self)

    def _message(self, exit_code: int) -> str:
        f = self.dir / "upper" / os.path.basename(self.spec.get("terminationMessagePath") or "/dev/termination-log")
        text = ""
        with contextlib.suppress(OSError):
            text = f.read_bytes()[:MAX_MESSAGE].decode(errors="replace")
        if not text and exit_code != 0 and self.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            with contextlib.suppress(OSError):
                lines = self.log_path.read_bytes().decode(errors="replace").splitlines()[-FALLBACK_LINES:]
                text = "\n".join(lines)[-MAX_MESSAGE:]
        return text

    def stop(self, grace: float) -> None:
        """SIGTERM the container's process group, SIGKILL after `grace` seconds (kubelet's kill sequence)."""
        self.stopping = True
        proc = self.proc
        if proc is None or proc.poll() is not None:
            if self.argv is None and self.running:
                started = self.state["running"]["startedAt"]
                self.state = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started,
                                             "finishedAt": now(), "containerID": self.container_id}}
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + max(grace, 0)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # give the waiter thread its turn so the terminated state is recorded
        for _ in range(100):
            if self.terminated:
                break
            time.sleep(0.01)
