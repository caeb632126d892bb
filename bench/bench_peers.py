"""Side by side: ``netpol-auditor analyze`` against IBM network-config-analyzer and np-guard netpol-analyzer on the
same synthetic input, each a fresh process, measured with the child's own resource usage (``wait4``): wall time,
CPU time (user + system) and peak RSS.

Input: `generate.py` with ``--workloads`` (Deployments with their replica counts, as ``helm template`` gives them;
Namespaces; NetworkPolicies with named ports, endPort, ipBlock with except), written as one ``kind: List`` JSON file
in a directory of its own per size. The peers are installed here, once, into ``~/.cache/netpol-auditor/peers/``
(nothing of them is part of this repository): network-config-analyzer into a virtualenv of its own from its Python
package, netpol-analyzer built from its Go module with the local Go toolchain.

    .venv/bin/python bench/bench_peers.py                       # 500, 1k, 10k pods; writes bench/peers.json, .md
    .venv/bin/python bench/bench_peers.py --sizes 1000 --tools netpol-auditor,netpol-auditor-json

Commands run (DIR: the input directory):
    nca --connectivity -r DIR --output_format txt           (full connectivity map, aggregated as fw-rules)
    netpolicy list --dirpath DIR                             (connlist, one line per workload pair)
    netpol-auditor analyze -f DIR                            (default: one line per connected pair, every port)
    netpol-auditor analyze -f DIR -o json                    (the same pairs as JSON, with deciding policies)
    netpol-auditor analyze -f DIR --matrix                   (a truth table per declared port, every pair)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import generate

NCA_VERSION = "2.1.0"
NPA_MODULE = "github.com/np-guard/netpol-analyzer"
NPA_VERSION = "v1.4.2"
PEERS = Path(os.environ.get("NETPOL_AUDITOR_PEERS", Path.home() / ".cache" / "netpol-auditor" / "peers"))

#: pods -> (namespaces, policies): 20 pods and 6-7 policies per namespace; 10k as the issue's large cluster.
SIZES = {500: (25, 167), 1000: (50, 333), 10000: (1000, 2000)}
REPEAT_UNDER_S = 30.0  #: runs shorter than this are repeated (`--repeat`) and their median reported
TOOLS = ("netpol-auditor", "netpol-auditor-json", "netpol-auditor-matrix", "network-config-analyzer", "netpol-analyzer")


@dataclass
class Run:
    tool: str
    pods: int
    command: str
    exit_code: int
    wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    peak_rss_mib: float
    output_bytes: int
    load_average: tuple[float, float, float]
    timed_out: bool = False
    samples: int = 1
    wall_samples: tuple[float, ...] = ()
    cpu_samples: tuple[float, ...] = ()


def install_nca() -> Path:
    """network-config-analyzer in a virtualenv of its own (idempotent)."""
    venv = PEERS / f"nca-{NCA_VERSION}"
    nca = venv / "bin" / "nca"
    if not nca.exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, f"network-config-analyzer=={NCA_VERSION}"], check=True)
    return nca


def install_npa() -> Path:
    """netpol-analyzer's ``netpolicy`` built from its Go module (idempotent). Built inside a module of our own
    (``go get`` then ``go build``): ``go install MODULE@VERSION`` also asks for the module's version list, which
    the module proxy may refuse."""
    root = PEERS / f"netpol-analyzer-{NPA_VERSION}"
    binary = root / "bin" / "netpolicy"
    if not binary.exists():
        src = root / "src"
        src.mkdir(parents=True, exist_ok=True)
        if not (src / "go.mod").exists():
            subprocess.run(["go", "mod", "init", "peers.local/netpol-analyzer"], cwd=src, check=True)
        package = f"{NPA_MODULE}/cmd/netpolicy"
        subprocess.run(["go", "get", f"{package}@{NPA_VERSION}"], cwd=src, check=True)
        subprocess.run(["go", "build", "-o", str(binary), package], cwd=src, check=True)
    return binary


def write_input(pods: int, root: Path) -> Path:
    namespaces, policies = SIZES[pods]
    directory = root / f"pods-{pods}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "cluster.json"
    if not path.exists():
        items = list(generate(pods, namespaces, policies, seed=1, workloads=True))
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return directory


def command(tool: str, directory: Path, nca: Path | None, npa: Path | None) -> list[str]:
    auditor = [sys.executable, "-m", "netpol_auditor.cli", "analyze", "-f", str(directory)]
    if tool == "netpol-auditor":
        return auditor
    if tool == "netpol-auditor-json":
        return [*auditor, "-o", "json"]
    if tool == "netpol-auditor-matrix":
        return [*auditor, "--matrix"]
    if tool == "network-config-analyzer":
        assert nca is not None
        return [str(nca), "--connectivity", "-r", str(directory), "--output_format", "txt"]
    assert npa is not None
    return [str(npa), "list", "--dirpath", str(directory)]


def measure(tool: str, pods: int, argv: list[str], scratch: Path, timeout: float, env: dict[str, str]) -> Run:
    """Run ``argv`` as a fresh process, output to a scratch file; its own rusage from wait4 (polled, so that a run
    past ``timeout`` seconds can be stopped: then ``timed_out``)."""
    out_path = scratch / "stdout"
    load = os.getloadavg()
    with open(out_path, "wb") as out, open(scratch / "stderr", "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                proc.kill()
                timed_out = True
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    size = out_path.stat().st_size
    out_path.unlink()
    return Run(
        tool=tool,
        pods=pods,
        command=" ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv)),
        exit_code=proc.returncode,
        wall_s=round(wall, 3),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
        user_s=round(usage.ru_utime, 3),
        sys_s=round(usage.ru_stime, 3),
        peak_rss_mib=round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        output_bytes=size,
        load_average=(round(load[0], 2), round(load[1], 2), round(load[2], 2)),
        timed_out=timed_out,
    )


def repeated(
    tool: str, pods: int, argv: list[str], scratch: Path, timeout: float, env: dict[str, str], repeat: int
) -> Run:
    """`measure`, ``repeat`` times when a run takes under `REPEAT_UNDER_S` (the machine is shared: one sample is
    noise); the median wall and CPU time, the largest peak RSS, every sample kept."""
    runs = [measure(tool, pods, argv, scratch, timeout, env)]
    while len(runs) < repeat and runs[0].wall_s < REPEAT_UNDER_S and runs[-1].exit_code == 0:
        runs.append(measure(tool, pods, argv, scratch, timeout, env))
    walls = tuple(r.wall_s for r in runs)
    cpus = tuple(r.cpu_s for r in runs)
    first = runs[0]
    return Run(
        **{
            **asdict(first),
            "wall_s": statistics.median(walls),
            "cpu_s": statistics.median(cpus),
            "user_s": statistics.median(r.user_s for r in runs),
            "sys_s": statistics.median(r.sys_s for r in runs),
            "peak_rss_mib": max(r.peak_rss_mib for r in runs),
            "samples": len(runs),
            "wall_samples": walls,
            "cpu_samples": cpus,
            "exit_code": max(r.exit_code for r in runs),
        }
    )


def markdown(runs: list[Run], header: dict[str, object]) -> str:
    lines = [
        f"Measured {header['date']} on {header['machine']}; load average at the start {header['load_average']}.",
        "",
        "| tool | pods | wall s | CPU s (user+sys) | peak RSS MiB | output | runs | exit | load avg (1 min) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        size = f"{r.output_bytes / 2**20:.1f} MiB" if r.output_bytes >= 2**20 else f"{r.output_bytes / 1024:.0f} KiB"
        wall = f"> {r.wall_s:.0f} (stopped)" if r.timed_out else f"{r.wall_s:.2f}"
        lines.append(
            f"| {r.tool} | {r.pods} | {wall} | {r.cpu_s:.2f} | {r.peak_rss_mib:.0f} | {size} | {r.samples} | "
            f"{r.exit_code} | {r.load_average[0]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500,1000,10000", help="pod counts, comma-separated (of 500, 1000, 10000)")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated, of " + ", ".join(TOOLS))
    parser.add_argument("--inputs", type=Path, default=Path(tempfile.gettempdir()) / "netpol-auditor-peers")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "peers.json")
    parser.add_argument("--md", type=Path, default=Path(__file__).parent / "peers.md")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a run may take before it is stopped")
    parser.add_argument("--repeat", type=int, default=5, help=f"runs of each under {REPEAT_UNDER_S:.0f} s (median)")
    parser.add_argument(
        "--json-max-pods",
        type=int,
        default=1000,
        help="run netpol-auditor -o json only up to this size (at 10k: 100M verdict lines, tens of GB)",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    tools = args.tools.split(",")
    nca = install_nca() if "network-config-analyzer" in tools else None
    npa = install_npa() if "netpol-analyzer" in tools else None
    header: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average": tuple(round(x, 2) for x in os.getloadavg()),
        "versions": {"network-config-analyzer": NCA_VERSION, "netpol-analyzer": NPA_VERSION},
    }
    # netpol-auditor as an installed package runs: from compiled bytecode (pip compiles it at install time), here
    # kept out of the source tree and made by a first import.
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    auditor_env = {**env, "PYTHONPYCACHEPREFIX": str(PEERS / "pycache")}
    subprocess.run([sys.executable, "-c", "import netpol_auditor.cli as c; c.build_parser()"], env=auditor_env,
                   check=True)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as scratch:
        for pods in sizes:
            directory = write_input(pods, args.inputs)
            for tool in tools:
                if tool == "netpol-auditor-json" and pods > args.json_max_pods:
                    continue
                tool_env = auditor_env if tool.startswith("netpol-auditor") else env
                argv_ = command(tool, directory, nca, npa)
                run = repeated(tool, pods, argv_, Path(scratch), args.timeout, tool_env, args.repeat)
                runs.append(run)
                print(json.dumps(asdict(run)), flush=True)
                if run.exit_code != 0:
                    print((Path(scratch) / "stderr").read_text()[-2000:], file=sys.stderr)
    args.json.write_text(json.dumps({**header, "runs": [asdict(r) for r in runs]}, indent=2) + "\n")
    args.md.write_text(markdown(runs, header))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
