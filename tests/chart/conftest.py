"""Fixtures of the chart tests: the real ``helm`` binary and ``helm template`` output.

``helm`` comes from charts/install-helm.sh (built once from helm's Go module, then cached), so a fresh machine gets
it on the first test run; a missing Go toolchain fails the tests rather than skipping them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, INSTALL_HELM, NAMESPACE, RELEASE, Render, run_helm, set_args


@pytest.fixture(scope="session")
def helm() -> Path:
    """Path of the helm v3 binary (installed by charts/install-helm.sh when missing)."""
    proc = subprocess.run(["bash", str(INSTALL_HELM)], capture_output=True, text=True, timeout=1500)
    if proc.returncode != 0:
        pytest.fail(f"charts/install-helm.sh failed:\n{proc.stderr}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session")
def render(helm: Path) -> Render:
    """``render(values={dotted.key: value}, chart=..., extra=[...])`` -> the documents ``helm template`` prints."""

    def _render(values: dict[str, Any] | None = None, chart: Path = CHART, extra: Sequence[str] = (),
                namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        proc = run_helm(helm, "template", RELEASE, str(chart), "--namespace", namespace, *set_args(values), *extra)
        return [d for d in yaml.safe_load_all(proc.stdout) if d]

    return _render
