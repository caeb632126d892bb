"""The truth-table corpus (tests/corpus: upstream e2e cases, guide patterns and the network-policy-api conformance
tests of cluster policies; tables derived from the upstream expectation calls) judged directly by the reference
evaluator and by the index, cell by cell. Cells a case lists as out of model must be judged so."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
sys.path.insert(0, str(CORPUS))

import yaml  # noqa: E402
from corpus_truthtable import Case, is_ip, load_case, model_path  # noqa: E402

from netpol_auditor.engine import Snapshot  # noqa: E402
from netpol_auditor.index import ReachabilityIndex  # noqa: E402
from netpol_auditor.manifest_files import iter_objects  # noqa: E402
from netpol_auditor.model import Endpoint, PodRef, PortProtocol  # noqa: E402

CASE_FILES = sorted(
    p for d in ("e2e", "guides", "conformance") for p in (CORPUS / d).glob("*.yaml") if p.name != "model.yaml"
)


def _identity(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")


def _manifests(case: Case) -> list[dict[str, Any]]:
    """The model's objects (if the case has one) with the case's objects replacing their namesakes."""
    path = model_path(CORPUS, case)
    model = [d for d in yaml.safe_load_all(path.read_text()) if d] if path is not None else []
    replaced = {_identity(o) for o in case.objects}
    return [o for o in model if _identity(o) not in replaced] + case.objects


def _endpoint(text: str) -> Endpoint:
    return text if is_ip(text) else PodRef.parse(text)


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_engine_and_index_reproduce_the_truth_table(path: Path) -> None:
    case: Case = load_case(path)
    objs = [o for doc in _manifests(case) for o in iter_objects(doc, str(path))]
    snapshot = Snapshot.from_objects(objs)
    index = ReachabilityIndex.from_objects(objs)
    wrong = []
    for expectation in case.ports:
        table = expectation.table or case.derived_table(expectation)
        port = PortProtocol.parse(expectation.port)
        for src, dst in table.compared_pairs():
            expected = table.get(src, dst)
            if expected is None:
                continue
            s, d = _endpoint(src), _endpoint(dst)
            reference = snapshot.verdict(s, d, port)
            if index.verdict(s, d, port) != reference:
                wrong.append(f"{port} {src} -> {dst}: the index and the reference evaluator disagree")
            elif (src, dst, expectation.port) in case.out_of_model:
                if not reference.out_of_model:
                    wrong.append(f"{port} {src} -> {dst}: listed out of model, judged {reference.allowed}")
            elif reference.allowed is not expected:
                wrong.append(f"{port} {src} -> {dst}: expected {expected}, got {reference.allowed}")
    assert not wrong, "\n".join(wrong)
