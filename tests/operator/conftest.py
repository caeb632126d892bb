"""Fixtures for the operator tests against the real API server (the session ``cluster`` of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import OperatorProcess


@pytest.fixture()
def admin(cluster: Any) -> Iterator[Any]:
    """A kubernetes ApiClient for the cluster admin."""
    client = cluster.api_client()
    yield client
    client.close()


@pytest.fixture()
def processes(tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operator processes (``start(kubeconfig, *args)``); all are stopped at the end of the test."""
    started: list[OperatorProcess] = []

    def start(kubeconfig: Path | str, *args: str, name: str = "operator") -> OperatorProcess:
        proc = OperatorProcess(kubeconfig, tmp_path / f"{name}-{len(started)}.log", *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
