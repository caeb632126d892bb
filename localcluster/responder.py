"""Port responders: what answers on a pod's declared containerPorts.

A TCP (or SCTP) connection that is accepted receives one line, ``<identity> <proto>/<port>\\n``, then the responder
half-closes and drains until the client closes; each UDP datagram is answered with the same line. So a probe that
reads the line knows which pod (and port) it really reached — a connection that succeeds proves the path is open.

Sockets are opened inside a pod's network namespace by a short-lived thread that `setns(2)`s into it (a socket stays
in the namespace it was created in), so one process can serve every pod of a node from one selector loop.
Run standalone (``python -m localcluster.responder --tcp 80 --udp 53``) it serves in its own namespace.

An ``echo`` listener (a mesh sidecar's capture ports, agent_sidecar.py) sends nothing of its own: it echoes what the
client sends and closes when the client does.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import os
import selectors
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

__all__ = ["SCTP_UNSUPPORTED_REASON", "Listener", "ResponderLoop", "open_listener", "run_in_netns",
           "sctp_supported"]

CLONE_NEWNET = 0x40000000
SCTP_UNSUPPORTED_REASON = "kernel lacks SCTP (CONFIG_IP_SCTP): socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) fails"
PROTOCOLS = ("TCP", "UDP", "SCTP")
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def sctp_supported() -> bool:
    """Whether this kernel can open SCTP sockets (it is a build option; many VM kernels lack it)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError as exc:
        if exc.errno in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.EAFNOSUPPORT):
            return False
        raise
    return True


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _make_socket(proto: str, port: int, host: str) -> socket.socket:
    if proto == "UDP":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    elif proto == "TCP":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    elif proto == "SCTP":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    else:
        raise ValueError(f"unknown protocol {proto!r}")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    if proto != "UDP":
        sock.listen(128)
    sock.setblocking(False)
    return sock


def run_in_netns(netns_path: str, fn: Callable[[], T], name: str = "setns") -> T:
    """``fn()`` in a short-lived thread that has entered the network namespace at `netns_path`: sockets it makes
    (listening or connecting) live in that namespace."""
    result: list[Any] = []

    def worker() -> None:
        try:
            _setns(netns_path)  # affects this thread only; it ends right after
            result.append(fn())
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=worker, name=name)
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return cast(T, result[0])


def open_listener(proto: str, port: int, netns_path: str | None = None, host: str = "0.0.0.0") -> socket.socket:
    """Open a listening socket for `proto`/`port`, inside the namespace at `netns_path` if given."""
    if netns_path is None:
        return _make_socket(proto, port, host)
    return run_in_netns(netns_path, lambda: _make_socket(proto, port, host), name=f"setns-{port}")


@dataclass
class Listener:
    """One listening socket and what it answers."""

    sock: socket.socket
    proto: str
    port: int
    identity: str
    echo: bool = False

    @property
    def reply(self) -> bytes:
        return f"{self.identity} {self.proto.lower()}/{self.port}\n".encode()


def _echo_stream(conn: socket.socket) -> None:
    try:
        conn.setblocking(True)
        conn.settimeout(30)
        while data := conn.recv(4096):
            conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()


def _answer_stream(conn: socket.socket, reply: bytes) -> None:
    try:
        conn.setblocking(True)
        conn.settimeout(5)
        conn.sendall(reply)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):  # drain so the close is a FIN, not an RST that could eat our reply
            pass
    except OSError:
        pass
    finally:
        conn.close()


class ResponderLoop:
    """A selector loop answering on many listeners (groups keyed by owner, e.g. one pod)."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._groups: dict[str, list[Listener]] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopped = False
        self._thread: threading.Thread | None = None

    def add(self, key: str, listeners: Iterable[Listener]) -> None:
        with self._lock:
            group = self._groups.setdefault(key, [])
            for lst in listeners:
                group.append(lst)
                self._sel.register(lst.sock, selectors.EVENT_READ, lst)
        self._wake()

    def remove(self, key: str) -> None:
        with self._lock:
            for lst in self._groups.pop(key, []):
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(lst.sock)
                lst.sock.close()
        self._wake()

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._groups)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="responders", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self._wake()
        for key in self.keys():
            self.remove(key)

    def run(self) -> None:
        while not self._stopped:
            for sk, _ in self._sel.select(timeout=1.0):
                lst = sk.data
                if lst is None:
                    try:
                        while self._wake_r.recv(512):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                self._handle(lst)

    def _handle(self, lst: Listener) -> None:
        try:
            if lst.proto == "UDP":
                while True:
                    _, addr = lst.sock.recvfrom(65535)
                    lst.sock.sendto(lst.reply, addr)
            else:
                while True:
                    conn, _ = lst.sock.accept()
                    if lst.echo:
                        threading.Thread(target=_echo_stream, args=(conn,), daemon=True).start()
                    else:
                        threading.Thread(target=_answer_stream, args=(conn, lst.reply), daemon=True).start()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass  # socket closed under us by remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Answer on TCP/UDP/SCTP ports with an identity line.")
    parser.add_argument("--identity", default=socket.gethostname())
    for proto in PROTOCOLS:
        parser.add_argument(f"--{proto.lower()}", type=int, action="append", default=[], metavar="PORT")
    args = parser.parse_args(argv)
    loop = ResponderLoop()
    listeners = []
    for proto in PROTOCOLS:
        for port in getattr(args, proto.lower()):
            if proto == "SCTP" and not sctp_supported():
                print(f"responder: skipping sctp/{port}: {SCTP_UNSUPPORTED_REASON}", flush=True)
                continue
            listeners.append(Listener(open_listener(proto, port), proto, port, args.identity))
    loop.add("main", listeners)
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    print(f"responder: {args.identity} serving {[(lst.proto, lst.port) for lst in listeners]}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
