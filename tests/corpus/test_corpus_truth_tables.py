"""The truth-table corpus: upstream e2e NetworkPolicy tests, the patterns of the NetworkPolicy guides, and the
conformance tests of the cluster policies of policy.networking.k8s.io (kubernetes-sigs/network-policy-api).

Each case file (tests/corpus/{e2e,guides,conformance}/*.yaml) holds Kubernetes manifests and, per port, the expected
truth table derived from upstream-style ``reachability.Expect*`` (or ``kubernetes.PokeServer``) calls. The tables
are an independent oracle: they are checked against those calls here, and ``netpol-auditor analyze -o json`` must
reproduce them on every compared cell (loopback is ignored, as upstream ``ignoreLoopback`` does), except the cells a
case lists as out of model, which must be reported so (``allowed`` null with an out-of-model reason).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from corpus_truthtable import Case, TruthTable, format_side_by_side, load_case, model_path

CORPUS = Path(__file__).parent
CASE_FILES = sorted(
    p for d in ("e2e", "guides", "conformance") for p in (CORPUS / d).glob("*.yaml") if p.name != "model.yaml"
)


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
    path = model_path(CORPUS, case)
    model = [d for d in yaml.safe_load_all(path.read_text()) if d] if path is not None else []
    replaced = {_identity(o) for o in case.objects}
    return [o for o in model if _identity(o) not in replaced] + case.objects


def _analyze(case: Case, tmp_path: Path) -> dict[str, Any]:
    from netpol_auditor.cli import main

    manifest = tmp_path / f"{case.name}.yaml"
    manifest.write_text(yaml.safe_dump_all(_manifests(case), sort_keys=False))
    argv = ["analyze", "--matrix", "--per-pod", "-f", str(manifest), "-o", "json"]  # per pod and port, as upstream
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
        expected = TruthTable(items=items, values=dict(port.table.values))
        seen: set[str] = set()
        for verdict in result["verdicts"]:
            if verdict["port"] != int(number) or verdict["protocol"] != protocol:
                continue
            seen.update((verdict["from"], verdict["to"]))
            key = (verdict["from"], verdict["to"])
            if (*key, port.port) in case.out_of_model:
                # Upstream's expectation cannot be checked from manifests: the verdict must say so.
                assert verdict["allowed"] is None and verdict["reason"].startswith("out of model"), (case.path, verdict)
                expected.values.pop(key, None)
            elif verdict["allowed"] is not None:
                observed.values[key] = verdict["allowed"]
        # Cases over a model list only the endpoints their calls name; analyze judges them all.
        assert seen >= set(items) if case.default is None else seen == set(items), (
            f"{case.path}: {port.port}: analyze judged endpoints {sorted(seen)}, not {items}"
        )
        if observed.differences(expected):
            failures.append(f"== {case.path.name} {port.port}\n" + format_side_by_side(expected, observed))
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)
