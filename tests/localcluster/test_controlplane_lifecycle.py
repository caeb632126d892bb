"""``up`` is idempotent and recovers from a crash; ``down`` leaves nothing behind. Uses its own cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster import cluster as lc
from localcluster import controlplane

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NODES = int(os.environ.get("LOCALCLUSTER_TEST_NODES", "2"))
WORKLOAD_CONTAINERS = (
    ("server", "{name: s, image: server, ports: [{containerPort: 80}, {containerPort: 53, protocol: UDP}]}"),
    ("sleeper", "{name: c, image: tool, command: [sh, -c, 'echo started > /dev/termination-log; sleep 600']}"),
)


def tmpdir(state: Path) -> Path:
    """A private TMPDIR for the cluster's processes, so temporary files they leave behind can be seen."""
    return state.with_name(state.name + "-tmp")


def cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user runs it."""
    tmpdir(state).mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "localcluster", "--state", str(state), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmpdir(state))})


def recorded_pids(state: Path) -> dict[str, int]:
    out = {}
    for name in controlplane.recorded_processes(state):
        rec = controlplane.read_pid(state, name)
        assert rec is not None and isinstance(rec["pid"], int)
        out[name] = rec["pid"]
    return out


def running(pid: int) -> bool:
    """Is ``pid`` a live process (a zombie waiting for init to reap it is not)?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.fixture
def state() -> Iterator[Path]:
    path = Path("/tmp") / f"lc-test-{os.getpid()}-lifecycle"
    yield path
    lc.down(path)
    shutil.rmtree(tmpdir(path), ignore_errors=True)


def test_up_twice_crash_recovery_and_clean_down(state: Path) -> None:
    first = cli(state, "up", "--nodes", str(NODES), "--api-port", "0")
    assert first.returncode == 0, first.stderr
    assert "export KUBECONFIG=" in first.stdout
    status = json.loads(cli(state, "status", "--json").stdout)
    assert status["running"] is True
    assert Path(str(status["kubeconfig"])) == state / "admin.kubeconfig"
    pids = recorded_pids(state)
    assert {"etcd", "kube-apiserver", "kube-controller-manager"} <= set(pids)

    # `up` again with the same settings reuses the running cluster: same processes, nothing restarted.
    again = cli(state, "up", "--nodes", str(NODES), "--api-port", "0")
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout
    assert recorded_pids(state) == pids

    if NODES >= 2:
        # Other node settings restart only the nodes; the Node objects follow (none is left behind looking Ready).
        fewer = cli(state, "up", "--nodes", str(NODES - 1), "--api-port", "0")
        assert fewer.returncode == 0, fewer.stderr
        cp_names = ("etcd", "kube-apiserver", "kube-controller-manager")
        assert {n: p for n, p in recorded_pids(state).items() if n in cp_names} == {n: pids[n] for n in cp_names}
        kubeconfig = f"--kubeconfig={state / 'admin.kubeconfig'}"
        nodes = json.loads(subprocess.run(["kubectl", kubeconfig, "get", "nodes", "-o", "json"], capture_output=True,
                                          text=True, check=True).stdout)["items"]
        assert len(nodes) == NODES - 1
        back = cli(state, "up", "--nodes", str(NODES), "--api-port", "0")
        assert back.returncode == 0, back.stderr
        pids = recorded_pids(state)

    # Crash: kill -9 every process of the cluster. `status` notices; `up` cleans the leftovers and starts afresh.
    crashed = lc.leftovers(state)["processes"]
    assert {str(p) for p in pids.values()} <= set(crashed)
    for pid in crashed:
        os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.5)
    assert cli(state, "status").returncode == 1
    start = time.monotonic()
    recovered = cli(state, "up", "--nodes", str(NODES), "--api-port", "0")
    print(f"up after a crash took {time.monotonic() - start:.1f} s")
    assert recovered.returncode == 0, recovered.stderr
    new_pids = recorded_pids(state)
    assert not set(new_pids.values()) & set(pids.values())
    assert all(controlplane.process_alive(state, n) for n in new_pids)
    assert json.loads(cli(state, "status", "--json").stdout)["running"] is True

    # Workloads running when `down` comes: a responder pod (a listener per declared port) and a command
    # container (a real process in the pod's namespace) on every node; `down` must take all of it away.
    kubeconfig = f"--kubeconfig={state / 'admin.kubeconfig'}"
    pods = "\n---\n".join(
        f"""apiVersion: v1
kind: Pod
metadata: {{name: {kind}-{node}, namespace: default}}
spec:
  nodeName: node-{node}
  containers: [{spec}]"""
        for node in range(1, NODES + 1)
        for kind, spec in WORKLOAD_CONTAINERS)
    deadline = time.monotonic() + 60
    while True:  # the serviceaccount controller creates `default`'s ServiceAccount a moment after the restart
        applied = subprocess.run(["kubectl", kubeconfig, "apply", "-f", "-"], input=pods, capture_output=True,
                                 text=True)
        if applied.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert applied.returncode == 0, applied.stderr

    def phases() -> set[str]:
        got = json.loads(subprocess.run(["kubectl", kubeconfig, "get", "pods", "-n", "default", "-o", "json"],
                                        capture_output=True, text=True, check=True).stdout)["items"]
        return {p["status"].get("phase", "") for p in got} if len(got) == 2 * NODES else set()

    deadline = time.monotonic() + 60
    while phases() != {"Running"} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert phases() == {"Running"}
    assert len(lc.leftovers(state)["netns"]) > NODES, "the pods' network namespaces exist before `down`"

    down = cli(state, "down")
    assert down.returncode == 0, down.stderr
    assert lc.leftovers(state) == {"processes": [], "netns": [], "mounts": [], "dirs": []}
    assert sorted(p.name for p in tmpdir(state).iterdir()) == [], "temporary files left behind"
    assert not [pid for pid in new_pids.values() if running(pid)]
    # `down` twice is harmless.
    assert cli(state, "down").returncode == 0
