"""The truth-table corpus: upstream e2e NetworkPolicy tests and the patterns of the NetworkPolicy guides.

Each case file (tests/corpus/{e2e,guides}/*.yaml) holds Kubernetes manifests and, per port, the expected truth table
derived from upstream-style ``reachability.Expect*`` calls. The tables are an independent oracle: they are checked
against those calls here, and ``netpol-auditor analyze -o json`` must reproduce them on every compared cell
(loopback is ignored, as upstream ``ignoreLoopback`` does).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from corpus_truthtable import Case, TruthTable, format_side_by_side, load_case

CORPUS = Path(__file__).parent
E2E_MODEL = CORPUS / "e2e" / "model.yaml"
CASE_FILES = sorted(p for d in ("e2e", "guides") for p in (CORPUS / d).glob("*.yaml") if p != E2E_MODEL)


def _case_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


@pytest.fixture(params=CASE_FILES, ids=_case_id)
def case(request: pytest.FixtureRequest) -> Case:
    return load_case(request.param)


def _identity(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")


def _manifests(case: Case) -> list[dict[str, Any]]:
    """The model's objects (if any) with the case's objects on top: a case object replaces the model's namesake,
    which is how the upstream tests' label updates (AddPodLabels, AddNamespaceLabel) are expressed."""
    model = [d for d in yaml.safe_load_all(E2E_MODEL.read_text()) if d] if case.model == "e2e" else []
    replaced = {_identity(o) for o in case.objects}
    return [o for o in model if _identity(o) not in replaced] + case.objects


def _analyze(case: Case, tmp_path: Path) -> dict[str, Any]:
    from netpol_auditor.cli import main

    manifest = tmp_path / f"{case.name}.yaml"
    manifest.write_text(yaml.safe_dump_all(_manifests(case), sort_keys=False))
    argv = ["analyze", "--per-pod", "-f", str(manifest), "-o", "json"]  # truth tables are per pod
    for port in case.ports:
        argv += ["--port", port.port]
    for address in case.externals:
        argv += ["--external", address]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 0, f"netpol-auditor {' '.join(argv)} exited {code}: {err.getvalue()}"
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def test_case_files_are_well_formed(case: Case) -> None:
    assert case.ports, f"{case.path}: no port expectations"
    assert case.source, f"{case.path}: cite the upstream test or guide"
    assert len(set(case.endpoints)) == len(case.endpoints)
    for port in case.ports:
        assert port.table is not None, f"{case.path}: {port.port} has no table (run corpus_truthtable.py fill)"
        assert port.table.items == [*case.endpoints, *case.externals], f"{case.path}: {port.port} table labels"


def test_tables_follow_the_expect_calls(case: Case) -> None:
    """The stored tables are exactly what the transcribed upstream-style expectation calls produce."""
    for port in case.ports:
        assert port.table is not None
        derived = case.derived_table(port)
        assert port.table.values == derived.values, (
            f"{case.path}: {port.port} table differs from its expect calls\n" + format_side_by_side(derived, port.table)
        )


def test_analyze_reproduces_the_truth_table(case: Case, tmp_path: Path) -> None:
    result = _analyze(case, tmp_path)
    items = [*case.endpoints, *case.externals]
    failures = []
    for port in case.ports:
        assert port.table is not None
        number, _, protocol = port.port.partition("/")
        observed = TruthTable(items=items)
        seen: set[str] = set()
        for verdict in result["verdicts"]:
            if verdict["port"] != int(number) or verdict["protocol"] != protocol:
                continue
            seen.update((verdict["from"], verdict["to"]))
            if verdict["allowed"] is not None:
                observed.values[(verdict["from"], verdict["to"])] = verdict["allowed"]
        assert seen == set(items), f"{case.path}: {port.port}: analyze judged endpoints {sorted(seen)}, not {items}"
        if observed.differences(port.table):
            failures.append(f"== {case.path.name} {port.port}\n" + format_side_by_side(port.table, observed))
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)
