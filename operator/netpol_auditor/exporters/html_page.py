"""The reachability page: one self-contained HTML document (`exporters/page_data.py` data, inline CSS and script).

Nothing is loaded from anywhere: the Content-Security-Policy allows only the page's own style and script (by hash)
and no fetch, image, font or frame, so a page opened from a CI artefact or served by the operator never reaches
out. Names, labels and reasons are user data: the data travels as JSON in a non-executed ``<script
type="application/json">`` element with ``<``, ``>`` and ``&`` escaped, the script writes it into the DOM as text
only (never as markup), and the few server-written strings are HTML-escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["content_security_policy", "render_html"]

_ASSETS = "page_assets"

#: (css class, mark, meaning) in the order of the legend; page.js uses the same classes and marks.
LEGEND = (
    ("v-allowed", "A", "allowed by the policies (predicted)"),
    ("v-denied", "D", "denied by the policies (predicted)"),
    ("v-partial", "a/n", "allowed on a of n ports"),
    ("v-mixed", "±", "the endpoints' pods are judged differently (see the details)"),
    ("v-none", "\u2013", "not judged (the endpoint itself, host network, address to address), or not known"),
    ("o-confirmed", "✓", "a probe confirmed the prediction"),
    ("o-mismatch", "!", "a probe contradicted the prediction: a mismatch"),
    ("o-inconclusive", "?", "probed, but the result proves nothing (reason in the details)"),
)


@cache
def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(_ASSETS, name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy(header: bool = False) -> str:
    """The page's policy: its own inline style and script (by hash), nothing else. ``header``: as the served page
    sends it, with ``frame-ancestors`` (which browsers ignore in a ``<meta>`` element)."""
    policy = (
        f"default-src 'none'; script-src {_sha256(_asset('page.js'))}; style-src {_sha256(_asset('page.css'))}; "
        "img-src 'none'; connect-src 'none'; font-src 'none'; frame-src 'none'; base-uri 'none'; form-action 'none'"
    )
    return policy + "; frame-ancestors 'none'" if header else policy


def _json_for_script(data: Any) -> str:
    """JSON that cannot end its ``<script>`` element nor open markup: ``<``, ``>``, ``&`` as \\u escapes."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _legend() -> str:
    items = "".join(
        f'<li><span class="swatch {cls}" aria-hidden="true">{html.escape(mark)}</span> {html.escape(text)}</li>'
        for cls, mark, text in LEGEND
    )
    return f'<ul class="legend">{items}</ul>'


def _meta_text(data: dict[str, Any]) -> str:
    source = "the operator's live index" if data["mode"] == "live" else "netpol-auditor analyze"
    probes = "predictions and probe results" if data["probed"] else "predictions only (nothing was probed)"
    rows, cols = len(data["rows"]), len(data["cols"])
    return (f"From {source}, {html.escape(data['generated'])}: {probes}; {rows} \u00d7 {cols} endpoints on "
            f"{len(data['ports'])} ports.")


def render_html(data: dict[str, Any], title: str = "NetworkPolicy reachability") -> str:
    """The whole document for ``data`` (`page_data.build_page_data`)."""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.get("notes", ()))
    csp = html.escape(content_security_policy(), quote=True)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_asset("page.css")}</style>
</head>
<body data-state="loading">
<header>
<h1>{html.escape(title)}</h1>
<p id="meta">{_meta_text(data)}</p>
{f'<ul id="notes" class="notes">{notes}</ul>' if notes else ""}
</header>
<noscript><p class="problem">The matrix is drawn by the page's script: allow JavaScript for this file.</p></noscript>
<div id="errors" class="problem" role="alert" hidden></div>
<form id="controls" aria-label="Filters" autocomplete="off">
<label>From namespace <select id="from-ns"></select></label>
<label>To namespace <select id="to-ns"></select></label>
<label>Port <select id="port"></select></label>
<label>View <select id="view"></select></label>
</form>
<details id="legend-box" open><summary>Legend</summary>
<p>Rows are sources (from), columns destinations (to). Each cell shows a mark and a colour; hover for a summary,
click (or Enter) for the deciding policies and rules per port.</p>
{_legend()}
</details>
<p id="summary" role="status" aria-live="polite"></p>
<main>
<div id="matrix-wrap"><table id="matrix"></table></div>
<aside id="detail" aria-live="polite" aria-label="Details of the selected cell"><p class="hint">Select a cell to
see why.</p></aside>
</main>
<script type="application/json" id="page-data">{_json_for_script(data)}</script>
<script>{_asset("page.js")}</script>
</body>
</html>
"""
