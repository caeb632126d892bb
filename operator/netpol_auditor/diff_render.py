"""Output formats of ``netpol-auditor diff``: table, json, md (for a pull-request comment).

Formatting only: what changed comes from a `ReachDiff`. ``json`` is the stable machine contract::

    {"ports": ["80/TCP"],
     "changes": [{"from": "ns/name[Kind]" | IP, "to": ..., "port": 80, "protocol": "TCP",
                  "change": "opened" | "closed" | "notJudged",
                  "before": {"allowed": false, "decidingPolicies": ["ns/name"], "admittedBy": [rule...],
                             "reason": null, "decision": "denied: ...", "explanation": "..." (only with --explain)},
                  "after": {...}}],
     "addedEndpoints": ["ns/name[Kind]"], "removedEndpoints": [...],
     "summary": {"opened": 1, "closed": 0, "notJudged": 0, "addedEndpoints": 1, "removedEndpoints": 0}}

A rule in ``admittedBy`` is ``{"namespace", "policy", "direction", "rule", "peer", "port"}`` as in ``explain -o json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TextIO

from .reach_diff import Change, PathChange, ReachDiff

__all__ = ["DIFF_FORMATS", "Explainer", "render_diff"]

DIFF_FORMATS = ("table", "json", "md")

#: The explanation of a changed path before and after, in words.
Explainer = Callable[[PathChange], tuple[str, str]]


def render_diff(diff: ReachDiff, fmt: str, out: TextIO, explain: Explainer | None = None) -> None:
    if fmt == "json":
        _json(diff, out, explain)
    elif fmt == "md":
        _markdown(diff, out, explain)
    elif fmt == "table":
        _table(diff, out, explain)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def _ports(diff: ReachDiff) -> str:
    return ", ".join(map(str, diff.ports))


def _headline(diff: ReachDiff) -> str:
    counts = diff.summary()
    paths = f"{counts['opened']} opened, {counts['closed']} closed"
    if counts["notJudged"]:
        paths += f", {counts['notJudged']} judged on one side only"
    endpoints = f"{counts['addedEndpoints']} added, {counts['removedEndpoints']} removed"
    return f"paths: {paths}; endpoints: {endpoints}; {diff.compared} endpoints compared on {_ports(diff)}"


def _json(diff: ReachDiff, out: TextIO, explain: Explainer | None) -> None:
    changes: list[dict[str, Any]] = []
    for change in diff.changes:
        item = change.to_dict()
        if explain is not None:
            item["before"]["explanation"], item["after"]["explanation"] = explain(change)
        changes.append(item)
    payload = {
        "ports": [str(p) for p in diff.ports],
        "changes": changes,
        "addedEndpoints": [str(e) for e in diff.added],
        "removedEndpoints": [str(e) for e in diff.removed],
        "summary": diff.summary(),
    }
    json.dump(payload, out, indent=2)
    out.write("\n")


def _table(diff: ReachDiff, out: TextIO, explain: Explainer | None) -> None:
    if diff.changes:
        rows = [["CHANGE", "FROM", "TO", "PORT", "BEFORE", "AFTER"]]
        rows += [
            [c.change.value, str(c.source), str(c.destination), str(c.port), str(c.before), str(c.after)]
            for c in diff.changes
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for i, row in enumerate(rows):
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]
            out.write("  ".join(cells).rstrip() + "\n")
            if explain is not None and i > 0:
                for side, text in zip(("before", "after"), explain(diff.changes[i - 1]), strict=True):
                    out.write(f"    {side}: " + text.replace("\n", "\n      ") + "\n")
        out.write("\n")
    for word, endpoints in (("added", diff.added), ("removed", diff.removed)):
        for endpoint in endpoints:
            out.write(f"{word} endpoint  {endpoint}\n")
    if diff.added or diff.removed:
        out.write("\n")
    if diff.empty:
        out.write("no change in reachability\n")
    out.write(_headline(diff) + "\n")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(diff: ReachDiff, out: TextIO, explain: Explainer | None) -> None:
    counts = diff.summary()
    if diff.empty:
        out.write("#### NetworkPolicy reachability: no change\n\n")
    else:
        paths = "path" if counts["opened"] == 1 else "paths"
        out.write(f"#### NetworkPolicy reachability: {counts['opened']} {paths} opened, {counts['closed']} closed\n\n")
    out.write(f"{diff.compared} endpoints compared on {', '.join(f'`{p}`' for p in diff.ports)}.\n")
    for word, endpoints in (("added", diff.added), ("removed", diff.removed)):
        if endpoints:
            out.write(f"Endpoints {word}: {', '.join(f'`{e}`' for e in endpoints)}.\n")
    if diff.changes:
        out.write("\n| change | from | to | port | before | after |\n| --- | --- | --- | --- | --- | --- |\n")
        for c in diff.changes:
            mark = f"**{c.change.value}**" if c.change is not Change.NOT_JUDGED else "judged on one side only"
            cells = [mark, f"`{c.source}`", f"`{c.destination}`", str(c.port), str(c.before), str(c.after)]
            out.write("| " + " | ".join(map(_cell, cells)) + " |\n")
    if explain is not None and diff.changes:
        out.write("\n<details><summary>Explanations</summary>\n\n")
        for c in diff.changes:
            before, after = explain(c)
            out.write(f"```\nbefore: {before}\n\nafter: {after}\n```\n\n")
        out.write("</details>\n")
