"""What probing found, as PolicyReports (wgpolicyk8s.io/v1alpha2: the format Kyverno writes and Policy Reporter
and its UI read), one per namespace, named ``netpol-auditor``:

- ``fail`` (severity high): a current mismatch, on the report of each NetworkPolicy's namespace it implicates (or
  of the destination's namespace when no policy isolates the path), with the example pods, port and nodes;
- ``skip``: a path the prober could not check this cycle, with the reason (inconclusive is never "pass");
- ``pass``: a NetworkPolicy that probes confirmed enforced.

Reports hold at most `MAX_RESULTS` results (failures first); what is left out is counted in a ``warn`` result. The
builder is pure; `PolicyReportWriter` writes only reports whose content changed and deletes its own reports from
namespaces that no longer have findings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from netpol_auditor.cluster_policy import ClusterPolicyKind
from netpol_auditor.engine import PolicyKey
from netpol_auditor.prober.compare import Mismatch, MismatchKind, is_cluster_policy_key
from netpol_auditor.prober.plan import PathKey

__all__ = ["GROUP", "MAX_RESULTS", "PLURAL", "REPORT_NAME", "VERSION", "Finding", "PolicyReportWriter",
           "build_reports", "findings"]

logger = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "wgpolicyk8s.io", "v1alpha2", "policyreports"
REPORT_NAME = "netpol-auditor"
SOURCE = "netpol-auditor"
CATEGORY = "NetworkPolicy enforcement"
#: results per report: a report is one etcd object (at most 1.5 MiB), and Policy Reporter lists them whole
MAX_RESULTS = 200
_ORDER = {"fail": 0, "skip": 1, "pass": 2}


@dataclass(frozen=True)
class Finding:
    """One result of one namespace's report."""

    namespace: str
    result: str  # pass | fail | skip
    policy: str
    rule: str
    message: str
    severity: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)
    resources: tuple[Mapping[str, str], ...] = ()


def _policy_ref(key: PolicyKey, uids: Mapping[PolicyKey, str]) -> dict[str, str]:
    if is_cluster_policy_key(key):
        ref = {"apiVersion": ClusterPolicyKind(key[0]).api_version, "kind": key[0], "name": key[1]}
    else:
        ref = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "namespace": key[0], "name": key[1]}
    if uids.get(key):
        ref["uid"] = uids[key]
    return ref


def findings(mismatches: Iterable[Mismatch], enforced: Mapping[PolicyKey, int],
             inconclusive: Iterable[tuple[PathKey, str, str, str]], uids: Mapping[PolicyKey, str]) -> list[Finding]:
    """Findings from the comparator's current mismatches, its per-policy verdicts, and the cycle's inconclusive
    paths given as (path, reason, source namespace, destination namespace)."""
    out: list[Finding] = []
    for m in mismatches:
        props = {"source": str(m.source), "destination": str(m.destination), "port": str(m.key.port),
                 "sourceNode": m.key.src_node, "destinationNode": m.key.dst_node, "mismatch": m.kind.value}
        rule = "not-enforced" if m.kind is MismatchKind.UNEXPECTEDLY_ALLOWED else "allowed-traffic-dropped"
        if m.policies:
            # a cluster policy has no namespace: its finding goes to the report of the destination's
            out += [Finding(m.destination.namespace, "fail", f"{first}/{name}", rule, m.describe(), "high", props,
                            (_policy_ref((first, name), uids),))
                    if is_cluster_policy_key((first, name))
                    else Finding(first, "fail", name, rule, m.describe(), "high", props,
                                 (_policy_ref((first, name), uids),))
                    for first, name in m.policies]
        else:
            out.append(Finding(m.destination.namespace, "fail", "no-isolating-policy", rule, m.describe(), "high",
                               props))
    for key, value in sorted(enforced.items()):
        if value == 1:
            out.append(Finding(key[0], "pass", key[1], "enforced", "probes confirmed this NetworkPolicy enforced",
                               resources=(_policy_ref(key, uids),)))
    for path, reason, src_ns, dst_ns in inconclusive:
        message = (f"{src_ns} → {dst_ns} port {path.port} (from node {path.src_node} to node {path.dst_node}) "
                   f"could not be checked this cycle: {reason}")
        out.append(Finding(dst_ns, "skip", "probe", reason, message,
                           properties={"sourceNamespace": src_ns, "port": str(path.port), "reason": reason}))
    return out


def build_reports(found: Iterable[Finding], now: float | None = None) -> dict[str, dict[str, Any]]:
    """One PolicyReport body per namespace with findings."""
    seconds = int(time.time() if now is None else now)
    by_namespace: dict[str, list[Finding]] = defaultdict(list)
    for f in found:
        by_namespace[f.namespace].append(f)
    reports = {}
    for namespace, items in sorted(by_namespace.items()):
        items.sort(key=lambda f: (_ORDER[f.result], f.policy, f.rule, f.message))
        kept, left_out = items[:MAX_RESULTS], items[MAX_RESULTS:]
        results = [_result(f, seconds) for f in kept]
        if left_out:
            results.append({"source": SOURCE, "policy": "report", "rule": "truncated", "result": "warn",
                            "category": CATEGORY, "timestamp": {"seconds": seconds, "nanos": 0},
                            "message": f"{len(left_out)} more results left out (at most {MAX_RESULTS} a report); "
                                       "the operator's metrics count them all"})
        summary = {r: sum(1 for x in results if x["result"] == r) for r in ("pass", "fail", "warn", "error", "skip")}
        reports[namespace] = {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "PolicyReport",
            "metadata": {"name": REPORT_NAME, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "netpol-auditor"}},
            "scope": {"apiVersion": "v1", "kind": "Namespace", "name": namespace},
            "summary": summary, "results": results,
        }
    return reports


def _result(f: Finding, seconds: int) -> dict[str, Any]:
    result: dict[str, Any] = {"source": SOURCE, "policy": f.policy, "rule": f.rule, "result": f.result,
                              "category": CATEGORY, "message": f.message, "scored": f.result != "skip",
                              "timestamp": {"seconds": seconds, "nanos": 0}}
    if f.severity:
        result["severity"] = f.severity
    if f.properties:
        result["properties"] = dict(f.properties)
    if f.resources:
        result["resources"] = [dict(r) for r in f.resources]
    return result


def _content(body: Mapping[str, Any]) -> Any:
    """What decides whether a report must be written again: its results without their timestamps."""
    return [{k: v for k, v in r.items() if k != "timestamp"} for r in body["results"]]


class PolicyReportWriter:
    """Keeps the cluster's ``netpol-auditor`` PolicyReports equal to the latest submitted set, off the event loop.
    Writing is best effort: a missing CRD or a refused request is logged (once per kind of failure) and retried
    with the next submission, never raised."""

    def __init__(self, api_client: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._api_client = api_client
        self._wanted: dict[str, dict[str, Any]] = {}
        self._written: dict[str, Any] = {}  # namespace -> content last written
        self._changed = asyncio.Event()
        self._warned: set[str] = set()
        self.writes = 0
        self.failures = 0

    def submit(self, reports: Mapping[str, dict[str, Any]]) -> None:
        self._wanted = dict(reports)
        if {ns: _content(b) for ns, b in self._wanted.items()} != self._written:
            self._changed.set()

    async def run(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            changed = asyncio.ensure_future(self._changed.wait())
            stopper = asyncio.ensure_future(stopped.wait())
            await asyncio.wait({changed, stopper}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            stopper.cancel()
            if stopped.is_set():
                return
            self._changed.clear()
            await asyncio.to_thread(self.sync)

    def sync(self) -> None:
        """Write what changed, delete what is gone (blocking)."""
        wanted = dict(self._wanted)
        for namespace, body in wanted.items():
            content = _content(body)
            if self._written.get(namespace) == content:
                continue
            if self._call(self._put, namespace, body):
                self._written[namespace] = content
        for namespace in sorted(set(self._written) - set(wanted)):
            if self._call(self._delete, namespace):
                del self._written[namespace]

    def _call(self, fn: Callable[..., None], *args: Any) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            fn(*args)
            self.writes += 1
            return True
        except ApiException as exc:
            self.failures += 1
            what = ("the PolicyReport CRD (wgpolicyk8s.io/v1alpha2) is not installed" if exc.status == 404
                    else f"PolicyReport write refused ({exc.status} {exc.reason})")
            if what not in self._warned:
                self._warned.add(what)
                logger.warning("%s: PolicyReports are not written (retried with the next cycle)", what)
        except Exception as exc:  # a report is best effort: never let it stop the prober
            self.failures += 1
            logger.warning("could not write the PolicyReport of namespace %s: %s", args[0], exc)
        return False

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self._api_client)

    def _put(self, namespace: str, body: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        api = self._custom()
        try:
            current = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, REPORT_NAME)
        except ApiException as exc:
            if exc.status != 404 or not self._crd_served(api):
                raise
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            return
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
        api.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, REPORT_NAME, body)

    def _crd_served(self, api: Any) -> bool:
        """A 404 on get means "no such report" only where the resource exists at all."""
        from kubernetes.client.exceptions import ApiException

        try:
            api.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _delete(self, namespace: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._custom().delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, REPORT_NAME)
        except ApiException as exc:
            if exc.status != 404:
                raise
