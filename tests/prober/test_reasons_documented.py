"""The README's "Inconclusive paths" table lists exactly the reasons the prober can give, with their fixes."""

from __future__ import annotations

import re
from pathlib import Path

from netpol_auditor.prober.failures import FIXES

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_inconclusive_reason_is_documented_with_its_fix() -> None:
    section = README.read_text().split("## Inconclusive paths", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", section, flags=re.MULTILINE))
    assert rows == FIXES
