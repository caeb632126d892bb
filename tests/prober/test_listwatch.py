"""The prober's watch-fed caches against the real API server: they follow creates, updates and deletes; an API
server restart (the watch breaks, the version may be gone) is survived by listing again; an identity that may list
but not watch polls instead, with a warning; one that may not list is refused, and says so."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, config

from localcluster import hostile
from netpol_auditor.prober.listwatch import ListWatch

pytestmark = [pytest.mark.cluster]

NS = "pr-listwatch"
LABEL = "netpol-auditor.io/listwatch-test"


def _configmap(name: str, value: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "labels": {LABEL: "yes"}}, "data": {"v": value}}


async def _until(cache: ListWatch, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{cache.what}: {sorted(cache.objects)} (synced {cache.synced})"
        await cache.wait_changed(1.0)


def _values(cache: ListWatch) -> dict[str, str]:
    return {name: obj["data"]["v"] for (_, name), obj in cache.objects.items()}


def test_a_cache_follows_the_api_server_through_a_restart(cluster: Any) -> None:
    cluster.kubectl("create", "namespace", NS, check=False)
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, _configmap("a", "1"))
    errors: list[BaseException] = []

    async def main() -> None:
        cache = ListWatch("configmaps", core.list_config_map_for_all_namespaces, api,
                          label_selector=f"{LABEL}=yes", on_error=errors.append)
        cache.start()
        try:
            await _until(cache, lambda: _values(cache) == {"a": "1"})
            await asyncio.to_thread(core.create_namespaced_config_map, NS, _configmap("b", "1"))
            await asyncio.to_thread(core.patch_namespaced_config_map, "a", NS, {"data": {"v": "2"}})
            await _until(cache, lambda: _values(cache) == {"a": "2", "b": "1"})
            await asyncio.to_thread(core.delete_namespaced_config_map, "b", NS)
            await _until(cache, lambda: _values(cache) == {"a": "2"})
            # the API server goes away for a while: the stream breaks, the cache lists again once it is back
            await asyncio.to_thread(hostile.restart_apiserver, cluster, 3.0)
            await asyncio.to_thread(core.patch_namespaced_config_map, "a", NS, {"data": {"v": "3"}})
            await _until(cache, lambda: _values(cache) == {"a": "3"}, timeout=90)
        finally:
            cache.stop()

    try:
        asyncio.run(main())
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", "--ignore-not-found")


def test_list_without_watch_polls_and_no_list_is_refused(cluster: Any, caplog: pytest.LogCaptureFixture) -> None:
    list_only = hostile.service_account_kubeconfig(
        cluster, "pr-listwatch-sa", "lister", [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}])
    try:
        api = config.new_client_from_config(config_file=str(list_only))
        core = client.CoreV1Api(api)

        async def main() -> tuple[ListWatch, ListWatch]:
            services = ListWatch("services", core.list_service_for_all_namespaces, api)
            nodes = ListWatch("nodes", core.list_node, api)
            services.start()
            nodes.start()
            try:
                await _until(services, lambda: services.watch_refused is not None)
                await _until(nodes, lambda: nodes.refused is not None)
            finally:
                services.stop()
                nodes.stop()
            return services, nodes

        with caplog.at_level(logging.WARNING, logger="netpol_auditor.prober.listwatch"):
            services, nodes = asyncio.run(main())
        assert services.synced and ("default", "kubernetes") in services.objects
        assert services.watch_refused is not None and services.watch_refused.status == 403
        assert any("cannot watch services" in r.getMessage() for r in caplog.records)
        assert not nodes.synced and nodes.refused is not None and nodes.refused.status == 403
    finally:
        hostile.delete_service_account(cluster, "pr-listwatch-sa", "lister")
