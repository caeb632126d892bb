"""The operator's /reachability page: off unless asked for; served read-only from the live index, with its
Content-Security-Policy as a header, and drawn by a real headless Chromium; it follows a policy change."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from operator_harness import OperatorProcess, fresh_namespaces, wait_for
from prometheus_client import CollectorRegistry
from tests.page.page_browser import PNG_MAGIC, cells, load, parse, screenshot

from netpol_auditor.controller.endpoints import MetricsServer

SEED = Path(__file__).with_name("manifests") / "three-tier.yaml"


def get(port: int, path: str = "/reachability", method: str = "GET") -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as rsp:
            return rsp.status, dict(rsp.headers), rsp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_without_the_option_there_is_no_page() -> None:
    async def main() -> None:
        server = MetricsServer(CollectorRegistry(), lambda: (True, "ready"), "127.0.0.1", 0)
        port = await server.start()
        try:
            status, _, _ = await asyncio.to_thread(get, port)
            assert status == 404
        finally:
            await server.stop()

    asyncio.run(main())


@pytest.mark.cluster
@pytest.mark.browser
def test_the_operator_serves_the_live_page(cluster: Any, admin: Any, processes: Any, tmp_path: Path) -> None:
    from test_live import make_seed_pods_run

    fresh_namespaces(cluster, "shop", "other")
    operator: OperatorProcess = processes(cluster.kubeconfig, "--standalone", "--reachability-page",
                                          "--reachability-page-refresh", "0", "--ports", "80/TCP,8080/TCP,5432/TCP",
                                          "--no-events")
    operator.wait_ready()
    cluster.kubectl("apply", "-f", str(SEED))
    make_seed_pods_run(cluster, admin)

    def page_with(text: str) -> str | None:
        status, _, body = get(operator.metrics_port)
        assert status == 200, body
        return body if text in body else None

    body = wait_for("the page to show the seed app", lambda: page_with('"shop/db[Pod]"'), timeout=60, interval=1)
    _, headers, _ = get(operator.metrics_port)
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert get(operator.metrics_port, method="POST")[0] == 405

    page = tmp_path / "live.html"
    page.write_text(body)
    loaded = load(page, "port=5432/TCP&src=shop/api%5BPod%5D&dst=shop/db%5BPod%5D", tmp_path)
    assert loaded.console == []
    root = parse(loaded.dom)
    assert root.find("body").attrs["data-state"] == "ready"
    grid = cells(root)
    assert "v-allowed" in grid[("shop/api[Pod]", "shop/db[Pod]")].classes
    assert "v-denied" in grid[("shop/web[Pod]", "shop/db[Pod]")].classes
    assert "v-allowed" in grid[("shop/db[Pod]", "other/debug[Pod]")].classes  # other has no policy
    assert "shop/db-from-api ingress[0]" in root.find("aside", id="detail").all_text
    assert screenshot(page, "port=5432/TCP", tmp_path / "live.png").startswith(PNG_MAGIC)

    # the page follows the index: without db-from-api, api -> db is denied
    cluster.kubectl("delete", "networkpolicy", "-n", "shop", "db-from-api")
    body = wait_for("the page to drop db-from-api", lambda: None if "db-from-api" in (page_with("") or "") else
                    page_with(""), timeout=60, interval=1)
    page.write_text(body)
    grid = cells(parse(load(page, "port=5432/TCP", tmp_path).dom))
    assert "v-denied" in grid[("shop/api[Pod]", "shop/db[Pod]")].classes


def _data_of(body: str) -> dict[str, Any]:
    start = body.index('<script type="application/json" id="page-data">') + len(
        '<script type="application/json" id="page-data">')
    return dict(json.loads(body[start:body.index("</script>", start)]))


@pytest.mark.cluster
@pytest.mark.browser
@pytest.mark.slow
def test_probe_results_colour_the_live_page_in_both_modes(cluster: Any, admin: Any, processes: Any,
                                                           tmp_path: Path) -> None:
    """kube-router enforcing: the probed cells are confirmed and none mismatch. Flannel (no enforcer on any node):
    the probed predicted-denied cells are mismatches."""
    from test_live import make_seed_pods_run

    fresh_namespaces(cluster, "shop", "other")
    cluster.kubectl("apply", "-f", str(SEED))
    make_seed_pods_run(cluster, admin)
    operator: OperatorProcess = processes(
        cluster.kubeconfig, "--standalone", "--reachability-page", "--reachability-page-refresh", "0", "--no-events",
        "--ports", "80/TCP,8080/TCP,5432/TCP", "--probe", "--probe-namespaces", "shop,other",
        "--probe-interval", "5")

    def statuses() -> set[str]:
        status, _, body = get(operator.metrics_port)
        return {o[3] for o in _data_of(body)["observations"]} if status == 200 else set()

    def look(name: str) -> dict[tuple[str, str], Any]:
        page = tmp_path / f"{name}.html"
        page.write_text(get(operator.metrics_port)[2])
        loaded = load(page, "port=5432/TCP", tmp_path)
        assert loaded.console == []
        root = parse(loaded.dom)
        assert root.find("body").attrs["data-state"] == "ready"
        assert screenshot(page, "", tmp_path / f"{name}.png").startswith(PNG_MAGIC)
        return cells(root)

    try:
        operator.wait_ready()
        wait_for("a probe cycle's results on the page", lambda: operator.gauge(
            "netpol_auditor_probe_cycle_last_completed_timestamp_seconds") and "confirmed" in statuses(),
            timeout=180, interval=2)
        assert "mismatch" not in statuses()
        grid = look("kube-router")
        probed = [td for td in grid.values() if "o-confirmed" in td.classes]
        assert probed and not [td for td in grid.values() if "o-mismatch" in td.classes]

        for node in ("node-1", "node-2"):
            cluster.fault("set-none", node)
        wait_for("mismatches on the page", lambda: "mismatch" in statuses(), timeout=240, interval=2)
        grid = look("flannel")
        mismatched = [(k, td) for k, td in grid.items() if "o-mismatch" in td.classes]
        assert mismatched
        assert all("v-denied" in td.classes and td.all_text == "D!" for _, td in mismatched), mismatched
    finally:
        cluster.fault("heal")
