"""The served reachability page, rendered off the event loop and cached.

A request gets the latest rendering. When what the page shows has changed (the index revision, the prober's
published results) and the last rendering is older than the refresh interval, a new one is rendered in a worker
thread on copies taken on the event loop; until it is done, requests get the previous one (its time is on the page),
or wait for it when there is none yet. Nobody asking costs nothing: rendering happens only on requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable

__all__ = ["PageCache"]

logger = logging.getLogger(__name__)


class PageCache:
    """``key()`` says what the page would show now (cheap, on the loop); ``snapshot()`` copies what it needs (on
    the loop) and returns the rendering function that a worker thread runs."""

    def __init__(self, key: Callable[[], Hashable], snapshot: Callable[[], Callable[[], str]],
                 refresh_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._key = key
        self._snapshot = snapshot
        self._refresh = refresh_seconds
        self._clock = clock
        self._page: str | None = None
        self._page_key: Hashable = None
        self._rendered_at = 0.0
        self._pending: asyncio.Task[str] | None = None
        self.renders = 0

    async def get(self) -> str:
        key = self._key()
        page = self._page
        fresh = page is not None and (key == self._page_key or self._clock() - self._rendered_at < self._refresh)
        if fresh and page is not None:
            return page
        if self._pending is None:
            self._pending = asyncio.create_task(self._render(key, self._snapshot()), name="reachability page")
            # logged in _render; a failure nobody awaits (a previous page was served) is not an unretrieved one
            self._pending.add_done_callback(lambda t: t.cancelled() or t.exception())
        if page is not None:
            return page
        return await asyncio.shield(self._pending)

    async def _render(self, key: Hashable, render: Callable[[], str]) -> str:
        started = time.perf_counter()
        try:
            page = await asyncio.to_thread(render)
        except Exception:
            logger.exception("rendering the reachability page failed")
            raise
        finally:
            self._pending = None
        self._page, self._page_key, self._rendered_at = page, key, self._clock()
        self.renders += 1
        logger.info("reachability page rendered in %.2fs (%d bytes)", time.perf_counter() - started, len(page))
        return page
