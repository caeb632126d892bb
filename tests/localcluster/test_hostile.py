"""A hostile cluster: real quota, LimitRange, ValidatingAdmissionPolicy, taints, API Priority and Fairness and a
mutating webhook (``localcluster.hostile``, ``localcluster.webhook``) produce the API server's real refusals."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from localcluster import controlplane


def _time_wait_port() -> int:
    """A port whose listener is closed while an accepted connection it closed first sits in TIME_WAIT. The listener
    sets SO_REUSEADDR as Go's net.Listen does for kube-apiserver (Linux lets a bind share a port with TIME_WAIT
    sockets only when both sides set it)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port: int = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end (127.0.0.1:port) goes to TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    deadline = time.monotonic() + 5
    while f"127.0.0.1:{port} " not in _time_wait_sockets() and time.monotonic() < deadline:
        time.sleep(0.01)
    return port


def _time_wait_sockets() -> str:
    return subprocess.run(["ss", "-Htn", "state", "time-wait"], capture_output=True, text=True).stdout + " "


def test_port_free_accepts_a_port_held_only_by_time_wait() -> None:
    port = _time_wait_port()
    assert f"127.0.0.1:{port} " in _time_wait_sockets()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the old check did: refused for the TIME_WAIT's minute
    assert controlplane.port_free(port)


def test_port_free_refuses_a_listening_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go listeners (kube-apiserver) do
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not controlplane.port_free(listener.getsockname()[1])
