"""The reachability page in a real headless Chromium: it loads with no console message, the matrix shows the
verdicts ``analyze -o json`` gives, the URL fragment filters and opens a cell, probe results colour the cells,
names made of markup stay text, and a large cluster opens on the namespace view. Screenshots are saved in the
test's tmp dir."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from page_browser import PNG_MAGIC, Node, cells, load, parse, screenshot
from page_fixtures import DEMO, HOSTILE, HOSTILE_END, HOSTILE_IMG, analyze, hostile_cluster, many_workloads

from netpol_auditor.exporters.html_page import render_html
from netpol_auditor.exporters.page_data import Observation, ObservedStatus, PageEndpoint, build_page_data
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifest_files import read_manifests
from netpol_auditor.model import Pod, PortProtocol

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    page = tmp_path_factory.mktemp("page") / "demo.html"
    page.write_text(analyze("-f", str(DEMO), "-o", "html"))
    return page


@pytest.fixture(scope="module")
def demo_verdicts() -> dict[tuple[str, str, str], bool | None]:
    found = json.loads(analyze("--matrix", "-f", str(DEMO), "-o", "json"))  # per port, as the page shows them
    return {(v["from"], v["to"], f"{v['port']}/{v['protocol']}"): v["allowed"] for v in found["verdicts"]}


def ready(root: Node) -> Node:
    body = root.find("body")
    assert body.attrs.get("data-state") == "ready", root.find("div", id="errors").all_text
    assert "data-errors" not in body.attrs
    return body


def test_the_analyze_page_loads_without_errors_and_shows_the_verdicts(
        demo_page: Path, demo_verdicts: dict[tuple[str, str, str], bool | None], tmp_path: Path) -> None:
    ports = sorted({port for _, _, port in demo_verdicts})
    for port in ports:
        loaded = load(demo_page, f"port={port}", tmp_path)
        assert loaded.console == [], loaded.console
        root = parse(loaded.dom)
        assert ready(root).attrs["data-view"] == "workloads"
        grid = cells(root)
        assert len(grid) == 36  # the demo's six pods, every ordered pair
        for (src, dst), td in grid.items():
            allowed = demo_verdicts.get((src, dst, port))
            expected = ("v-none", "\u2013") if src == dst else ("v-allowed", "A") if allowed else ("v-denied", "D")
            assert (expected[0] in td.classes, td.all_text) == (True, expected[1]), (src, dst, port)
            assert td.attrs["title"].startswith(f"{src} → {dst}: ")
    png = screenshot(demo_page, "src=outside/client[Pod]&dst=shop/web[Pod]", tmp_path / "demo.png")
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000


def test_the_fragment_filters_by_namespace_and_explains_a_cell(demo_page: Path, tmp_path: Path) -> None:
    loaded = load(demo_page, "from=outside&to=shop&src=outside/client%5BPod%5D&dst=shop/web%5BPod%5D", tmp_path)
    assert loaded.console == []
    root = parse(loaded.dom)
    ready(root)
    grid = cells(root)
    assert {src for src, _ in grid} == {"outside/client[Pod]"}
    assert {dst for _, dst in grid} == {"shop/api[Pod]", "shop/db[Pod]", "shop/web[Pod]"}
    assert "selected" in grid[("outside/client[Pod]", "shop/web[Pod]")].classes
    detail = root.find("aside", id="detail")
    assert detail.attrs["data-src"] == "outside/client[Pod]" and detail.attrs["data-dst"] == "shop/web[Pod]"
    sections = {s.attrs["data-port"]: s.all_text for s in detail.find_all("section")}
    assert "80/TCP: allowed" in sections["80/TCP"]
    assert "allowed by shop/web ingress[0] (any from, ports[0])" in sections["80/TCP"]
    assert "9090/TCP: denied" in sections["9090/TCP"]
    assert "shop/default-deny-ingress" in sections["9090/TCP"]
    # the namespace view, one cell per namespace pair
    root = parse(load(demo_page, "view=namespaces", tmp_path).dom)
    assert ready(root).attrs["data-view"] == "namespaces"
    assert len(root.find("table", id="matrix").find_all("td")) == 16


def _demo_index() -> tuple[ReachabilityIndex, list[PageEndpoint]]:
    objects = read_manifests([str(DEMO)]).objects
    running = [dataclasses.replace(o, phase="Running", pod_ips=(f"10.0.0.{i + 1}",), planned=False)
               if isinstance(o, Pod) else o for i, o in enumerate(objects)]
    index = ReachabilityIndex.from_objects(running)
    endpoints = [PageEndpoint(str(p.ref), p.namespace, (p.ref,), (str(p.ref),)) for p in index.pods()]
    return index, endpoints


@pytest.mark.parametrize("mode", ["kube-router", "flannel"])
def test_probe_results_colour_the_cells(mode: str, tmp_path: Path) -> None:
    """As the prober reports them: with an enforcing CNI every probed path is confirmed; with Flannel (no
    enforcement) the predicted-denied paths connect: mismatches. One path could not be probed either way."""
    index, endpoints = _demo_index()
    port = PortProtocol(80)
    observations = []
    for src in endpoints:
        for dst in endpoints:
            if src is dst:
                continue
            allowed = index.verdict(src.members[0], dst.members[0], port).allowed
            status = ObservedStatus.CONFIRMED if allowed or mode == "kube-router" else ObservedStatus.MISMATCH
            reason = "" if status is ObservedStatus.CONFIRMED else "unexpectedly allowed: probe connected"
            if (src.name, dst.name) == ("shop/web", "shop/api"):
                status, reason = ObservedStatus.INCONCLUSIVE, "pod_timeout"
            observations.append(Observation(src.name, dst.name, port, status, reason))
    data = build_page_data(index, endpoints, endpoints, [port], mode="live", generated="now",
                           observations=observations)
    page = tmp_path / f"{mode}.html"
    page.write_text(render_html(data))
    loaded = load(page, "src=shop/web&dst=shop/api", tmp_path)
    assert loaded.console == []
    root = parse(loaded.dom)
    ready(root)
    grid = cells(root)
    assert grid[("outside/client", "shop/web")].all_text == "A✓"
    assert {"v-allowed", "o-confirmed"} <= grid[("outside/client", "shop/web")].classes
    denied = grid[("outside/client", "shop/db")]
    if mode == "kube-router":
        assert (denied.all_text, {"v-denied", "o-confirmed"} <= denied.classes) == ("D✓", True)
    else:
        assert (denied.all_text, {"v-denied", "o-mismatch"} <= denied.classes) == ("D!", True)
        assert "mismatch" in denied.attrs["title"]
    assert grid[("shop/web", "shop/api")].all_text == "D?"
    assert "pod_timeout" in root.find("aside", id="detail").all_text
    png = screenshot(page, "", tmp_path / f"{mode}.png")
    assert png.startswith(PNG_MAGIC)


def test_markup_in_names_stays_text(tmp_path: Path) -> None:
    index = hostile_cluster()
    endpoints = [PageEndpoint(str(p.ref), p.namespace, (p.ref,), (str(p.ref),)) for p in index.pods()]
    (web,) = [e for e in endpoints if "web" in e.name]
    (db,) = [e for e in endpoints if "db" in e.name]
    observations = [Observation(web.name, db.name, PortProtocol(80), ObservedStatus.INCONCLUSIVE, HOSTILE_IMG)]
    data = build_page_data(index, endpoints, endpoints, [PortProtocol(80)], mode="live", generated=HOSTILE,
                           notes=[HOSTILE_END], observations=observations)
    document = render_html(data)
    from urllib.parse import quote

    fragment = f"src={quote(web.name, safe='')}&dst={quote(db.name, safe='')}"
    # with and without the Content-Security-Policy: the escaping alone keeps the markup inert
    for name, text in (("with-csp", document), ("without-csp", _without_csp(document))):
        page = tmp_path / f"{name}.html"
        page.write_text(text)
        loaded = load(page, fragment, tmp_path)
        assert loaded.console == [], (name, loaded.console)
        root = parse(loaded.dom)
        body = ready(root)
        assert "data-pwned" not in body.attrs, name
        assert not root.find_all("img"), name
        detail = root.find("aside", id="detail").all_text
        assert f"{web.name} → {db.name}" in detail and HOSTILE_IMG in detail
        assert HOSTILE_END in root.find("ul", id="notes").all_text


def _without_csp(document: str) -> str:
    start = document.index('<meta http-equiv="Content-Security-Policy"')
    return document[:start] + document[document.index(">", start) + 1:]


def test_a_large_cluster_opens_on_the_namespace_view(tmp_path: Path) -> None:
    index = many_workloads(namespaces=30, per_namespace=20)  # 600 workloads
    endpoints = [PageEndpoint(str(p.ref), p.namespace, (p.ref,)) for p in index.pods()]
    data = build_page_data(index, endpoints, endpoints, [PortProtocol(9090)], mode="live", generated="now")
    page = tmp_path / "large.html"
    page.write_text(render_html(data))
    assert page.stat().st_size < 1_000_000
    root = parse(load(page, "", tmp_path).dom)
    assert ready(root).attrs["data-view"] == "namespaces"
    tds = root.find("table", id="matrix").find_all("td")
    assert len(tds) == 30 * 30
    # ns-00's scraper reaches every namespace on 9090; within a namespace everything is allowed
    same = next(td for td in tds if td.attrs["data-from-ns"] == td.attrs["data-to-ns"] == "ns-05")
    assert "v-allowed" in same.classes
    across = next(td for td in tds if (td.attrs["data-from-ns"], td.attrs["data-to-ns"]) == ("ns-00", "ns-05"))
    assert (across.all_text, "v-partial" in across.classes) == ("20/400", True)
    root = parse(load(page, "from=ns-00&to=ns-05", tmp_path).dom)
    assert ready(root).attrs["data-view"] == "workloads"
    assert len(cells(root)) == 20 * 20
    png = screenshot(page, "", tmp_path / "large.png")
    assert png.startswith(PNG_MAGIC)
