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


def test_re_check_lines_are_attempts_in_the_order_they_ran() -> None:
    # parallel writers can append a later target's first line after an earlier target's re-check
    report = parse_report("0t\n1c\n0t@10\n2t\n0c@20\n2r@10\n#3\n", 3)
    assert report.complete
    assert report.attempts[0] == ((None, ProbeResult.TIMED_OUT), (10, ProbeResult.TIMED_OUT),
                                  (20, ProbeResult.CONNECTED))
    assert report.attempts[1] == ((None, ProbeResult.CONNECTED),)
    assert report.results == (ProbeResult.CONNECTED, ProbeResult.CONNECTED, ProbeResult.REFUSED)
    assert parse_report("0c@x\n", 1).results == (None,)


def test_re_checked_reports_fit_the_termination_message() -> None:
    n = max_targets(rechecks=2)
    assert n >= 100  # the default of 40 targets per pod fits with room to spare
    worst = "".join(f"{i}t\n{i}t@99999\n{i}t@99998\n" for i in range(n)) + f"#{n}\n"
    assert len(worst.encode()) <= TERMINATION_MESSAGE_BYTES
    targets = [ScriptTarget("10.0.0.1", 80, expect=True)] * (n + 1)
    with pytest.raises(ValueError, match="exceed"):
        probe_script(targets, recheck_at=(10, 20))
    # without expectations nothing is re-checked: the plain limit holds
    assert "pending" not in probe_script([ScriptTarget("10.0.0.1", 80)] * (n + 1), recheck_at=(10, 20))


def test_responder_script_listens_on_each_port_once() -> None:
    script = responder_script([PortProtocol.parse(p) for p in ("80/TCP", "80/TCP", "53/UDP")])
    assert script.count("listen tcp 80\n") == 1
    assert script.count("listen udp 53\n") == 1
