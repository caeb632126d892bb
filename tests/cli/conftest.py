"""Fixtures of the CLI tests (helpers in cli_harness.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cli_harness import Result, check_golden, run_cli


@pytest.fixture
def cli() -> Callable[..., Result]:
    return run_cli


@pytest.fixture
def golden() -> Callable[[str, str], None]:
    return check_golden
