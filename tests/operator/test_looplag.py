"""The event loop's lag is measured and a callback that holds the loop is reported."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from netpol_auditor.controller.looplag import LoopLagMonitor


def test_a_callback_holding_the_loop_shows_as_lag_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    monitor = LoopLagMonitor(registry, interval=0.02, warn_seconds=0.1)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(monitor.run(stop))
        await asyncio.sleep(0.1)
        time.sleep(0.3)  # what a heavy computation on the loop does
        await asyncio.sleep(0.1)
        stop.set()
        await task

    with caplog.at_level(logging.WARNING, logger="netpol_auditor.controller.looplag"):
        asyncio.run(main())
    assert 0.25 <= monitor.worst < 1.0
    over = registry.get_sample_value("netpol_auditor_event_loop_lag_seconds_count") - registry.get_sample_value(
        "netpol_auditor_event_loop_lag_seconds_bucket", {"le": "0.25"})
    assert over >= 1
    assert any("event loop was held" in r.getMessage() for r in caplog.records)
