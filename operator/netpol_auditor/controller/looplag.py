"""How late the operator's event loop runs its callbacks: ``netpol_auditor_event_loop_lag_seconds``.

Everything the operator does for the cluster — kopf's watch handlers feeding the index, the /metrics, /readyz and
liveness endpoints, the prober's rounds — shares one asyncio loop. A callback that holds it (a heavy computation
that should have gone to a worker thread) delays all of them; this monitor makes that visible. A ticker sleeps
``interval`` seconds and measures how much later than asked it woke up; each lateness is observed in a histogram
and a lateness over ``warn_seconds`` is logged (at most once a minute, with the worst since the last warning).
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry, Histogram

__all__ = ["LoopLagMonitor"]

logger = logging.getLogger(__name__)

#: Buckets around the budget: nothing on the loop may hold it for more than 100 ms.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LoopLagMonitor:
    def __init__(self, registry: CollectorRegistry, interval: float = 0.25, warn_seconds: float = 0.1,
                 warn_every_seconds: float = 60.0) -> None:
        self.interval = interval
        self.warn_seconds = warn_seconds
        self.warn_every_seconds = warn_every_seconds
        self.worst = 0.0  # the largest lateness seen so far
        self.lag = Histogram(
            "netpol_auditor_event_loop_lag_seconds",
            "How much later than scheduled the operator's event loop ran a timer (a callback held the loop).",
            buckets=LAG_BUCKETS, registry=registry,
        )

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        unreported = 0.0
        last_warning = -self.warn_every_seconds
        while not stop.is_set():
            started = loop.time()
            await asyncio.sleep(self.interval)
            now = loop.time()
            lag = max(0.0, now - started - self.interval)
            self.lag.observe(lag)
            self.worst = max(self.worst, lag)
            if lag > self.warn_seconds:
                unreported = max(unreported, lag)
            if unreported and now - last_warning >= self.warn_every_seconds:
                logger.warning("the event loop was held for %.3fs (budget %.3fs): watch events, metrics and probes "
                               "waited meanwhile", unreported, self.warn_seconds)
                unreported, last_warning = 0.0, now
