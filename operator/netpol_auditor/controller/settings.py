"""The operator's configuration: one immutable Settings object built from command-line options and environment.

Every option ``--some-option`` can also come from the environment variable ``NETPOL_AUDITOR_SOME_OPTION`` (the
command line wins), which is how the Helm chart configures the operator. The operator and the prober share this one
object.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from netpol_auditor.model import PortProtocol
from netpol_auditor.prober.podspec import DEFAULT_NODE_SELECTOR, DEFAULT_RESOURCES
from netpol_auditor.prober.script import max_targets
from netpol_auditor.selectors import parse_label_selector

__all__ = ["ENV_PREFIX", "Settings", "add_arguments", "settings_from_args"]

ENV_PREFIX = "NETPOL_AUDITOR_"
#: --probe-retry and --probe-late make a probe pod wait this long at most (re-check seconds have five digits)
MAX_PROBE_WAIT_SECONDS = 3600


def _env_name(option: str) -> str:
    return ENV_PREFIX + option.upper().replace("-", "_")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"invalid boolean {text!r}: expected true/false")


def _ports(text: str) -> tuple[PortProtocol, ...]:
    """``"80/TCP,53/UDP"`` -> ports; empty -> ``()`` (meaning: the ports pods declare)."""
    return tuple(sorted({PortProtocol.parse(part) for part in text.split(",") if part.strip()}))


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object (``{"k": "v"}``), or ``k=v,k2=v2``; empty -> ``{}``."""
    text = text.strip()
    if not text:
        return {}
    if not text.startswith("{"):
        pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
        if any(len(kv) != 2 or not kv[0].strip() for kv in pairs):
            raise ValueError(f"invalid {text!r}: expected a JSON object or key=value pairs")
        return {k.strip(): v.strip() for k, v in pairs}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"invalid {text!r}: expected a JSON object")
    return value


def _json_list(text: str) -> tuple[Any, ...]:
    """A JSON list of objects; empty -> ``()``."""
    text = text.strip()
    if not text:
        return ()
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"invalid {text!r}: expected a JSON list of objects")
    return tuple(value)


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _str_map(value: dict[str, Any]) -> dict[str, str]:
    if not all(isinstance(v, str) for v in value.values()):
        raise ValueError("every value must be a string")
    return value


def _label_selector(text: str) -> str:
    parse_label_selector(text)  # raises ValueError naming the requirement that does not parse
    return text.strip()


def _globs(text: str) -> tuple[str, ...]:
    """Comma-separated globs, each its own item (a namespace is selected by any, unless a ``!glob`` matches)."""
    return tuple(g.strip() for g in text.split(",") if g.strip())


def _pattern(text: str) -> tuple[str, ...]:
    """One kopf namespace pattern, kept whole: its comma-separated globs are evaluated left to right."""
    return (text.strip(),) if text.strip() else ()


@dataclass(frozen=True)
class Settings:
    """Everything `netpol-auditor run` can be told. Defaults are the in-cluster production values."""

    # Connection
    kubeconfig: str | None = None
    context: str | None = None
    # Scope: empty = cluster-wide; else kopf namespace patterns (globs, ``!pattern`` excludes).
    namespaces: tuple[str, ...] = ()
    # ... and only namespaces whose labels match this label selector (kubectl syntax; empty: every namespace).
    namespace_selector: str = ""
    # HTTP endpoints
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 9090
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    # The read-only reachability page on the metrics port (/reachability)
    reachability_page_enabled: bool = False
    reachability_page_max_workloads: int = 1000
    reachability_page_refresh_seconds: float = 10.0
    # Path metrics
    ports: tuple[PortProtocol, ...] = ()
    max_ports: int = 8
    max_path_series: int = 20000
    recompute_delay_seconds: float = 0.25
    # Convergence
    resync_interval_seconds: float = 300.0
    # High availability (kopf peering)
    peering_name: str = "netpol-auditor"
    standalone: bool = False
    priority: int = 0
    peering_lifetime_seconds: int = 60
    # Logging
    log_format: str = "text"
    log_level: str = "INFO"
    # Kubernetes Events
    events_enabled: bool = True
    events_per_minute: int = 30
    events_dedup_seconds: float = 600.0
    events_grace_seconds: float = 30.0
    # Prober (live probes that confirm what the CNI enforces)
    probe_enabled: bool = False
    probe_interval_seconds: float = 30.0
    probe_image: str = "nicolaka/netshoot:v0.13"
    probe_max_pods: int = 10
    probe_pair_groups: int = 100
    probe_namespace: str = "netpol-auditor"
    probe_targets_per_pod: int = 40
    probe_timeout_seconds: int = 2
    probe_settle_seconds: float = 5.0
    probe_retry_seconds: float = 10.0
    probe_late_seconds: float = 20.0
    # a probe pod waits this long before its first connection (the CNI programs a new pod's rules asynchronously)
    probe_start_delay_seconds: float = 2.0
    # a probe or responder pod not running this long after creation is given up (its paths: inconclusive)
    probe_pod_start_timeout_seconds: float = 60.0
    probe_namespaces: tuple[str, ...] = ()
    # ... where kube-system and the operator's own namespace are left out unless this is set
    probe_system_namespaces: bool = False
    # write what probing found as wgpolicyk8s.io/v1alpha2 PolicyReports (one per namespace)
    policy_reports: bool = False
    # the operator's own namespace (the chart sets it from the downward API)
    operator_namespace: str = ""
    # Probe pods as admitted by the cluster's rules: placement, identity, resources
    probe_node_selector: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_NODE_SELECTOR))
    probe_tolerations: tuple[dict[str, Any], ...] = ()
    probe_labels: dict[str, str] = field(default_factory=dict)
    probe_annotations: dict[str, str] = field(default_factory=dict)
    probe_image_pull_secrets: tuple[str, ...] = ()
    probe_priority_class_name: str = ""
    probe_resources: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    # service-mesh injection opt-outs on every probe pod (istio, linkerd, kuma, consul, open service mesh)
    probe_mesh_opt_out: bool = True
    # whose probe pods these are: the sweep deletes only pods of this instance and install
    probe_instance: str = "netpol-auditor"
    probe_install_id: str = ""
    # a (probe group, node) whose probe pod was refused is tried again after this, doubling up to the cap
    probe_backoff_seconds: float = 10.0
    probe_backoff_max_seconds: float = 600.0

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "ports":
                value = [str(p) for p in value]
            elif isinstance(value, dict):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


@dataclass(frozen=True)
class _Option:
    flag: str
    dest: str
    help: str
    parse: Any = str
    metavar: str | None = None
    boolean: bool = False
    choices: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = field(default=())


_OPTIONS: tuple[_Option, ...] = (
    _Option("--kubeconfig", "kubeconfig", "kubeconfig file (default: in-cluster service account, else $KUBECONFIG "
            "or ~/.kube/config)", metavar="PATH"),
    _Option("--context", "context", "kubeconfig context to use", metavar="NAME"),
    _Option("--namespace", "namespaces", "watch only namespaces matching this kopf pattern: comma-separated globs, "
            "'!glob' excludes (e.g. 'team-*,!team-sandbox'); repeatable (any pattern matches); default: "
            "cluster-wide", parse=_pattern, metavar="PATTERN",
            aliases=("-n",)),
    _Option("--namespace-selector", "namespace_selector", "audit only namespaces whose labels match this label "
            "selector, in kubectl's syntax (e.g. 'team=payments,env!=dev' or '!netpol-auditor.io/ignore'); "
            "combined with --namespace, a namespace must pass both; a namespace relabelled in or out of scope is "
            "added to or removed from the index", parse=_label_selector, metavar="SELECTOR"),
    _Option("--metrics-address", "metrics_address", "address of the /metrics and /readyz HTTP server",
            metavar="ADDR"),
    _Option("--metrics-port", "metrics_port", "port of the /metrics and /readyz HTTP server (0: any free port)",
            parse=int, metavar="N"),
    _Option("--liveness", "liveness_endpoint", "kopf liveness endpoint URL; empty disables it", metavar="URL"),
    _Option("--reachability-page", "reachability_page_enabled", "serve a read-only HTML page of the predicted (and "
            "probed) reachability between workloads on the metrics port, at /reachability", parse=_bool,
            boolean=True),
    _Option("--reachability-page-max-workloads", "reachability_page_max_workloads", "the page shows at most this "
            "many workloads (whole namespaces, in name order); its cost grows with their square", parse=int,
            metavar="N"),
    _Option("--reachability-page-refresh", "reachability_page_refresh_seconds", "the page is rendered again on a "
            "request when the index or the probe results changed, at most this often", parse=float,
            metavar="SECONDS"),
    _Option("--ports", "ports", "ports the path metrics cover, e.g. '80/TCP,53/UDP' (default: the ports pods "
            "declare, at most --max-ports of them)", parse=_ports, metavar="LIST"),
    _Option("--max-ports", "max_ports", "cap on the ports taken from pods' declared ports when --ports is not given",
            parse=int, metavar="N"),
    _Option("--max-path-series", "max_path_series", "cap on netpol_auditor_paths series (roughly namespaces^2 x "
            "ports x 2); beyond it the series are truncated and a warning is logged", parse=int, metavar="N"),
    _Option("--recompute-delay", "recompute_delay_seconds", "debounce delay before aggregate metrics (paths, "
            "isolation, policies) and Events are recomputed after a change", parse=float, metavar="SECONDS"),
    _Option("--resync-interval", "resync_interval_seconds", "period of the full re-list that reconciles the index "
            "with the cluster (0 disables the periodic one)", parse=float, metavar="SECONDS"),
    _Option("--peering", "peering_name", "kopf peering object used to elect the active replica", metavar="NAME"),
    _Option("--standalone", "standalone", "run without peering (single replica)", parse=_bool, boolean=True),
    _Option("--priority", "priority", "peering priority: the replica with the highest live priority is active; "
            "replicas of equal priority are ordered by a random tie-breaker (kopf would pause them all)", parse=int,
            metavar="N"),
    _Option("--peering-lifetime", "peering_lifetime_seconds", "seconds without a keep-alive after which a replica "
            "is presumed dead and a standby takes over", parse=int, metavar="SECONDS"),
    _Option("--log-format", "log_format", "log format", choices=("text", "json")),
    _Option("--log-level", "log_level", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    _Option("--events", "events_enabled", "post Kubernetes Events on notable changes", parse=_bool, boolean=True),
    _Option("--events-per-minute", "events_per_minute", "rate limit of posted Events", parse=int, metavar="N"),
    _Option("--events-dedup", "events_dedup_seconds", "identical Events (object, reason, message) are posted once "
            "per this window", parse=float, metavar="SECONDS"),
    _Option("--events-grace", "events_grace_seconds", "a policy or peer must select nothing this long before "
            "it is warned about (pods start after their policies)", parse=float, metavar="SECONDS"),
    _Option("--probe", "probe_enabled", "run live probes that check what the CNI enforces", parse=_bool,
            boolean=True),
    _Option("--probe-interval", "probe_interval_seconds", "a probe cycle starts every SECONDS (the next one at once "
            "if a cycle takes longer)", parse=float, metavar="SECONDS"),
    _Option("--probe-image", "probe_image", "image of the probe pods", metavar="IMAGE"),
    _Option("--probe-max-pods", "probe_max_pods", "probe pods alive at once, at most", parse=int, metavar="N"),
    _Option("--probe-pair-groups", "probe_pair_groups", "up to this many probe groups every group pair is probed; "
            "beyond, every ingress and egress decision once", parse=int, metavar="N"),
    _Option("--probe-namespace", "probe_namespace", "namespace of the probes' owner objects", metavar="NAME"),
    _Option("--probe-targets-per-pod", "probe_targets_per_pod", "connections one probe pod makes, at most",
            parse=int, metavar="N"),
    _Option("--probe-timeout", "probe_timeout_seconds", "seconds one connection attempt may take",
            parse=int, metavar="SECONDS"),
    _Option("--probe-settle", "probe_settle_seconds", "paths whose verdict changed this recently are not judged "
            "yet (CNI programming delay)", parse=float, metavar="SECONDS"),
    _Option("--probe-retry", "probe_retry_seconds", "a path observed differently than predicted is re-probed for "
            "this long before it counts as a mismatch", parse=float, metavar="SECONDS"),
    _Option("--probe-late", "probe_late_seconds", "before a path counts as a mismatch, one more probe waits this long "
            "before connecting; if it then agrees, the path is 'late' (enforced, rules programmed slowly), not a "
            "mismatch (0: off)", parse=float, metavar="SECONDS"),
    _Option("--probe-start-delay", "probe_start_delay_seconds", "a probe pod waits this long before its first "
            "connection (the CNI programs a new pod's rules asynchronously)", parse=float, metavar="SECONDS"),
    _Option("--probe-pod-start-timeout", "probe_pod_start_timeout_seconds", "a probe or responder pod that is not "
            "running this long after its creation is given up and its paths are inconclusive (pod_timeout)",
            parse=float, metavar="SECONDS"),
    _Option("--probe-namespaces", "probe_namespaces", "namespaces probes may run in: comma-separated globs, "
            "'!glob' excludes (default: every audited namespace but kube-system and the operator's own)",
            parse=_globs, metavar="PATTERNS"),
    _Option("--policy-reports", "policy_reports", "write what probing found (mismatches, paths that could not be "
            "checked, policies confirmed) as wgpolicyk8s.io/v1alpha2 PolicyReports named netpol-auditor, one per "
            "namespace, for Policy Reporter and Kyverno's tooling (needs the PolicyReport CRD)", parse=_bool,
            boolean=True),
    _Option("--probe-system-namespaces", "probe_system_namespaces", "also probe in kube-system and the operator's "
            "own namespace", parse=_bool, boolean=True),
    _Option("--operator-namespace", "operator_namespace", "the operator's own namespace (left out of probing)",
            metavar="NAME"),
    _Option("--probe-node-selector", "probe_node_selector", "node labels a node must carry to host probe pods, "
            "as JSON or key=value pairs; paths of pods on other nodes are inconclusive (unschedulable)",
            parse=lambda t: _str_map(_json_object(t)), metavar="LABELS"),
    _Option("--probe-tolerations", "probe_tolerations", "tolerations of probe pods (a JSON list of Toleration)",
            parse=_json_list, metavar="JSON"),
    _Option("--probe-labels", "probe_labels", "extra labels of probe pods (JSON or key=value pairs)",
            parse=lambda t: _str_map(_json_object(t)), metavar="LABELS"),
    _Option("--probe-annotations", "probe_annotations", "extra annotations of probe pods (JSON or key=value "
            "pairs)", parse=lambda t: _str_map(_json_object(t)), metavar="ANNOTATIONS"),
    _Option("--probe-image-pull-secrets", "probe_image_pull_secrets", "names of Secrets for pulling the probe "
            "image, in each probed namespace (comma-separated)", parse=_names, metavar="NAMES"),
    _Option("--probe-priority-class-name", "probe_priority_class_name", "PriorityClass of probe pods",
            metavar="NAME"),
    _Option("--probe-resources", "probe_resources", "resources of each probe pod container (JSON "
            "ResourceRequirements)", parse=_json_object, metavar="JSON"),
    _Option("--probe-mesh-opt-out", "probe_mesh_opt_out", "label and annotate probe pods with the sidecar "
            "injection opt-outs of the common service meshes", parse=_bool, boolean=True),
    _Option("--probe-instance", "probe_instance", "app.kubernetes.io/instance of probe pods (the Helm release)",
            metavar="NAME"),
    _Option("--probe-install-id", "probe_install_id", "identity of this install on probe pods: the start-up "
            "sweep deletes only pods of this instance and install", metavar="ID"),
    _Option("--probe-backoff", "probe_backoff_seconds", "first wait before a refused probe pod (per probe group "
            "and node) is tried again; doubles on every refusal", parse=float, metavar="SECONDS"),
    _Option("--probe-backoff-max", "probe_backoff_max_seconds", "cap of that wait", parse=float,
            metavar="SECONDS"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every Settings option to *parser* (defaults stay unset so that the environment can fill them)."""
    defaults = Settings()
    for opt in _OPTIONS:
        default = getattr(defaults, opt.dest)
        shown = (",".join(str(v) for v in default) or "-") if isinstance(default, tuple) else str(default)
        help_text = f"{opt.help} [env {_env_name(opt.flag[2:])}; default: {shown}]"
        if opt.boolean:
            parser.add_argument(opt.flag, dest=opt.dest, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        elif opt.dest == "namespaces":
            parser.add_argument(opt.flag, *opt.aliases, dest=opt.dest, action="append", default=None,
                                metavar=opt.metavar, help=help_text)
        else:
            parser.add_argument(opt.flag, *opt.aliases, dest=opt.dest, default=None, metavar=opt.metavar,
                                choices=opt.choices, help=help_text)


def settings_from_args(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings: command line first, then ``NETPOL_AUDITOR_*`` environment variables, then defaults.

    Raises ValueError with the option name when a value cannot be parsed.
    """
    environ = os.environ if env is None else env
    values: dict[str, Any] = {}
    for opt in _OPTIONS:
        raw: Any = getattr(args, opt.dest, None) if args is not None else None
        source = opt.flag
        if raw is None:
            env_value = environ.get(_env_name(opt.flag[2:]))
            if env_value is None:
                continue
            raw, source = env_value, _env_name(opt.flag[2:])
        try:
            if isinstance(raw, bool):
                value: Any = raw
            elif opt.dest == "namespaces":
                items: Sequence[str] = raw if isinstance(raw, list) else [raw]
                value = tuple(p for item in items for p in _pattern(item))
            else:
                value = opt.parse(raw)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        if opt.choices is not None and value not in opt.choices:
            raise ValueError(f"{source}: invalid value {value!r}: expected one of {', '.join(opt.choices)}")
        values[opt.dest] = value
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    if not 0 <= settings.metrics_port <= 65535:
        raise ValueError(f"--metrics-port: {settings.metrics_port} out of range 0-65535")
    for name in ("max_ports", "max_path_series", "events_per_minute", "probe_max_pods", "probe_pair_groups",
                 "reachability_page_max_workloads",
                 "probe_targets_per_pod",
                 "probe_timeout_seconds"):
        if getattr(settings, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')}: must not be negative")
    for name in ("recompute_delay_seconds", "resync_interval_seconds", "events_dedup_seconds", "events_grace_seconds",
                 "probe_interval_seconds", "probe_settle_seconds", "probe_retry_seconds", "probe_late_seconds",
                 "probe_backoff_seconds", "probe_start_delay_seconds", "reachability_page_refresh_seconds",
                 "probe_backoff_max_seconds"):
        if getattr(settings, name) < 0:
            raise ValueError(f"{name}: must not be negative")
    if settings.probe_pod_start_timeout_seconds <= 0:
        raise ValueError("--probe-pod-start-timeout: must be positive")
    for name in ("probe_retry_seconds", "probe_late_seconds"):
        if getattr(settings, name) > MAX_PROBE_WAIT_SECONDS:
            raise ValueError(f"--{name.removesuffix('_seconds').replace('_', '-')}: a probe pod waits at most "
                             f"{MAX_PROBE_WAIT_SECONDS} s")
    # a probe pod reports through its termination message: its targets, each re-checked up to twice, must fit
    if settings.probe_targets_per_pod > max_targets(rechecks=2):
        raise ValueError(f"--probe-targets-per-pod: at most {max_targets(rechecks=2)} (what one pod can report)")
    if settings.probe_backoff_max_seconds < settings.probe_backoff_seconds:
        raise ValueError("--probe-backoff-max: must not be below --probe-backoff")
