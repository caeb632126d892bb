"""The page as a document: self-contained, a policy that forbids remote loads, user data carried inertly."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

from page_fixtures import DEMO, HOSTILE, HOSTILE_END, HOSTILE_IMG, analyze, hostile_cluster

from netpol_auditor.exporters.html_page import content_security_policy, render_html
from netpol_auditor.exporters.page_data import PageEndpoint, build_page_data
from netpol_auditor.model import PortProtocol


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_analyze_page_loads_nothing_from_anywhere(tmp_path: Path) -> None:
    page = analyze("-f", str(DEMO), "-o", "html")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<[a-z]+[^>]*\s(src|href|action)\s*=", page), "the page must not refer to any resource"
    assert "http://" not in page and "https://" not in page
    (csp,) = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page)
    directives = dict(d.strip().split(" ", 1) for d in csp.replace("&#x27;", "'").split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == directives["img-src"] == "'none'"
    # the inline style and script are allowed by their hashes, and nothing else is
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.S)
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert directives["style-src"] == _hash(style)
    assert directives["script-src"] == _hash(script)
    assert "'unsafe-inline'" not in csp
    assert "frame-ancestors" not in csp  # ignored in a meta element (and logged by browsers)
    assert "frame-ancestors 'none'" in content_security_policy(header=True)


def test_markup_in_names_travels_as_data() -> None:
    index = hostile_cluster()
    endpoints = [PageEndpoint(str(p.ref), p.namespace, (p.ref,)) for p in index.pods()]
    data = build_page_data(index, endpoints, endpoints, [PortProtocol(80)], mode="offline", generated=HOSTILE,
                           notes=[HOSTILE_IMG])
    page = render_html(data)
    for markup in (HOSTILE, HOSTILE_IMG, HOSTILE_END):
        assert markup not in page
    assert page.count("</script>") == 2  # the data element's and the script's own
    assert "<img" not in page
    (payload,) = re.findall(r'<script type="application/json" id="page-data">(.*?)</script>', page, re.S)
    assert json.loads(payload) == data
