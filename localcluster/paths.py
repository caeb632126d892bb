"""Where localcluster keeps its state (per cluster) and its build cache (per machine)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "repo_root", "state_dir"]

DEFAULT_STATE = Path("/tmp/netpol-auditor-localcluster")


def state_dir() -> Path:
    """Per-cluster state: pids, logs, certs, kubeconfigs, etcd data. ``$LOCALCLUSTER_STATE`` overrides."""
    return Path(os.environ.get("LOCALCLUSTER_STATE") or DEFAULT_STATE)


def cache_dir() -> Path:
    """Per-machine build cache (Go binaries keyed by module hash). ``$NETPOL_AUDITOR_CACHE`` overrides."""
    env = os.environ.get("NETPOL_AUDITOR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "netpol-auditor"


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
