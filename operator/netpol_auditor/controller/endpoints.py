"""The operator's HTTP endpoints: ``/metrics`` (Prometheus text format), ``/readyz`` and, when enabled, the
read-only ``/reachability`` page (exporters/html_page.py).

Readiness means the index holds the cluster's initial listing (``200 ready``), or the replica is a healthy standby
(``200 standby``: it waits for the active replica to die and must not block rollouts); ``503`` otherwise. Liveness
is kopf's own ``--liveness`` endpoint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from netpol_auditor.exporters.html_page import content_security_policy

__all__ = ["MetricsServer"]


class MetricsServer:
    """Serves *registry* on /metrics, *readiness()* -> (ready, reason) on /readyz and, given *page*, what
    *page()* -> (status, HTML or reason) gives on /reachability."""

    def __init__(self, registry: CollectorRegistry, readiness: Callable[[], tuple[bool, str]], address: str,
                 port: int, page: Callable[[], Awaitable[tuple[int, str]]] | None = None) -> None:
        self._registry = registry
        self._readiness = readiness
        self._page = page
        self._address = address
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> int:
        app = web.Application()
        app.add_routes([web.get("/metrics", self._metrics), web.get("/readyz", self._readyz)])
        if self._page is not None:
            app.add_routes([web.get("/reachability", self._reachability)])
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._address, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        # ``?name[]=metric`` restricts the output, as prometheus_client's own exposition handlers do.
        names = request.query.getall("name[]", [])
        registry = self._registry.restricted_registry(names) if names else self._registry
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, reason = self._readiness()
        return web.Response(status=200 if ready else 503, text=reason + "\n")

    async def _reachability(self, request: web.Request) -> web.Response:
        assert self._page is not None
        status, body = await self._page()
        if status != 200:
            return web.Response(status=status, text=body + "\n", headers={"Cache-Control": "no-store"})
        return web.Response(text=body, content_type="text/html", charset="utf-8", headers={
            "Content-Security-Policy": content_security_policy(header=True),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        })
