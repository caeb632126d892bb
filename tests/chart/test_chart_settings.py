"""The chart and the operator agree on its settings: every variable the chart sets is an option the operator reads,
and every option users need is a chart value (the rest are listed here, each with the reason it is not)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from chart_helpers import RELEASE, Render, one, operator_options

from netpol_auditor.controller.settings import Settings, add_arguments, settings_from_args
from netpol_auditor.prober.loop import ProbeOptions

FULLNAME = f"{RELEASE}-netpol-auditor"

#: Every value set that adds variables (probes, peering, events) is on by default; these add nothing more.
EVERYTHING = {"serviceMonitor.enabled": True, "prometheusRule.enabled": True, "networkPolicy.enabled": True,
              "replicaCount": 2}

#: Options of `netpol-auditor run` the chart deliberately does not set, and why (`extraEnv` still can).
NOT_EXPOSED = {
    "--kubeconfig": "in the cluster the operator uses its ServiceAccount",
    "--context": "in the cluster the operator uses its ServiceAccount",
    "--metrics-address": "the pod serves /metrics on all its addresses; networkPolicy.metricsFrom narrows "
                         "who may scrape",
    "--recompute-delay": "debounce of the aggregate metrics: an implementation detail, not a deployment choice",
    "--probe-namespace": "the operator reads it nowhere (ProbeRuns are cluster-scoped); the chart value "
                         "probe.ownerNamespace was removed for it",
}

#: Attributes ProbeOptions.from_settings reads that are not Settings fields, and why (they keep their defaults).
READ_BUT_NOT_SETTINGS = {
    "probe_placements": "'balanced' is the production plan; 'all' (every node pair) is for the benchmarks and tests",
    "probe_ports": "the prober falls back to --ports, the path metrics' ports, which the chart sets",
}




def _env_names(docs: list[dict[str, Any]]) -> set[str]:
    container = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"] for e in container["env"]}


def test_every_variable_the_chart_sets_is_an_option_the_operator_reads(render: Render) -> None:
    unknown = sorted(_env_names(render(EVERYTHING)) - set(operator_options()))
    assert not unknown, f"the chart sets variables `netpol-auditor run` does not read: {unknown}"


def test_every_option_is_set_by_the_chart_or_deliberately_not(render: Render) -> None:
    options = operator_options()
    set_by_chart = {options[name] for name in _env_names(render()) if name in options}
    missing = sorted(set(options.values()) - set_by_chart - set(NOT_EXPOSED))
    assert not missing, f"options neither set by the chart nor listed in NOT_EXPOSED: {missing}"
    stale = sorted(flag for flag in NOT_EXPOSED if flag in set_by_chart or flag not in options.values())
    assert not stale, f"NOT_EXPOSED lists options the chart sets, or that do not exist: {stale}"


def test_every_settings_field_is_an_option() -> None:
    """A Settings field without an option could be read but never set (by the chart or anyone)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    dests = {action.dest for action in parser._actions}
    assert {f.name for f in fields(Settings)} - dests == set()


class _Recorder:
    """Stands in for Settings and records every attribute read of it (each read gets the caller's default)."""

    def __init__(self) -> None:
        self.read: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        raise AttributeError(name)


def test_what_the_prober_reads_of_the_settings_exists_there() -> None:
    """ProbeOptions reads Settings with getattr and defaults: a name missing from Settings is silently unsettable."""
    recorder = _Recorder()
    ProbeOptions.from_settings(recorder)
    assert recorder.read, "ProbeOptions.from_settings no longer reads settings by attribute: revisit this test"
    settings_fields = {f.name for f in fields(Settings)}
    unsettable = sorted(recorder.read - settings_fields - set(READ_BUT_NOT_SETTINGS))
    assert not unsettable, f"the prober reads settings no option sets: {unsettable}"
    assert set(READ_BUT_NOT_SETTINGS) <= recorder.read - settings_fields


def test_new_values_reach_the_operator(render: Render) -> None:
    docs = render({"probe.startDelaySeconds": 4, "probe.podStartTimeoutSeconds": 120, "peering.lifetimeSeconds": 30,
                   "events.graceSeconds": 90})
    container = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    settings = settings_from_args(None, env={e["name"]: e["value"] for e in container["env"] if "value" in e})
    assert (settings.probe_start_delay_seconds, settings.probe_pod_start_timeout_seconds) == (4, 120)
    assert (settings.peering_lifetime_seconds, settings.events_grace_seconds) == (30, 90)
    options = ProbeOptions.from_settings(settings)
    assert (options.start_delay_seconds, options.pod_start_timeout_seconds) == (4, 120)


def test_the_reachability_page_values_reach_the_operator(render: Render) -> None:
    def settings_of(values: dict[str, Any] | None = None) -> Settings:
        container = one(render(values), "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
        return settings_from_args(None, env={e["name"]: e["value"] for e in container["env"] if "value" in e})

    assert settings_of().reachability_page_enabled is False
    settings = settings_of({"reachabilityPage.enabled": True, "reachabilityPage.maxWorkloads": 200,
                            "reachabilityPage.refreshSeconds": 30})
    assert settings.reachability_page_enabled is True
    assert (settings.reachability_page_max_workloads, settings.reachability_page_refresh_seconds) == (200, 30)


def test_chart_defaults_are_the_operators(render: Render) -> None:
    """Where the chart only passes a default on, it passes the operator's own."""
    container = one(render(), "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    settings = settings_from_args(None, env={e["name"]: e["value"] for e in container["env"] if "value" in e})
    defaults = Settings()
    for name in ("probe_start_delay_seconds", "probe_pod_start_timeout_seconds", "peering_lifetime_seconds",
                 "events_grace_seconds", "probe_backoff_seconds", "probe_late_seconds", "probe_retry_seconds",
                 "reachability_page_enabled", "reachability_page_max_workloads", "reachability_page_refresh_seconds"):
        assert getattr(settings, name) == getattr(defaults, name), name
