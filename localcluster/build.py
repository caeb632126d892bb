"""Go builds for localcluster, cached per machine under ``cache_dir()/bin/<hash>/``.

* ``kube-apiserver`` and ``kube-controller-manager`` come from the wrapper module in ``localcluster/go/`` (it
  requires ``k8s.io/kubernetes`` and replaces each staging module by its published release, see
  ``localcluster/go/generate.py``). The cache key is the hash of that go.mod + go.sum.
* ``etcd``: the etcd server release k8s.io/kubernetes itself requires, from the wrapper module in
  ``localcluster/go/etcd/`` (written by the same generator); keyed by that go.mod + go.sum.
* ``kube-router`` is built with ``go install <module>/cmd/kube-router@<version>``: its go.mod has no replace
  directives, so its own go.mod/go.sum pin everything. The cache key is the hash of those two files.
* ``kube-network-policies`` likewise: ``go install sigs.k8s.io/kube-network-policies/cmd@<version>`` (no replace
  directives either; its main package is ``cmd``, so the binary is renamed), keyed by its go.mod + go.sum.

Only the first use on a machine pays for a build; ``binary(name)`` builds on demand. Standard library only, so
``localcluster/setup.sh`` can run it before any virtualenv exists: ``python3 -m localcluster.build [NAME...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from localcluster.paths import cache_dir

__all__ = ["ETCD_MODULE_DIR", "GO_MODULE_DIR", "KNP_MODULE", "KNP_VERSION", "KUBE_ROUTER_MODULE", "KUBE_ROUTER_VERSION",
           "NAMES", "binary", "build", "k8s_version", "module_dir", "required_version"]

GO_MODULE_DIR = Path(__file__).resolve().parent / "go"
KUBE_ROUTER_MODULE = "github.com/cloudnativelabs/kube-router/v2"
KUBE_ROUTER_VERSION = "v2.1.0"
KNP_MODULE = "sigs.k8s.io/kube-network-policies"
KNP_VERSION = "v0.8.0"
K8S_TOOLS = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
}
ETCD_MODULE_DIR = GO_MODULE_DIR / "etcd"
ETCD_PACKAGE = "go.etcd.io/etcd/server/v3"  # its main package is the etcd server
NAMES = (*K8S_TOOLS, "etcd", "kube-router", "kube-network-policies")
MIN_GO = (1, 24)


@dataclass(frozen=True)
class Target:
    """One cached build: which binaries it makes and the directory they land in."""

    names: tuple[str, ...]
    key: str

    @property
    def dir(self) -> Path:
        return cache_dir() / "bin" / self.key


def _hash(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def k8s_version() -> str:
    """The k8s.io/kubernetes version the wrapper module requires, e.g. ``v1.33.13``."""
    gomod = (GO_MODULE_DIR / "go.mod").read_text()
    m = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes (v\S+)\b", gomod, re.MULTILINE)
    if not m:
        raise RuntimeError("localcluster/go/go.mod does not require k8s.io/kubernetes")
    return m.group(1)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Reproducible and offline-safe: never rewrite go.mod/go.sum, no VCS stamping (the module cache has no VCS).
    env["GOFLAGS"] = " ".join(f for f in [env.get("GOFLAGS", ""), "-mod=readonly", "-buildvcs=false"] if f)
    env.setdefault("CGO_ENABLED", "0")
    return env


def _check_go() -> None:
    if shutil.which("go") is None:
        raise RuntimeError(f"localcluster needs Go >= {MIN_GO[0]}.{MIN_GO[1]} on PATH (k8s.io/kubernetes requires it)")
    out = subprocess.run(["go", "env", "GOVERSION"], check=True, capture_output=True, text=True).stdout.strip()
    m = re.match(r"go(\d+)\.(\d+)", out)
    if not m or (int(m.group(1)), int(m.group(2))) < MIN_GO:
        raise RuntimeError(f"localcluster needs Go >= {MIN_GO[0]}.{MIN_GO[1]}, found {out}")


def _module_info(path: str, version: str) -> dict[str, str]:
    out = subprocess.run(["go", "mod", "download", "-json", f"{path}@{version}"], check=True, capture_output=True,
                         text=True, cwd="/", env=_go_env()).stdout
    info: dict[str, str] = json.loads(out)
    return info


def module_dir(path: str, version: str) -> Path:
    """The source of a Go module in the module cache (downloaded if missing)."""
    return Path(_module_info(path, version)["Dir"])


def required_version(module: Path, path: str) -> str:
    """The version of ``path`` that the go.mod in ``module`` requires."""
    gomod = (module / "go.mod").read_text()
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(path)} (v\S+)", gomod, re.MULTILINE)
    if not m:
        raise RuntimeError(f"{module}/go.mod does not require {path}")
    return m.group(1)


def _k8s_target() -> Target:
    return Target(tuple(K8S_TOOLS), _hash(GO_MODULE_DIR / "go.mod", GO_MODULE_DIR / "go.sum"))


def _kube_router_target() -> Target:
    info = _module_info(KUBE_ROUTER_MODULE, KUBE_ROUTER_VERSION)
    src = Path(info["Dir"])
    return Target(("kube-router",), _hash(src / "go.mod", src / "go.sum"))


def _knp_target() -> Target:
    src = module_dir(KNP_MODULE, KNP_VERSION)
    return Target(("kube-network-policies",), _hash(src / "go.mod", src / "go.sum"))


def _etcd_target() -> Target:
    return Target(("etcd",), _hash(ETCD_MODULE_DIR / "go.mod", ETCD_MODULE_DIR / "go.sum"))


def _target(name: str) -> Target:
    if name in K8S_TOOLS:
        return _k8s_target()
    if name == "etcd":
        return _etcd_target()
    if name == "kube-router":
        return _kube_router_target()
    if name == "kube-network-policies":
        return _knp_target()
    raise ValueError(f"unknown binary {name!r}; known: {', '.join(NAMES)}")


def _k8s_ldflags() -> str:
    """The version variables upstream's hack/lib/version.sh sets, so clients see a real server version."""
    version = k8s_version()
    major, minor = version.lstrip("v").split(".")[:2]
    build_date = _module_info("k8s.io/kubernetes", version).get("Time", "1970-01-01T00:00:00Z")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        # The module proxy publishes no commit id, so gitCommit says so instead of inventing one.
        for var, value in (("gitVersion", version), ("gitMajor", major), ("gitMinor", minor),
                           ("gitCommit", "unknown"), ("gitTreeState", "clean"), ("buildDate", build_date)):
            flags.append(f"-X {pkg}.{var}={value}")
    return " ".join(flags)


@contextlib.contextmanager
def _locked(target: Target) -> Iterator[None]:
    """Serialise concurrent builds of one target (two test sessions, setup.sh and a test run)."""
    lock_dir = cache_dir() / "bin"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f".{target.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _complete(target: Target) -> bool:
    return all((target.dir / n).is_file() for n in target.names)


def _run_build(target: Target, out: Path, log: Path) -> None:
    env = _go_env()
    env["GOBIN"] = str(out)
    if target.names == ("kube-router",):
        ver = KUBE_ROUTER_VERSION
        pkg = "github.com/cloudnativelabs/kube-router/v2/pkg/version"
        ldflags = f"-s -w -X {pkg}.Version={ver} -X {pkg}.BuildDate=unknown"
        cmd = ["go", "install", "-trimpath", "-ldflags", ldflags, f"{KUBE_ROUTER_MODULE}/cmd/kube-router@{ver}"]
        cwd = Path("/")
    elif target.names == ("kube-network-policies",):
        cmd = ["go", "install", "-trimpath", "-ldflags", "-s -w", f"{KNP_MODULE}/cmd@{KNP_VERSION}"]
        cwd = Path("/")
    elif target.names == ("etcd",):
        cmd = ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"), ETCD_PACKAGE]
        cwd = ETCD_MODULE_DIR
    else:
        cmd = ["go", "build", "-trimpath", "-ldflags", _k8s_ldflags(), "-o", f"{out}/",
               *(K8S_TOOLS[n] for n in target.names)]
        cwd = GO_MODULE_DIR
    with open(log, "ab") as f:
        f.write(f"$ {' '.join(cmd)}\n".encode())
        f.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"go build failed ({proc.returncode}); see {log}")
    if target.names == ("kube-network-policies",):
        (out / "cmd").replace(out / "kube-network-policies")  # upstream's main package is <module>/cmd


def build(names: tuple[str, ...] | list[str] = NAMES, verbose: bool = False) -> dict[str, Path]:
    """Make sure each named binary is in the cache; returns name -> path."""
    _check_go()
    targets: dict[str, Target] = {}
    for name in names:
        t = _target(name)
        targets.setdefault(t.key, t)
    for t in targets.values():
        with _locked(t):
            if _complete(t):
                continue
            log = cache_dir() / "bin" / f"{t.key}.build.log"
            if verbose:
                print(f"localcluster: building {', '.join(t.names)} (log: {log})", file=sys.stderr, flush=True)
            start = time.monotonic()
            tmp = Path(tempfile.mkdtemp(prefix=f".{t.key}-", dir=cache_dir() / "bin"))
            try:
                _run_build(t, tmp, log)
                for n in t.names:
                    if not (tmp / n).is_file():
                        raise RuntimeError(f"build produced no {n}; see {log}")
                t.dir.mkdir(parents=True, exist_ok=True)
                for n in t.names:
                    (tmp / n).replace(t.dir / n)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if verbose:
                print(f"localcluster: built {', '.join(t.names)} in {time.monotonic() - start:.0f} s",
                      file=sys.stderr, flush=True)
    return {n: _target(n).dir / n for n in names}


def binary(name: str) -> Path:
    """Path of a cached binary (one of ``NAMES``); builds it if missing."""
    path = _target(name).dir / name
    if not path.is_file():
        build((name,), verbose=True)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m localcluster.build", description="Build localcluster's Go binaries.")
    ap.add_argument("names", nargs="*", default=list(NAMES), help=f"binaries to build (default: {' '.join(NAMES)})")
    args = ap.parse_args(argv)
    for name, path in build(args.names, verbose=True).items():
        print(f"{name}\t{path}\t{path.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
