"""The operator image's Dockerfile: linted with the real hadolint, and the wheel it installs is the tested code.

No container engine runs here, so the image itself is not built: the test builds the wheel exactly as the
Dockerfile's first stage does (`pip wheel --no-deps .` on the build context .dockerignore leaves) and compares it
with the package the test suite imports.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import netpol_auditor

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "requirements.lock"
HADOLINT = Path(sys.executable).parent / "hadolint"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions(DOCKERFILE.read_text()):
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _global_args() -> dict[str, str]:
    args = {}
    for word, rest in _instructions(DOCKERFILE.read_text()):
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    return args


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; `!` re-includes; a directory match covers it."""
    ignored = False
    parts = rel.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        regex = fnmatch.translate(pat).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def build_context(dest: Path) -> Path:
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".venv/")) and not _ignored(rel, patterns):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel the Dockerfile's build stage makes, built the same way from the same context."""
    build_stage = _stages()[0]
    runs = [rest for word, rest in build_stage if word == "RUN"]
    assert any(re.match(r"pip wheel --no-deps --wheel-dir /wheels \.(\s|$)", r) for r in runs), runs
    ctx = build_context(tmp_path_factory.mktemp("context"))
    out = tmp_path_factory.mktemp("wheels")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), "."],
                          cwd=ctx, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob("netpol_auditor-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_hadolint_passes() -> None:
    assert HADOLINT.is_file(), "hadolint comes with the test extra (pip install -e .[test])"
    proc = subprocess.run([str(HADOLINT), "--format", "json", str(DOCKERFILE)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout or "[]") == [], proc.stdout + proc.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install kopf\nUSER root\n")
    proc = subprocess.run([str(HADOLINT), "--format", "json", str(bad)], capture_output=True, text=True, timeout=60)
    codes = {finding["code"] for finding in json.loads(proc.stdout)}
    assert proc.returncode != 0 and {"DL3007", "DL3013"} <= codes, codes


def test_multi_stage_pinned_slim_base_non_root_entrypoint() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: the wheel is built apart from the runtime image"
    base = _global_args()["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?@sha256:[0-9a-f]{64}", base), \
        f"base not pinned to a slim version and its digest: {base}"
    final = stages[-1]
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")
    assert not any(word == "RUN" for word, _ in final), "the runtime stage runs nothing: no shell needed"
    copies = [rest for word, rest in final if word == "COPY"]
    assert copies == ["--from=build /opt/netpol-auditor /opt/netpol-auditor"]
    user = [rest for word, rest in final if word == "USER"]
    assert user and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user[-1]), f"non-root numeric UID: {user}"
    entrypoint = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert entrypoint and json.loads(entrypoint[-1]) == ["netpol-auditor", "run"]
    labels = " ".join(rest for word, rest in final if word == "LABEL")
    for key in ("title", "description", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_image_runs_the_chart_uid() -> None:
    """The chart's restricted securityContext and the image agree on the UID."""
    values = (ROOT / "charts" / "netpol-auditor" / "values.yaml").read_text()
    uid = re.search(r"runAsUser: (\d+)", values)
    final_user = [rest for word, rest in _stages()[-1] if word == "USER"][-1]
    assert uid and final_user.split(":")[0] == uid.group(1)


def test_build_context_holds_only_the_wheel_sources(tmp_path: Path) -> None:
    ctx = build_context(tmp_path)
    top = {p.name for p in ctx.iterdir()}
    assert top == {"pyproject.toml", "README.md", "requirements.lock", "operator"}
    assert not list(ctx.rglob("__pycache__")) and not list(ctx.rglob("*.egg-info"))


def test_wheel_contains_the_package_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    version = metadata.version("netpol-auditor")
    assert tops == {"netpol_auditor", f"netpol_auditor-{version}.dist-info"}, tops
    for forbidden in ("localcluster", "tests", "bench", "charts", "operator"):
        assert not any(n.startswith(f"{forbidden}/") for n in names), forbidden


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_wheel_is_the_code_the_tests_import(wheel: Path) -> None:
    """Same version and the same files, byte for byte, as the netpol_auditor this test session imported."""
    imported = Path(netpol_auditor.__file__).resolve().parent
    assert imported == ROOT / "operator" / "netpol_auditor", f"tests import {imported}, not the source tree"
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = {n.removeprefix("netpol_auditor/"): _digest(zf.read(n)) for n in zf.namelist()
                    if n.startswith("netpol_auditor/")}
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))).decode()
    on_disk = {p.relative_to(imported).as_posix(): _digest(p.read_bytes()) for p in imported.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert in_wheel == on_disk
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    version = re.search(r"^Version: (.+)$", meta, re.M)
    assert version and version.group(1) == pyproject["project"]["version"] == metadata.version("netpol-auditor")
    assert "netpol-auditor = netpol_auditor.cli:main" in entry_points


def test_entrypoint_command_exists() -> None:
    """`netpol-auditor run` (the image's ENTRYPOINT) is a real command of the installed package."""
    exe = Path(sys.executable).parent / "netpol-auditor"
    proc = subprocess.run([str(exe), "run", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--metrics-port" in proc.stdout


def _locked() -> dict[str, tuple[str, int]]:
    """requirements.lock as {normalised name: (version, number of hashes)}."""
    pins: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text()):
        pin = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        if pin:
            pins[re.sub(r"[-_.]+", "-", pin.group(1)).lower()] = (pin.group(2), block.count("--hash=sha256:"))
    return pins


def test_image_dependencies_come_from_the_lock_checked_by_hash() -> None:
    runs = " ".join(rest for word, rest in _stages()[0] if word == "RUN")
    assert "pip install --require-hashes --no-deps -r requirements.lock" in runs, runs
    assert re.search(r"pip install --no-deps /wheels/netpol_auditor-\*\.whl", runs), "the wheel must not resolve deps"
    assert "pip check" in runs, "the lock must be proven to satisfy the wheel"
    pins = _locked()
    unhashed = [name for name, (_, hashes) in pins.items() if not hashes]
    assert pins and not unhashed, unhashed
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", d).group()).lower() for d in declared}  # type: ignore[union-attr]
    assert names <= pins.keys(), f"not in requirements.lock (run `make lock`): {sorted(names - pins.keys())}"


def test_the_lock_installs_by_hash_and_satisfies_the_wheel(wheel: Path, tmp_path: Path) -> None:
    """The build stage's install, replayed: the locked files download and match their hashes, the wheel goes in
    without resolving anything, `pip check` finds every requirement met, and the entry point runs."""
    venv = tmp_path / "image-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    for args in (["install", "-q", "--require-hashes", "--no-deps", "-r", str(LOCK)],
                 ["install", "-q", "--no-deps", str(wheel)], ["check"]):
        proc = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"pip {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    proc = subprocess.run([str(venv / "bin" / "netpol-auditor"), "run", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--metrics-port" in proc.stdout, proc.stderr
