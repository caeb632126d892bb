"""Settings: command line beats environment beats defaults; bad values name the option."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from netpol_auditor.controller.command import add_run_parser
from netpol_auditor.controller.settings import MAX_PROBE_WAIT_SECONDS, Settings, settings_from_args
from netpol_auditor.model import PortProtocol
from netpol_auditor.prober.script import max_targets


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_run_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["run", *argv])


def test_defaults_are_cluster_wide_with_peering() -> None:
    settings = settings_from_args(parse(), env={})
    assert settings == Settings()
    assert settings.clusterwide and not settings.standalone and settings.peering_name == "netpol-auditor"
    assert settings.metrics_port == 9090 and settings.liveness_endpoint == "http://0.0.0.0:8080/healthz"


def test_command_line_overrides_environment() -> None:
    env = {"NETPOL_AUDITOR_METRICS_PORT": "9999", "NETPOL_AUDITOR_PORTS": "53/udp", "NETPOL_AUDITOR_STANDALONE": "true",
           "NETPOL_AUDITOR_LOG_FORMAT": "json"}
    settings = settings_from_args(parse("--metrics-port", "8000", "--no-standalone"), env=env)
    assert settings.metrics_port == 8000
    assert settings.standalone is False
    assert settings.ports == (PortProtocol.parse("53/UDP"),)
    assert settings.log_format == "json"


def test_namespace_patterns_stay_whole_kopf_patterns() -> None:
    settings = settings_from_args(parse("--namespace", "team-*,!team-sandbox", "-n", "shop"), env={})
    assert settings.namespaces == ("team-*,!team-sandbox", "shop")
    assert not settings.clusterwide
    # The chart passes one comma-joined pattern through the environment; empty means cluster-wide.
    assert settings_from_args(parse(), env={"NETPOL_AUDITOR_NAMESPACE": ""}).clusterwide


def test_prober_options_share_the_settings_object() -> None:
    settings = settings_from_args(parse("--probe", "--probe-interval", "60", "--probe-image", "img:1",
                                        "--probe-max-pods", "3", "--probe-namespace", "audit"), env={})
    assert (settings.probe_enabled, settings.probe_interval_seconds, settings.probe_image, settings.probe_max_pods,
            settings.probe_namespace) == (True, 60.0, "img:1", 3, "audit")


@pytest.mark.parametrize(("argv", "env", "message"), [
    (("--ports", "80/ICMP"), {}, "--ports"),
    (("--metrics-port", "70000"), {}, "--metrics-port"),
    ((), {"NETPOL_AUDITOR_MAX_PATH_SERIES": "lots"}, "NETPOL_AUDITOR_MAX_PATH_SERIES"),
    ((), {"NETPOL_AUDITOR_EVENTS": "maybe"}, "NETPOL_AUDITOR_EVENTS"),
    ((), {"NETPOL_AUDITOR_LOG_FORMAT": "xml"}, "NETPOL_AUDITOR_LOG_FORMAT"),
    (("--namespace-selector", "team>3"), {}, "--namespace-selector: label selector 'team>3': cannot parse"),
    ((), {"NETPOL_AUDITOR_NAMESPACE_SELECTOR": "env in (a"}, "NETPOL_AUDITOR_NAMESPACE_SELECTOR"),
    # a probe pod would fail every round: re-check seconds have five digits, and its report fits 4 KiB
    (("--probe-late", "100000"), {}, "--probe-late: a probe pod waits at most 3600 s"),
    (("--probe-targets-per-pod", "5000"), {}, "--probe-targets-per-pod: at most"),
])
def test_bad_values_name_their_source(argv: tuple[str, ...], env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_from_args(parse(*argv), env=env)


def test_run_command_exits_2_on_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--ports", "nope")
    assert args.func(args) == 2
    assert "--ports" in capsys.readouterr().err


def test_the_charts_schema_bounds_the_probe_waits_and_targets_as_the_operator_does() -> None:
    """helm refuses at install what the operator would refuse at start (a crash loop after a successful install)."""
    schema = json.loads((Path(__file__).resolve().parents[2] / "charts/netpol-auditor/values.schema.json").read_text())
    probe = schema["properties"]["probe"]["properties"]
    assert probe["retrySeconds"]["maximum"] == probe["lateSeconds"]["maximum"] == MAX_PROBE_WAIT_SECONDS
    assert probe["targetsPerPod"]["maximum"] == max_targets(rechecks=2)
