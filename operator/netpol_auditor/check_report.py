"""Output of ``netpol-auditor check``: ``text`` for people, ``github`` workflow commands, and the JUnit cases.

Formatting only: the outcomes come from `netpol_auditor.expectation_check`. A violated expectation is reported with
what was expected, what the analysis says and why (the deciding policies and rules), in every format.

``github`` writes one ``::error`` workflow command per violated expectation, anchored at its line of the
expectations file, which GitHub Actions shows as an annotation on the run and on the pull request's diff (values
escaped as actions/toolkit's ``issueCommand`` does).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from typing import TextIO

from .expectation_check import Outcome
from .junit import Case, Failure

__all__ = ["FORMATS", "junit_cases", "render_check", "summary"]

FORMATS = ("text", "github")

SUITE = "netpol-auditor check"


def summary(outcomes: Sequence[Outcome]) -> str:
    violated = sum(1 for o in outcomes if not o.held)
    plural = "" if len(outcomes) == 1 else "s"
    return f"{len(outcomes)} expectation{plural}: {len(outcomes) - violated} held, {violated} violated"


def _headline(outcome: Outcome) -> str:
    """One line: the first pair not as expected, and how many more there are."""
    first, *rest = outcome.mismatches
    more = f" (and {len(rest)} more pair{'s' if len(rest) != 1 else ''})" if rest else ""
    return first.headline + more


def _details(outcome: Outcome) -> str:
    """Everything about a violated expectation: every mismatch with its explanation, its description, the counts."""
    e = outcome.expectation
    parts = [outcome.report()]
    if e.description.strip():
        parts.append(e.description.strip())
    parts.append(f"{e.title} ({e.where}): {outcome.counts}")
    return "\n".join(parts)


def render_text(outcomes: Sequence[Outcome], out: TextIO) -> None:
    for outcome in outcomes:
        e = outcome.expectation
        if outcome.held:
            out.write(f"ok   [{e.index}] {e.title} ({outcome.counts})\n")
            continue
        out.write(f"FAIL [{e.index}] {e.title} ({e.where}; {outcome.counts})\n")
        if e.description.strip():
            out.write(textwrap.indent(e.description.strip(), "  # ") + "\n")
        out.write(textwrap.indent(outcome.report(), "  ") + "\n")
    out.write(f"\n{summary(outcomes)}\n")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(outcomes: Sequence[Outcome], out: TextIO) -> None:
    for outcome in outcomes:
        if outcome.held:
            continue
        e = outcome.expectation
        place = f"file={_escape_property(e.source)},line={e.line}"
        title = _escape_property(f"{e.label} violated")
        out.write(f"::error {place},title={title}::{_escape_data(_details(outcome))}\n")
    out.write(f"{summary(outcomes)}\n")


def render_check(outcomes: Sequence[Outcome], fmt: str, out: TextIO) -> None:
    """Write ``outcomes`` to ``out`` in ``fmt`` (one of `FORMATS`)."""
    (render_github if fmt == "github" else render_text)(outcomes, out)


def junit_cases(outcomes: Sequence[Outcome]) -> list[Case]:
    """One case per expectation, named ``[INDEX] title``, its class the expectations file (no extension: JUnit
    readers split class names at dots); a violated one fails with the first mismatch as message."""
    cases = []
    for outcome in outcomes:
        e = outcome.expectation
        failure = None if outcome.held else Failure(_headline(outcome), _details(outcome), "violated")
        classname = os.path.splitext(os.path.normpath(e.source))[0].replace(".", "_")
        cases.append(Case(f"[{e.index}] {e.title}", classname, failure, e.source, e.line))
    return cases
