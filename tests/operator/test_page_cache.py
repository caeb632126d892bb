"""The served page's cache: rendered in a worker thread, again only when what it shows changed and the refresh
interval passed; meanwhile requests get the previous page at once."""

from __future__ import annotations

import asyncio
import threading

from netpol_auditor.controller.page_cache import PageCache


def test_renders_off_the_loop_and_only_when_the_page_changed() -> None:
    async def main() -> None:
        state = {"key": 1, "now": 0.0}
        threads: list[str] = []
        gate = threading.Event()

        def snapshot() -> object:
            copied = state["key"]  # taken on the loop

            def render() -> str:
                threads.append(threading.current_thread().name)
                gate.wait(10)
                return f"page {copied}"

            return render

        cache = PageCache(lambda: state["key"], snapshot, refresh_seconds=10, clock=lambda: state["now"])
        gate.set()
        assert await cache.get() == "page 1"
        assert threads and threads[0] != threading.current_thread().name
        assert await cache.get() == "page 1" and cache.renders == 1  # nothing changed: no rendering
        state["key"] = 2
        assert await cache.get() == "page 1" and cache.renders == 1  # changed, but rendered 0 s ago
        state["now"] = 11.0
        gate.clear()
        assert await cache.get() == "page 1"  # the new one renders in the background; the old one is served
        assert await cache.get() == "page 1"  # one rendering at a time
        gate.set()
        for _ in range(100):
            if cache.renders == 2:
                break
            await asyncio.sleep(0.05)
        assert await cache.get() == "page 2" and cache.renders == 2

    asyncio.run(main())


def test_a_failed_rendering_is_reported_to_the_first_request_and_retried() -> None:
    async def main() -> None:
        calls = []

        def snapshot() -> object:
            def render() -> str:
                calls.append(1)
                if len(calls) == 1:
                    raise RuntimeError("boom")
                return "page"

            return render

        cache = PageCache(lambda: 1, snapshot, refresh_seconds=10)
        try:
            await cache.get()
        except RuntimeError as exc:
            assert str(exc) == "boom"
        else:
            raise AssertionError("the failure was swallowed")
        assert await cache.get() == "page"

    asyncio.run(main())
