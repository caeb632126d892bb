"""The probe script generator and the termination-message parser, without a network."""

from __future__ import annotations

import pytest

from netpol_auditor.model import PortProtocol, Protocol
from netpol_auditor.prober.script import (
    TERMINATION_MESSAGE_BYTES,
    ProbeResult,
    ScriptTarget,
    max_targets,
    parse_report,
    probe_script,
    responder_script,
)


def test_a_full_report_fits_the_termination_message() -> None:
    n = max_targets()
    assert n > 500  # "<index><code>" lines are short: hundreds of targets per pod
    worst = "".join(f"{i}t\n" for i in range(n)) + f"#{n}\n"
    assert len(worst.encode()) <= TERMINATION_MESSAGE_BYTES
    assert parse_report(worst, n).complete


def test_too_many_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="exceed"):
        probe_script([ScriptTarget("10.0.0.1", 80)] * (max_targets() + 1))


@pytest.mark.parametrize("host", ["pod.example", "10.0.0.1; rm -rf /", "$(id)", ""])
def test_targets_are_ip_literals_only(host: str) -> None:
    with pytest.raises(ValueError):
        ScriptTarget(host, 80)


def test_ipv6_targets_are_bracketed_for_socat_only() -> None:
    script = probe_script([ScriptTarget("fd00::1", 80, Protocol.TCP), ScriptTarget("fd00::1", 53, Protocol.UDP)])
    assert "run probe 0 tcp fd00::1 80" in script
    assert "run probe 1 udp [fd00::1] 53" in script


def test_parse_report_classifies_and_tolerates_partial_and_garbage() -> None:
    report = parse_report("0c\n2r\nnoise\n9c\n1t\n", 4)
    assert report.results == (ProbeResult.CONNECTED, ProbeResult.TIMED_OUT, ProbeResult.REFUSED, None)
    assert not report.complete
    assert report.missing() == 1
    done = parse_report("1e\n0c\n#2\n", 2)
    assert done.complete
    assert done.results == (ProbeResult.CONNECTED, ProbeResult.ERROR)
    assert parse_report(None, 1).results == (None,)
    # a completion marker for another count does not complete the report
    assert not parse_report("0c\n#3\n", 1).complete


def test_responder_script_listens_on_each_port_once() -> None:
    script = responder_script([PortProtocol.parse(p) for p in ("80/TCP", "80/TCP", "53/UDP")])
    assert script.count("listen tcp 80\n") == 1
    assert script.count("listen udp 53\n") == 1
