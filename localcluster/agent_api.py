"""A small JSON client for the node agent: kubeconfig (client certificate) auth, list/watch as dicts, patches.

The node agent needs only a handful of calls and wants plain dicts (no model round trips, explicit patch types),
so it talks to the API server with urllib3 directly.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
import yaml

__all__ = ["ApiClient", "ApiError", "pod_path"]

Obj = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def _material(entry: dict[str, Any], key: str, tmp: Path) -> str | None:
    """Path of a kubeconfig credential given either as `key` (a file) or `key-data` (base64 content)."""
    if entry.get(f"{key}-data"):
        path = tmp / key
        path.write_bytes(base64.b64decode(entry[f"{key}-data"]))
        return str(path)
    value = entry.get(key)
    return str(value) if value else None


class ApiClient:
    """Thread-safe (urllib3 pool) client built from a kubeconfig's current context."""

    def __init__(self, kubeconfig: Path, server: str | None = None) -> None:
        cfg = yaml.safe_load(kubeconfig.read_text())
        ctx_name = cfg.get("current-context") or cfg["contexts"][0]["name"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        self._tmp = Path(tempfile.mkdtemp(prefix="lc-agent-cred-"))
        self.server = (server or cluster["server"]).rstrip("/")
        self._headers = {"Accept": "application/json"}
        if user.get("token"):
            self._headers["Authorization"] = f"Bearer {user['token']}"
        # Credentials are loaded into an SSL context, then their temporary files removed: nothing is left in /tmp.
        tls = ssl.create_default_context(cafile=_material(cluster, "certificate-authority", self._tmp))
        cert_file = _material(user, "client-certificate", self._tmp)
        if cert_file:
            tls.load_cert_chain(cert_file, _material(user, "client-key", self._tmp))
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=32, block=False, ssl_context=tls)

    def request(self, method: str, path: str, body: Any = None, *, query: dict[str, Any] | None = None,
                content_type: str = "application/json", timeout: float = 30) -> Obj:
        url = self.server + path + (("?" + urlencode(query)) if query else "")
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        resp = self._pool.request(method, url, body=data, headers=headers, timeout=timeout, retries=False)
        text = resp.data.decode(errors="replace")
        if resp.status >= 300:
            raise ApiError(resp.status, text)
        return json.loads(text) if text else {}

    def get(self, path: str, **query: Any) -> Obj:
        return self.request("GET", path, query=query or None)

    def create(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Obj, kind: str = "strategic") -> Obj:
        ctype = {"strategic": "application/strategic-merge-patch+json", "merge": "application/merge-patch+json"}[kind]
        return self.request("PATCH", path, body, content_type=ctype)

    def delete(self, path: str, body: Obj | None = None) -> Obj:
        return self.request("DELETE", path, body)

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 300, **query: Any) -> Iterator[Obj]:
        """Yield watch events ({"type", "object"}) from `resource_version` until the server ends the watch."""
        q = {"watch": "1", "resourceVersion": resource_version, "timeoutSeconds": timeout_seconds,
             "allowWatchBookmarks": "true", **query}
        url = self.server + path + "?" + urlencode(q)
        resp = self._pool.request("GET", url, headers=self._headers, preload_content=False,
                                  timeout=urllib3.Timeout(connect=10, read=timeout_seconds + 30), retries=False)
        try:
            if resp.status >= 300:
                raise ApiError(resp.status, resp.read().decode(errors="replace"))
            buf = b""
            for chunk in resp.stream(65536):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release_conn()

    def list_and_watch(self, path: str, **query: Any) -> Iterator[tuple[str, Obj]]:
        """Informer-style stream: ("RELIST", {}), ("SYNC", obj) per listed object, ("SYNCED", {}), then watch events.

        Relists (after a 410 Gone, a dropped connection or a restarted API server) start again with "RELIST", so a
        consumer can drop whatever the new listing no longer has.
        """
        while True:
            try:
                yield "RELIST", {}
                listing = self.get(path, **query)
                for item in listing.get("items", []):
                    yield "SYNC", item
                rv = listing["metadata"]["resourceVersion"]
                yield "SYNCED", {}
                while True:
                    for ev in self.watch(path, rv, **query):
                        if ev["type"] == "ERROR":
                            raise ApiError(int(ev["object"].get("code", 500)), json.dumps(ev["object"]))
                        rv = ev["object"]["metadata"]["resourceVersion"]
                        if ev["type"] != "BOOKMARK":
                            yield ev["type"], ev["object"]
            except (ApiError, urllib3.exceptions.HTTPError, OSError, ValueError):
                time.sleep(1)  # 410 Gone, a restarted API server, a dropped connection: relist


def pod_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}" + (f"/{sub}" if sub else "")
