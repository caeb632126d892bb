"""The operator under the churn soak (bench/soak.py), read from outside only: its process (RSS and CPU time from
/proc), its /metrics, its log (completed cycles, event-loop stalls, errors) and the mismatch Events it posts."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from soak_churn import PREFIX, core_api

__all__ = ["DetectedCounter", "MismatchEvents", "OperatorUnderTest", "by_label", "free_port", "histogram_quantile",
           "loop_lag", "proc_stats", "total"]

_Watch: Any = watch.Watch  # the client's watch is untyped
_CYCLE = re.compile(r"probe cycle (\d+) complete: coverage ([\d.]+) \((\d+) paths judged, (\d+) inconclusive\), "
                    r"(\d+) current mismatches")
_LOOP_HELD = re.compile(r"the event loop was held for ([\d.]+)s")
_RUN_STARTED = re.compile(r"probe run \S+ started")
_MISMATCH = re.compile(r"^(?P<src>\S+) → (?P<dst>\S+):(?P<port>\S+) (?P<result>[^;]+); (?P<why>.*) "
                       r"\(probed from node (?P<src_node>\S+) to node (?P<dst_node>\S+)\)$")
_POLICIES = re.compile(r"policy (?P<names>.+) predicts")


def free_port() -> int:
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

    def __init__(self, kubeconfig: Path, log: Path, args: Sequence[str], cwd: Path) -> None:
        """``python -m netpol_auditor.controller --standalone`` with local endpoints, then ``args``."""
        self.metrics_port = free_port()
        argv = [
            sys.executable, "-m", "netpol_auditor.controller", "--kubeconfig", str(kubeconfig), "--standalone",
            "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port),
            "--liveness", f"http://127.0.0.1:{free_port()}/healthz", *args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_AUDITOR_")}
        self.log = log
        self._log_file = open(log, "ab")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd)
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
