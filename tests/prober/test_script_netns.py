"""The generated probe script, run for real: two network namespaces joined by a veth pair, real responders, and
iptables DROP / REJECT rules in the server namespace. Each target's classification must match what the network did.

Nothing touches the host's own network namespace: both namespaces and the veth pair are created here and deleted
afterwards; the addresses are from the benchmarking range 198.18.0.0/15 (RFC 2544), reachable only between them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from netpol_auditor.model import PortProtocol, Protocol
from netpol_auditor.prober.script import (
    ProbeResult,
    ScriptTarget,
    parse_report,
    probe_script,
    responder_check_script,
    responder_script,
)

TOOLS = ("ip", "iptables", "nc", "socat")

SERVER_IP = "198.18.7.2"
CLIENT_IP = "198.18.7.1"


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def _sctp_supported() -> bool:
    import socket

    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError:
        return False
    return True


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    """A client and a server network namespace joined by a veth pair (198.18.7.1 <-> 198.18.7.2)."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        # A failure, not a skip: the suite's setup (localcluster/setup.sh) installs these and runs as root.
        pytest.fail(f"needs root and {', '.join(TOOLS)} (missing: {', '.join(missing) or 'root'}); "
                    "run `make test`, which installs them")
    tag = uuid.uuid4().hex[:6]
    client, server = f"npa-c-{tag}", f"npa-s-{tag}"
    _sh("ip", "netns", "add", client)
    _sh("ip", "netns", "add", server)
    try:
        _sh("ip", "link", "add", f"vc{tag}", "netns", client, "type", "veth", "peer", "name", f"vs{tag}",
            "netns", server)
        for ns, dev, ip in ((client, f"vc{tag}", CLIENT_IP), (server, f"vs{tag}", SERVER_IP)):
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        yield client, server
    finally:
        for ns in (client, server):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                subprocess.run(["kill", pid], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def server(netns_pair: tuple[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The generated responder script serving 8080/TCP, 5353/UDP and 8081/TCP, 8082/TCP, 5354/UDP (filtered below)."""
    client, srv = netns_pair
    ports = [PortProtocol.parse(p) for p in ("8080/TCP", "8081/TCP", "8082/TCP", "5353/UDP", "5354/UDP")]
    script = responder_script(ports, log_path=str(tmp_path / "responder-log"))
    proc = subprocess.Popen(["ip", "netns", "exec", srv, "sh", "-c", script],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    rules = [
        ["-A", "INPUT", "-p", "tcp", "--dport", "8081", "-j", "DROP"],
        ["-A", "INPUT", "-p", "tcp", "--dport", "8082", "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"],
        ["-A", "INPUT", "-p", "udp", "--dport", "5354", "-j", "DROP"],
        ["-A", "INPUT", "-p", "tcp", "--dport", "8083", "-j", "REJECT", "--reject-with", "tcp-reset"],
    ]
    for rule in rules:
        _sh("ip", "netns", "exec", srv, "iptables", *rule)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # wait for the TCP listener
        if subprocess.run(["ip", "netns", "exec", client, "nc", "-z", "-w", "1", SERVER_IP, "8080"]).returncode == 0:
            break
        time.sleep(0.1)
    try:
        yield client, srv
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=5)


# The image's /bin/sh is busybox ash (netshoot is Alpine-based); the local cluster's hosts run dash.
# localcluster/setup.sh installs busybox, so both shells are always tested.
SHELLS = [["sh"], ["busybox", "sh"]]


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: " ".join(s))
def test_script_classifies_each_target_as_the_network_behaved(
    server: tuple[str, str], tmp_path: Path, shell: list[str]
) -> None:
    client, _ = server
    cases: list[tuple[ScriptTarget, set[ProbeResult]]] = [
        (ScriptTarget(SERVER_IP, 8080, Protocol.TCP), {ProbeResult.CONNECTED}),       # responder listens
        (ScriptTarget(SERVER_IP, 9090, Protocol.TCP), {ProbeResult.REFUSED}),         # nobody listens: RST
        (ScriptTarget(SERVER_IP, 8081, Protocol.TCP), {ProbeResult.TIMED_OUT}),       # DROP
        (ScriptTarget(SERVER_IP, 8082, Protocol.TCP), {ProbeResult.REFUSED}),         # REJECT admin-prohibited
        (ScriptTarget(SERVER_IP, 8083, Protocol.TCP), {ProbeResult.REFUSED}),         # REJECT tcp-reset
        (ScriptTarget(SERVER_IP, 5353, Protocol.UDP), {ProbeResult.CONNECTED}),       # echo reply
        (ScriptTarget(SERVER_IP, 5399, Protocol.UDP), {ProbeResult.REFUSED}),         # ICMP port unreachable
        (ScriptTarget(SERVER_IP, 5354, Protocol.UDP), {ProbeResult.TIMED_OUT}),       # DROP: no reply
        # SCTP: this kernel may lack it (then the tool fails: an error, never a verdict); else nobody listens.
        (ScriptTarget(SERVER_IP, 7777, Protocol.SCTP),
         {ProbeResult.REFUSED} if _sctp_supported() else {ProbeResult.ERROR}),
    ]
    log = tmp_path / "termination-log"
    log.write_text("")
    script = probe_script([t for t, _ in cases], timeout_seconds=2, parallelism=4, log_path=str(log))
    started = time.monotonic()
    proc = subprocess.run(["ip", "netns", "exec", client, *shell, "-c", script], capture_output=True, text=True,
                          timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    message = log.read_text()
    assert len(message.encode()) < 4096
    report = parse_report(message, len(cases))
    assert report.complete, message
    wrong = {
        f"{t.port}/{t.protocol}": (got, sorted(want))
        for (t, want), got in zip(cases, report.results, strict=True)
        if got not in want
    }
    assert not wrong, wrong
    # 9 targets, 4 at a time, each bounded by 2 s, tried twice when it times out: three rounds, under the sum.
    assert elapsed < 3 * (2 * 2 + 1) + 4


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: " ".join(s))
def test_a_target_that_disagrees_is_re_checked_in_place_until_it_agrees(
    server: tuple[str, str], tmp_path: Path, shell: list[str]
) -> None:
    """A target whose result differs from its prediction is tried again by the same script at each re-check second
    while it differs: 8081 is dropped at first and opened once its first result is written (rules programmed
    late), so its re-check connects; 5354/UDP stays dropped and is tried at every re-check. Targets that agree, or
    have no prediction, are tried once."""
    client, srv = server
    targets = [
        ScriptTarget(SERVER_IP, 8080, Protocol.TCP, expect=True),    # connects, as predicted
        ScriptTarget(SERVER_IP, 8081, Protocol.TCP, expect=True),    # dropped until opened below
        ScriptTarget(SERVER_IP, 8082, Protocol.TCP, expect=False),   # rejected, as predicted
        ScriptTarget(SERVER_IP, 5354, Protocol.UDP, expect=True),    # dropped throughout
        ScriptTarget(SERVER_IP, 8083, Protocol.TCP),                 # no prediction: never re-checked
    ]
    log = tmp_path / "termination-log"
    log.write_text("")
    script = probe_script(targets, timeout_seconds=1, parallelism=8, log_path=str(log), recheck_at=(8, 12))
    proc = subprocess.Popen(["ip", "netns", "exec", client, *shell, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while "1t" not in log.read_text().split():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        _sh("ip", "netns", "exec", srv, "iptables", "-D", "INPUT", "-p", "tcp", "--dport", "8081", "-j", "DROP")
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    report = parse_report(log.read_text(), len(targets))
    assert report.complete, log.read_text()
    c, t, r = ProbeResult.CONNECTED, ProbeResult.TIMED_OUT, ProbeResult.REFUSED
    assert report.attempts == (
        ((None, c),),
        ((None, t), (8, c)),
        ((None, r),),
        ((None, t), (8, t), (12, t)),
        ((None, r),),
    ), log.read_text()


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: " ".join(s))
def test_a_script_whose_targets_all_agree_does_not_wait_for_its_re_checks(
    server: tuple[str, str], tmp_path: Path, shell: list[str]
) -> None:
    client, _ = server
    targets = [ScriptTarget(SERVER_IP, 8080, Protocol.TCP, expect=True),
               ScriptTarget(SERVER_IP, 8082, Protocol.TCP, expect=False)]
    log = tmp_path / "termination-log"
    log.write_text("")
    script = probe_script(targets, timeout_seconds=1, log_path=str(log), recheck_at=(300,))
    # re-checking at 300 s would overrun this timeout many times over
    subprocess.run(["ip", "netns", "exec", client, *shell, "-c", script], check=True, timeout=60)
    report = parse_report(log.read_text(), len(targets))
    assert report.complete and report.results == (ProbeResult.CONNECTED, ProbeResult.REFUSED)


def test_udp_without_a_reply_is_not_connected(netns_pair: tuple[str, str], tmp_path: Path) -> None:
    """A UDP listener that swallows datagrams (open, but no reply) cannot be told from a filter: not 'connected'."""
    client, srv = netns_pair
    sink = subprocess.Popen(["ip", "netns", "exec", srv, "socat", "-u", "UDP-RECV:6000", "/dev/null"],
                            start_new_session=True)
    try:
        time.sleep(0.3)
        log = tmp_path / "log"
        log.write_text("")
        script = probe_script([ScriptTarget(SERVER_IP, 6000, Protocol.UDP)], timeout_seconds=1, log_path=str(log))
        subprocess.run(["ip", "netns", "exec", client, "sh", "-c", script], check=True, timeout=30)
        assert parse_report(log.read_text(), 1).results == (ProbeResult.TIMED_OUT,)
    finally:
        os.killpg(sink.pid, 15)
        sink.wait(timeout=5)


def test_a_responder_answers_a_burst_of_parallel_probes(server: tuple[str, str], tmp_path: Path) -> None:
    """Many probe pods hit one responder at the same moment: none of them may see a dropped SYN (a time-out)."""
    client, _ = server
    targets = [ScriptTarget(SERVER_IP, 8080)] * 60
    log = tmp_path / "log"
    log.write_text("")
    script = probe_script(targets, timeout_seconds=1, parallelism=60, log_path=str(log))
    subprocess.run(["ip", "netns", "exec", client, "sh", "-c", script], check=True, timeout=60)
    report = parse_report(log.read_text(), len(targets))
    assert report.complete and set(report.results) == {ProbeResult.CONNECTED}


def _check(netns: str, ports: list[PortProtocol], shell: list[str]) -> bool:
    """Run a responder's readiness check in ``netns`` as the kubelet would (exec inside the pod)."""
    return subprocess.run(["ip", "netns", "exec", netns, *shell, "-c", responder_check_script(ports)],
                          capture_output=True, timeout=30).returncode == 0


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: " ".join(s))
def test_responder_proves_its_listeners_and_a_dead_one_ends_it(
    netns_pair: tuple[str, str], tmp_path: Path, shell: list[str]
) -> None:
    """The readiness check passes only while every listener answers from inside the pod; a listener that cannot
    start ends the responder with the error as its termination message (never a silent "denied")."""
    _, srv = netns_pair
    ports = [PortProtocol.parse(p) for p in ("8090/TCP", "5390/UDP")]
    assert not _check(srv, ports, shell), "nothing listens yet"
    log = tmp_path / "log"
    log.write_text("")
    proc = subprocess.Popen(["ip", "netns", "exec", srv, *shell, "-c", responder_script(ports, log_path=str(log))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not _check(srv, ports, shell):
            assert time.monotonic() < deadline, "the responder never passed its own check"
            time.sleep(0.2)
        assert proc.poll() is None
        # the UDP listener dies: the check fails and the responder ends within its watch period, saying so
        subprocess.run(["ip", "netns", "exec", srv, "pkill", "-f", "RECVFROM:5390"], check=False)
        proc.wait(timeout=10)
        assert proc.returncode == 1 and "listener stopped" in log.read_text()
        assert not _check(srv, ports, shell)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)


def test_responder_whose_port_is_taken_ends_with_the_bind_error(netns_pair: tuple[str, str], tmp_path: Path) -> None:
    _, srv = netns_pair
    squatter = subprocess.Popen(["ip", "netns", "exec", srv, "socat", "TCP4-LISTEN:8091", "/dev/null"],
                                start_new_session=True)
    try:
        time.sleep(0.3)
        log = tmp_path / "log"
        log.write_text("")
        script = responder_script([PortProtocol.parse("8091/TCP")], log_path=str(log))
        code = subprocess.run(["ip", "netns", "exec", srv, "sh", "-c", script], timeout=30).returncode
        assert code == 1
        assert "Address already in use" in log.read_text()
    finally:
        os.killpg(squatter.pid, 9)
        squatter.wait(timeout=5)


def test_responder_listens_on_both_families_where_the_pod_has_ipv6(
    netns_pair: tuple[str, str], tmp_path: Path
) -> None:
    """Dual stack: one listener answers IPv4 and IPv6 (unique local addresses inside the test's own namespaces)."""
    client, srv = netns_pair
    for ns, ip in ((client, "fd00:198:18::1"), (srv, "fd00:198:18::2")):
        links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True, check=True).stdout
        dev = next(line for line in links.splitlines() if "@" in line).split(":")[1].strip()
        _sh("ip", "-n", ns, "addr", "add", f"{ip}/64", "dev", dev.split("@")[0], "nodad")
    ports = [PortProtocol.parse(p) for p in ("8092/TCP", "5392/UDP")]
    proc = subprocess.Popen(["ip", "netns", "exec", srv, "sh", "-c",
                             responder_script(ports, log_path=str(tmp_path / "rlog"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not _check(srv, ports, ["sh"]):
            assert time.monotonic() < deadline, "the responder never passed its own check"
            time.sleep(0.2)
        log = tmp_path / "log"
        log.write_text("")
        targets = [ScriptTarget(h, p.port, p.protocol) for h in (SERVER_IP, "fd00:198:18::2") for p in ports]
        script = probe_script(targets, timeout_seconds=2, log_path=str(log))
        subprocess.run(["ip", "netns", "exec", client, "sh", "-c", script], check=True, timeout=60)
        assert parse_report(log.read_text(), len(targets)).results == (ProbeResult.CONNECTED,) * len(targets)
    finally:
        os.killpg(proc.pid, 9)
