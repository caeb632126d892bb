"""``make demo`` for real: ``python -m localcluster.demo --check`` on its own local cluster, and what it shows.

The demo is the product's front door, so the test reads its terminal output the way a user does: the predicted
matrix, the metrics address, the Flannel-phase mismatches and per-policy ``enforced`` 0, the kube-router phase with
no mismatch and every policy enforced, progress lines never silent for long, and nothing left behind (no cluster,
no operator process). Ctrl-C in the middle also cleans up.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster import cluster as lc

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
STAMP = re.compile(r"^\[\s*(\d+\.\d)s\] ?(.*)$")
POLICIES = {"shop/default-deny-ingress", "shop/backend-egress-dns-only", "shop/web", "shop/api", "shop/db",
            "shop/allow-monitoring"}


def demo_command(state: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "localcluster.demo", "--state", str(state), *extra]


def sections(output: str) -> dict[str, list[str]]:
    """The output split at the ``== N/6`` step headers: {"1": lines, ..., "6": lines}."""
    out: dict[str, list[str]] = {"0": []}
    current = "0"
    for line in output.splitlines():
        m = STAMP.match(line)
        if m and m.group(2).startswith("== "):
            current = m.group(2)[3]
            out[current] = []
        out[current].append(line)
    return out


def block_after(lines: list[str], title: str) -> list[dict[str, str]]:
    """Rows of the table printed right after the line containing ``title``, as {column: cell} (blank cells "")."""
    start = next(i for i, line in enumerate(lines) if title in line)
    table = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        table.append(line[4:])
    header, dashes, body = table[0], table[1], table[2:]
    spans, col = [], 0
    for width in (len(d) for d in dashes.split("  ")):
        spans.append((col, col + width))
        col += width + 2
    names = [header[a:b].strip() for a, b in spans]
    return [{n: row[a:b].strip() for n, (a, b) in zip(names, spans, strict=True)} for row in body]


def matrix(lines: list[str], port: str) -> dict[tuple[str, str], str]:
    """The analyze table of one port: (from, to) -> mark."""
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{port}:"))
    header = lines[start + 1].split()
    cells = {}
    for line in lines[start + 2:]:
        parts = line.split()
        if not line.startswith("    ") or len(parts) != len(header):
            break
        for dst, mark in zip(header[1:], parts[1:], strict=True):
            cells[(parts[0], dst)] = mark
    return cells


def assert_nothing_left(state: Path, operator_pid: int | None) -> None:
    left = lc.leftovers(state)
    assert not any(left.values()), f"the demo left these behind: {left}"
    if operator_pid is not None:
        assert not Path(f"/proc/{operator_pid}").exists() or "netpol-auditor" not in Path(
            f"/proc/{operator_pid}/cmdline").read_text(errors="replace"), "the operator is still running"


def operator_pid(output: str) -> int | None:
    m = re.search(r"operator pid (\d+)", output)
    return int(m.group(1)) if m else None


@pytest.fixture
def state() -> Iterator[Path]:
    """This session's demo state directory; demo clusters of test sessions that died are removed first."""
    for old in Path("/tmp").glob("lc-demo-test-*"):
        pid = old.name.removeprefix("lc-demo-test-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            lc.down(old)
    path = Path("/tmp") / f"lc-demo-test-{os.getpid()}"
    yield path
    lc.down(path)


def test_demo_shows_flannel_mismatches_then_enforcement(state: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run(demo_command(state, "--check", "--monitoring"), cwd=ROOT, capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)
    took = time.monotonic() - started
    output = proc.stdout + proc.stderr
    print(output)  # shown by pytest when the test fails
    assert proc.returncode == 0, output[-3000:]
    steps = sections(proc.stdout)
    assert set(steps) >= {"1", "2", "3", "4", "5", "6"}, list(steps)

    # progress: every line is stamped, and no wait is silent for more than a few seconds
    stamped = [(float(m.group(1)), line) for line in proc.stdout.splitlines() if (m := STAMP.match(line))]
    gap, before, after = max((b[0] - a[0], a[1], b[1]) for a, b in itertools.pairwise(stamped))
    assert gap < 10, f"a silent wait of {gap:.1f} s between\n{before}\n{after}"
    assert took < 600, f"the demo took {took:.0f} s"

    # 1: Flannel mode
    assert any('{"node-1": "none", "node-2": "none"}' in line for line in steps["1"]), steps["1"]

    # 3: the predicted matrix (netpol-auditor analyze), per port, upstream truth-table style
    web = matrix(steps["3"], "80/TCP")
    assert web[("outside/client", "shop/web")] == "."  # web: HTTP from anywhere
    assert web[("outside/client", "shop/db")] == "X"  # default deny
    db = matrix(steps["3"], "5432/TCP")
    assert db[("shop/api", "shop/db")] == "." and db[("shop/web", "shop/db")] == "X"
    scrape = matrix(steps["3"], "9090/TCP")
    assert scrape[("monitoring/prometheus", "shop/db")] == "." and scrape[("outside/client", "shop/db")] == "X"

    # 4: the operator's /metrics address, mismatches on what the policies deny, every policy violated, Events
    assert re.search(r"metrics: http://127\.0\.0\.1:\d+/metrics", "\n".join(steps["4"]))
    mismatches = block_after(steps["4"], "mismatches (netpol_auditor_mismatches)")
    # the outside client reaches db and api although only web admits it
    assert {"outside -> shop", "shop -> shop"} <= {r["source ns -> destination ns"] for r in mismatches}, mismatches
    assert {r["kind"] for r in mismatches} == {"unexpectedly_allowed"}, mismatches
    enforced = {r["policy"]: r["enforced"] for r in block_after(steps["4"], "per-policy enforcement")}
    assert enforced == dict.fromkeys(POLICIES, "0"), enforced
    features = {r["feature"]: r for r in block_after(steps["4"], "CNI features")}
    assert features["ingress"]["node-1"] == features["ingress"]["node-2"] == "0", features
    assert features["egress"]["node-1"] == "0", features  # the egress-restricted pods (api, db) run on node-1
    assert any("PolicyNotEnforced on NetworkPolicy shop/" in line for line in steps["4"])
    assert any("   ok: each of the" in line for line in steps["4"]), steps["4"]
    # --monitoring: the chart's enforcement alerts, evaluated by Prometheus, sent by Alertmanager to the receiver
    alerts = {(r["alert"], r["state"]) for r in block_after(steps["4"], "alerts received from Alertmanager")}
    assert {("NetpolAuditorCNINotEnforcing", "firing"), ("NetpolAuditorPoliciesNotEnforced", "firing")} <= alerts
    assert not any("FAILED" in line for line in proc.stdout.splitlines())

    # 5: kube-router everywhere: no mismatch, every policy enforced, the mismatches resolved
    assert any("mismatches (netpol_auditor_mismatches): 0 class pairs" in line for line in steps["5"]), steps["5"]
    enforced = {r["policy"]: r["enforced"] for r in block_after(steps["5"], "per-policy enforcement")}
    assert enforced == dict.fromkeys(POLICIES, "1"), enforced
    features = {r["feature"]: r for r in block_after(steps["5"], "CNI features")}
    assert features["ingress"]["node-1"] == features["ingress"]["node-2"] == "1", features
    assert features["egress"]["node-1"] == "1", features
    assert any("MismatchResolved on NetworkPolicy shop/" in line for line in steps["5"])
    alerts = {(r["alert"], r["state"]) for r in block_after(steps["5"], "alerts received from Alertmanager")
              if r["alert"] in ("NetpolAuditorCNINotEnforcing", "NetpolAuditorPoliciesNotEnforced")}
    assert alerts == {("NetpolAuditorCNINotEnforcing", "resolved"), ("NetpolAuditorPoliciesNotEnforced", "resolved")}

    # 6: clean-up
    assert any("demo complete in" in line for line in steps["6"])
    assert_nothing_left(state, operator_pid(proc.stdout))


def test_ctrl_c_cleans_up(state: Path) -> None:
    proc = subprocess.Popen(demo_command(state), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, stdin=subprocess.DEVNULL)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "waiting for probe cycles" in line:  # the operator is probing
                break
        else:
            pytest.fail("the demo ended before probing: " + "".join(lines)[-4000:])
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    assert proc.returncode == 130, output[-4000:]
    assert "interrupted: cleaning up" in output
    assert f"{state} removed" in output
    assert_nothing_left(state, operator_pid(output))
