"""Probe pods for localcluster tests: a pod whose container runs `nc` against targets and reports in its
termination message, so reachability is measured from inside the cluster, never by entering namespaces."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = ["Kubectl", "Target", "apply", "finished", "make_namespace", "observe_until", "probe", "probe_many",
           "probe_pod", "run_servers", "running_with_ip", "server_pod", "wait_pod"]

T = TypeVar("T")


class Kubectl(Protocol):
    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0) -> str: ...


@dataclass(frozen=True)
class Target:
    ip: str
    port: int
    proto: str = "TCP"

    @property
    def key(self) -> str:
        return f"{self.ip}:{self.port}/{self.proto.lower()}"


def _line(t: Target, timeout: int) -> str:
    if t.proto == "UDP":
        cmd = f"echo probe | nc -u -w {timeout} {t.ip} {t.port}"
    elif t.proto == "SCTP":
        cmd = f"ncat --sctp -w {timeout} {t.ip} {t.port} </dev/null"
    else:
        cmd = f"nc -w {timeout} {t.ip} {t.port} </dev/null"
    # a failed connection is tried once more after a second, as the product's probe script does
    # (netpol_auditor/prober/script.py): a fresh pod's first packets can be lost under load (seen on a loaded CI run:
    # a pod with no policy failed to reach the external host once), while a policy's DROP fails both tries
    return (f'out=$({cmd} 2>/dev/null | head -n1); if [ -z "$out" ]; then sleep 1; '
            f'out=$({cmd} 2>/dev/null | head -n1); fi; if [ -n "$out" ]; then echo "{t.key} OK $out"; '
            f'else echo "{t.key} FAIL"; fi >> /dev/termination-log')


def probe_pod(name: str, namespace: str, targets: list[Target], *, node: str | None = None,
              labels: dict[str, str] | None = None, timeout: int = 2, delay: float = 0) -> dict[str, Any]:
    """A restartPolicy=Never pod that tries each target (after `delay` seconds; a failure once more) and reports per
    line."""
    script = "\n".join([f"sleep {delay}" if delay else ":", *(_line(t, timeout) for t in targets)])
    spec: dict[str, Any] = {"restartPolicy": "Never",
                            "containers": [{"name": "probe", "image": "nicolaka/netshoot",
                                            "command": ["sh", "-c", script]}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {"role": "probe"}},
            "spec": spec}


def apply(k: Kubectl, *objs: dict[str, Any]) -> None:
    k.kubectl("apply", "-f", "-", input="\n".join(json.dumps(o) for o in objs))


def wait_pod(k: Kubectl, namespace: str, name: str, predicate: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        out = k.kubectl("get", "pod", "-n", namespace, name, "-o", "json", check=False)
        if out:
            pod = json.loads(out)
            if predicate(pod):
                return pod
        time.sleep(0.2)
    raise TimeoutError(f"pod {namespace}/{name} never matched; last status: {json.dumps(pod.get('status'))}")


def finished(pod: dict[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def running_with_ip(pod: dict[str, Any]) -> bool:
    st = pod.get("status", {})
    return st.get("phase") == "Running" and bool(st.get("podIP"))


def probe(k: Kubectl, namespace: str, name: str, targets: list[Target], **kw: Any) -> dict[str, str | None]:
    """Run a probe pod to completion; {target key: identity line answered, or None if it failed}."""
    apply(k, probe_pod(name, namespace, targets, **kw))
    pod = wait_pod(k, namespace, name, finished, timeout=30 + 3 * len(targets) * kw.get("timeout", 2))
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    results: dict[str, str | None] = {}
    for line in (term.get("message") or "").splitlines():
        key, verdict, *rest = line.split(" ", 2)
        results[key] = rest[0] if verdict == "OK" and rest else None
    k.kubectl("delete", "pod", "-n", namespace, name, "--wait=false")
    missing = [t.key for t in targets if t.key not in results]
    assert not missing, f"probe {name} reported nothing for {missing}: {term}"
    return results


def make_namespace(k: Kubectl, name: str, labels: dict[str, str] | None = None) -> str:
    """Create a namespace and wait for its `default` ServiceAccount (KCM creates it; pods are admitted after)."""
    apply(k, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if k.kubectl("get", "serviceaccount", "-n", name, "default", "-o", "name", check=False).strip():
            return name
        time.sleep(0.2)
    raise TimeoutError(f"namespace {name}: no default ServiceAccount")


def server_pod(name: str, namespace: str, ports: list[dict[str, Any]], *, node: str | None = None,
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod whose only container has no command: the agent answers on its declared ports."""
    spec: dict[str, Any] = {"containers": [{"name": "srv", "image": "registry.k8s.io/e2e-test-images/agnhost:2.47",
                                            "ports": ports}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}}, "spec": spec}


def run_servers(k: Kubectl, namespace: str, *pods: dict[str, Any]) -> dict[str, str]:
    """Create server pods, wait until Running with IPs; {name: podIP}."""
    apply(k, *pods)
    return {p["metadata"]["name"]: wait_pod(k, namespace, p["metadata"]["name"], running_with_ip)["status"]["podIP"]
            for p in pods}


def probe_many(k: Kubectl, namespace: str, probes: dict[str, dict[str, Any]], targets: list[Target]
               ) -> dict[str, dict[str, str | None]]:
    """Run several probe pods at once ({name: probe_pod kwargs}); {probe name: {target key: answer or None}}."""
    apply(k, *(probe_pod(name, namespace, targets, **kw) for name, kw in probes.items()))
    waits = max((kw.get("delay", 0) for kw in probes.values()), default=0)
    out: dict[str, dict[str, str | None]] = {}
    for name in probes:
        pod = wait_pod(k, namespace, name, finished, timeout=30 + waits + 3 * len(targets) * 2)
        term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        res: dict[str, str | None] = {}
        for line in (term.get("message") or "").splitlines():
            key, verdict, *rest = line.split(" ", 2)
            res[key] = rest[0] if verdict == "OK" and rest else None
        out[name] = res
    k.kubectl("delete", "pod", "-n", namespace, *probes, "--wait=false")
    return out


def observe_until(observe: Callable[[], T], expected: T, tries: int = 3) -> T:
    """Observe until the expected table shows, at most ``tries`` times, as upstream e2e re-probes its truth tables
    (test/e2e/network/netpol/test_helper.go, ValidateOrFail): right after a fault the enforcer may still be
    reprogramming the node, and after kube-router is stopped on a node, fresh pods there can see routed connections
    (to the other node, to the external host) time out for seconds although no rule is left — reproduced with plain
    probe pods, 3 of 56 after `fault set-none`, none of 600 where kube-router never ran. A table that shows once is
    what the node's rules do."""
    got = observe()
    for _ in range(tries - 1):
        if got == expected:
            break
        got = observe()
    return got

