"""A watch-fed cache of one kind of object, as client-go's informers keep: list once, then watch from the list's
resourceVersion; on 410 Gone (the version is too old) or a broken stream, list again. The prober reads its own pods,
Services and PodDisruptionBudgets from such caches instead of listing them every round, so its API calls grow with
the probes it makes, not with the cluster.

The list and the watch run in a daemon thread (the Kubernetes client is blocking); the event loop that owns the
cache is woken through ``changed`` on every update. A list the API server refuses for good (401/403/404: no RBAC,
or the API does not exist) marks the cache ``refused`` and is tried again only after ``refused_retry_seconds``; any
other failure is retried after a doubling backoff (client-go's reflector does the same), counted by ``on_error``.
Where the API server lets us list but not watch (an old Role without the watch verb), the cache lists every
``POLL_SECONDS`` instead, with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

__all__ = ["ListWatch"]

logger = logging.getLogger(__name__)

#: Server-side timeout of one watch request; the stream then ends and is resumed from the last resourceVersion.
WATCH_TIMEOUT_SECONDS = 60
_Watch: Any = watch.Watch  # untyped in the client

#: How often a cache that may list but not watch lists again, seconds.
POLL_SECONDS = 10.0
#: Backoff between failed list/watch attempts: first wait and cap, seconds.
BACKOFF = (0.5, 30.0)


class ListWatch:
    """Objects returned by ``list_fn`` (a ``list_*_for_all_namespaces`` of the Kubernetes client), kept current.

    ``objects``: (namespace, name) -> the object as a plain dict (the API's JSON form). Read it on the event loop
    that started the cache; the thread replaces entries, never mutates one in place.
    """

    def __init__(self, what: str, list_fn: Callable[..., Any], api: Any, *, label_selector: str = "",
                 on_error: Callable[[BaseException], None] | None = None,
                 refused_retry_seconds: float = 300.0) -> None:
        self.what = what
        self._list_fn = list_fn
        self._api = api
        self._selector = label_selector
        self._on_error = on_error
        self._refused_retry = refused_retry_seconds
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = False  # a list has succeeded at least once
        self.refused: ApiException | None = None  # the last list was refused for good (401/403/404)
        self.watch_refused: ApiException | None = None  # lists work but watching is forbidden: polled instead
        self.changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"watch {self.what}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.stop()
            resp = getattr(w, "_resp", None)  # end a read blocked on a quiet stream now, not at its timeout
            if resp is not None:
                with contextlib.suppress(Exception):
                    resp.close()

    async def wait_changed(self, timeout: float) -> None:
        """Until an update since the last call (at once if one came meanwhile), or ``timeout`` seconds. Read
        ``objects`` after it returns: an update is in ``objects`` before it is signalled."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout)
        self.changed.clear()

    # -- the thread --------------------------------------------------------------------------------------------

    def _notify(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self.changed.set)

    def _kwargs(self) -> dict[str, Any]:
        return {"label_selector": self._selector} if self._selector else {}

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            listed = False
            try:
                version = self._list()
                listed, failures = True, 0
                if self.watch_refused is not None:
                    self._stop.wait(POLL_SECONDS)  # may list but not watch: poll
                    continue
                self._watch_from(version)
            except ApiException as exc:
                if exc.status == 410:
                    continue  # the version is too old: list again (no failure)
                if exc.status in (401, 403) and listed:
                    self.watch_refused = exc
                    logger.warning("cannot watch %s (%s %s): listing them every %.0fs instead (grant the watch "
                                   "verb)", self.what, exc.status, exc.reason, POLL_SECONDS)
                    continue
                if exc.status in (401, 403, 404):
                    self.refused = exc
                    self._notify()
                    self._stop.wait(self._refused_retry)
                    continue
                failures += 1
                self._failed(exc, failures)
            except Exception as exc:  # a broken connection, a timeout: the reflector lists again
                failures += 1
                self._failed(exc, failures)

    def _failed(self, exc: BaseException, failures: int) -> None:
        if self._stop.is_set():
            return
        if self._on_error is not None:
            self._on_error(exc)
        delay = min(BACKOFF[0] * 2 ** (failures - 1), BACKOFF[1]) * (1 + random.random() / 4)
        log = logger.warning if failures <= 3 else logger.debug
        log("watching %s failed (%s); listing again in %.1fs", self.what, exc, delay)
        self._stop.wait(delay)

    def _list(self) -> str:
        listed = self._list_fn(**self._kwargs(), _preload_content=False)
        body = json.loads(listed.data)
        objects = {}
        for item in body.get("items") or []:
            meta = item.get("metadata") or {}
            objects[(meta.get("namespace") or "", meta.get("name") or "")] = item
        self.objects = objects
        self.synced, self.refused = True, None
        self._notify()
        return str((body.get("metadata") or {}).get("resourceVersion") or "")

    def _watch_from(self, version: str) -> None:
        """Apply watch events, resuming each ended stream from the last version seen, until stopped (or an error:
        410 Gone and the rest are raised, and the caller lists again)."""
        while not self._stop.is_set():
            self._watch = _Watch()
            started = time.monotonic()
            for event in self._watch.stream(self._list_fn, resource_version=version, allow_watch_bookmarks=True,
                                            timeout_seconds=WATCH_TIMEOUT_SECONDS, deserialize=False,
                                            **self._kwargs()):
                # an ERROR event (410 Gone included) is raised by the client as an ApiException
                kind, obj = event.get("type"), event.get("object") or {}
                meta = obj.get("metadata") or {}
                version = str(meta.get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                key = (meta.get("namespace") or "", meta.get("name") or "")
                if kind == "DELETED":
                    self.objects.pop(key, None)
                else:
                    self.objects[key] = obj
                self._notify()
            if time.monotonic() - started < 1 and not self._stop.is_set():
                self._stop.wait(1)  # a stream that ends at once (a server going away): do not spin
