"""Shared fixtures. ``cluster``: the real local cluster (localcluster/), started once per test session.

Environment knobs:
  LOCALCLUSTER_TEST_NODES     simulated nodes (default 2)
  LOCALCLUSTER_TEST_ENFORCER  kube-router (default), kube-network-policies or none
  LOCALCLUSTER_TEST_REUSE     state dir of an already running cluster to use as is (never torn down by tests)

Each session gets its own state dir (/tmp/lc-test-<pid>; other clusters a session starts use
/tmp/lc-test-<pid>-<what>) and free ports, so it runs alongside a dev cluster and
other sessions; clusters left by sessions that died are removed first.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # localcluster/ is test infrastructure at the top level, never installed

from localcluster import cluster as lc  # noqa: E402

TEST_STATE_PREFIX = "lc-test-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_sessions(tmp: Path = Path("/tmp")) -> None:
    """``down`` every test cluster whose pytest process is gone (a crashed or killed session)."""
    for state in tmp.glob(f"{TEST_STATE_PREFIX}*"):
        owner = re.match(r"\d+", state.name.removeprefix(TEST_STATE_PREFIX))  # lc-test-<pid>[-what]
        if owner and not _pid_alive(int(owner.group())):
            lc.down(state)


def test_state_dir(tag: str = "") -> Path:
    return Path("/tmp") / f"{TEST_STATE_PREFIX}{os.getpid()}{tag}"


def _print_log_tails(state: Path, lines: int = 30) -> None:
    for log in sorted((state / "logs").glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- {log} (last {len(tail)} lines)", *tail, sep="\n", file=sys.stderr)


@pytest.fixture(scope="session")
def cluster() -> Iterator[lc.Cluster]:
    """A running cluster: ``.kubeconfig``, ``.kubectl(*args)``, ``.api_client()``, ``.fault(*args)``, ``.state``."""
    reuse = os.environ.get("LOCALCLUSTER_TEST_REUSE")
    if reuse:
        c = lc.Cluster.load(Path(reuse).resolve())
        if c is None:
            pytest.fail(f"LOCALCLUSTER_TEST_REUSE={reuse}: no cluster there (run `python -m localcluster up`)")
        yield c
        return
    remove_dead_sessions()
    cfg = lc.ClusterConfig(state=test_state_dir(), api_port=0,
                           nodes=int(os.environ.get("LOCALCLUSTER_TEST_NODES", "2")),
                           enforcer=os.environ.get("LOCALCLUSTER_TEST_ENFORCER", "kube-router"))
    try:
        c = lc.up(cfg)
    except BaseException:
        _print_log_tails(cfg.state)  # `down` removes the logs; CI output keeps what went wrong
        lc.down(cfg.state)
        raise
    try:
        yield c
    finally:
        lc.down(cfg.state)


#: Test directories, longest-running first: `make test` hands whole files to two workers (pytest-xdist
#: --dist loadfile) in collection order, so the files that wait on the cluster for minutes start first and the
#: quick ones fill the gaps at the end.
LONGEST_FIRST = ("prober", "localcluster", "operator", "demo", "monitoring", "chart", "page", "alerts", "image")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        parts = item.path.relative_to(ROOT / "tests").parts
        return LONGEST_FIRST.index(parts[0]) if len(parts) > 1 and parts[0] in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order

