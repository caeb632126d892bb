"""Helpers for the CLI tests: run ``netpol-auditor`` in-process and compare with golden files.

Golden files live in tests/cli/golden/. After an intended output change, regenerate them with
``UPDATE_GOLDEN=1 .venv/bin/pytest tests/cli`` and review the diff.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
GOLDEN = HERE / "golden"
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(argv: Sequence[str], stdin: str | None = None) -> Result:
    """``netpol-auditor ARGV`` in this process (the console script's ``main``), capturing stdout and stderr."""
    from netpol_auditor.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        sys.stdin = saved_stdin
    return Result(code, out.getvalue(), err.getvalue())


def check_golden(name: str, actual: str) -> None:
    """Compare ``actual`` with tests/cli/golden/NAME (or rewrite it when UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"missing golden file {path}: run UPDATE_GOLDEN=1 .venv/bin/pytest tests/cli"
    expected = path.read_text()
    if actual != expected:
        import difflib

        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True), actual.splitlines(keepends=True), f"golden/{name}", "actual"
            )
        )
        pytest.fail(f"output differs from golden/{name} (UPDATE_GOLDEN=1 to accept):\n{diff}", pytrace=False)
