"""Probe and responder shell scripts, and the parser/classifier of what a probe pod reports back.

A probe pod runs one POSIX ``sh`` script that tries every target it was given and writes one line per target to
``/dev/termination-log``: the result comes back as ``status.containerStatuses[].state.terminated.message``, so no
logs, exec or kubelet API are needed. The script uses only tools both the netshoot image and the local cluster's
hosts ship: ``sh`` (busybox ash / dash), ``nc`` (netcat-openbsd) and ``socat`` — nicolaka/netshoot's Dockerfile installs
``busybox-extras``, ``netcat-openbsd`` and ``socat`` from Alpine (it does not install ``ncat``, hence socat for SCTP).

- TCP: ``nc -vz -w T host port``; its verbose message tells a refusal from a timeout.
- UDP: a payload sent with ``socat`` and a reply required (``nc -z -u`` cannot tell open from filtered).
- SCTP: ``socat`` ``SCTP-CONNECT`` with a connect timeout.

Line format: ``<index><code>`` with code ``c`` connected, ``t`` timed out, ``r`` refused (RST, ICMP unreachable or
prohibited), ``e`` error (tool failure, unsupported protocol); the last line is ``#<count>`` when every target ran.
The kubelet keeps at most 4096 bytes of the message, which bounds the targets per pod (`max_targets`).

Re-checks: a target given the result it should show (its prediction) that showed otherwise is tried again by the
same pod at each ``recheck_at`` second after the script started, while it still disagrees; those lines are
``<index><code>@<second>``. A CNI programs a new pod's rules some time after the pod starts, so "this pod connected
N seconds after it started" is what tells rules programmed late from rules never programmed (prober/compare.py); one
pod that waits and connects again answers that a whole pod start sooner than a new pod would.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from netpol_auditor.model import PortProtocol, Protocol

__all__ = [
    "TERMINATION_MESSAGE_BYTES",
    "Attempt",
    "ProbeReport",
    "ProbeResult",
    "ScriptTarget",
    "max_targets",
    "parse_report",
    "probe_script",
    "responder_check_script",
    "responder_script",
]

#: The kubelet truncates a container's termination message to 4096 bytes (kubelet/kuberuntime, maxMsgSize).
TERMINATION_MESSAGE_BYTES = 4096
TERMINATION_LOG = "/dev/termination-log"
#: The UDP payload a probe sends; responders echo it (netshoot responder) or answer with their identity (localcluster).
UDP_PAYLOAD = "netpol-auditor-probe"
RESPONDER_REPLY = "netpol-auditor-responder"


class ProbeResult(StrEnum):
    CONNECTED = "connected"
    TIMED_OUT = "timed_out"
    REFUSED = "refused"
    ERROR = "error"

    @property
    def code(self) -> str:
        return _CODES_BY_RESULT[self]


_CODES_BY_RESULT = {
    ProbeResult.CONNECTED: "c",
    ProbeResult.TIMED_OUT: "t",
    ProbeResult.REFUSED: "r",
    ProbeResult.ERROR: "e",
}
_RESULT_BY_CODE = {code: result for result, code in _CODES_BY_RESULT.items()}


@dataclass(frozen=True)
class ScriptTarget:
    """One connection to try: an IP literal (never a name: no DNS dependency, no shell injection) and a port."""

    host: str
    port: int
    protocol: Protocol = Protocol.TCP
    #: the prediction (True: connects, False: denied) that a re-check tests against; None: never re-checked
    expect: bool | None = None

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.host)  # raises ValueError for anything but an IP literal
        PortProtocol(self.port, self.protocol)  # validates the range

    @property
    def socat_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


#: re-check seconds are written with at most this many digits (a wait of more than a day is refused)
_RECHECK_DIGITS = 5


def max_targets(limit_bytes: int = TERMINATION_MESSAGE_BYTES, rechecks: int = 0) -> int:
    """How many targets one pod can report within the termination message (worst-case line lengths), each
    re-checked at most ``rechecks`` times."""
    n = 0
    while True:
        size = sum((len(str(i)) + 2) * (1 + rechecks) + rechecks * (1 + _RECHECK_DIGITS) for i in range(n + 1))
        if size + len(f"#{n + 1}\n") > limit_bytes:
            return n
        n += 1


# Functions shared by every probe script: `probe INDEX PROTO HOST PORT` classifies one connection and appends one
# short line (O_APPEND writes below PIPE_BUF do not interleave, so parallel targets cannot garble each other). A
# time-out is tried once more after a second: packets lost to a transient (a new pod's first moments on its node)
# must not pass for a policy's DROP; a refusal or a connection is final at once.
_FUNCTIONS = r"""L=__LOG__
T=__TIMEOUT__
cls() {
  case "$1" in
    *refused*|*"No route to host"*|*prohibited*|*"Host is unreachable"*) echo r ;;
    *"timed out"*|*"Operation now in progress"*|*"Connection timed out"*) echo t ;;
    *) echo e ;;
  esac
}
tcp() {
  if o=$(nc -vz -w "$T" "$1" "$2" 2>&1); then echo c; else cls "$o"; fi
}
udp() {
  o=$(printf '__PAYLOAD__\n' | socat -t"$T" -T"$T" - "UDP:$1:$2" 2>&1)
  case "$o" in
    *"socat["*" E "*) cls "$o" ;;
    "") echo t ;;
    *) echo c ;;
  esac
}
sctp() {
  if o=$(socat -T"$T" /dev/null "SCTP-CONNECT:$1:$2,connect-timeout=$T" 2>&1); then echo c; else cls "$o"; fi
}
probe() {
  r=$("$2" "$3" "$4")
  if [ "$r" = t ]; then sleep 1; r=$("$2" "$3" "$4"); fi
  echo "$1$r$5" >>"$L"
}
n=0
run() {
  "$@" &
  n=$((n + 1))
  if [ "$n" -ge __PARALLEL__ ]; then wait; n=0; fi
}
"""

# `differs INDEX EXPECT`: the target's latest line disagrees with EXPECT (c: should connect, d: should be denied); an
# error proves nothing and is not re-tried. `again SECOND INDEX EXPECT PROTO HOST PORT` re-tries a target that still
# differs. `pause SECOND` sleeps until at least SECOND whole seconds after the script started. `pending` says whether
# any re-checked target (in X) still differs, so a pod whose targets all agree never waits.
_RECHECK = r"""S=$(date +%s)
differs() {
  r=$(grep "^$1[ctre]" "$L" | tail -n 1); r=${r#"$1"}; r=${r%"${r#?}"}
  case "$2$r" in ct|cr|dc) return 0 ;; esac
  return 1
}
again() {
  if differs "$2" "$3"; then probe "$2" "$4" "$5" "$6" "@$1"; fi
}
pause() {
  d=$(($1 - $(date +%s) + S + 1))
  if [ "$d" -gt 0 ]; then sleep "$d"; fi
}
pending() {
  for x in $X; do
    if differs "${x%?}" "${x#"${x%?}"}"; then return 0; fi
  done
  return 1
}
"""


def probe_script(
    targets: Sequence[ScriptTarget],
    timeout_seconds: int = 2,
    parallelism: int = 8,
    log_path: str = TERMINATION_LOG,
    start_delay_seconds: float = 0,
    recheck_at: Sequence[int] = (),
) -> str:
    """The ``sh -c`` script that probes `targets`, at most `parallelism` at a time, each bounded by the timeout.

    ``start_delay_seconds``: wait before the first connection. The CNI programs a new pod's rules asynchronously
    after the pod starts (kube-router reacts to the pod's watch event), and a probe pod is always new: without the
    wait its first connections can race the programming of its own egress rules.

    ``recheck_at``: seconds after the script started at which targets with an ``expect`` that still disagree with it
    are tried again (none agree, no wait).
    """
    checked = [(i, t) for i, t in enumerate(targets) if t.expect is not None]
    rechecks = sorted(set(recheck_at)) if checked else []
    if any(not 0 < at < 10**_RECHECK_DIGITS for at in rechecks):
        raise ValueError(f"re-check seconds must be between 1 and {10**_RECHECK_DIGITS - 1}: {rechecks}")
    limit = max_targets(rechecks=len(rechecks))
    if len(targets) > limit:
        raise ValueError(f"{len(targets)} targets exceed the {limit} a termination message can report")
    if timeout_seconds < 1 or parallelism < 1:
        raise ValueError("timeout_seconds and parallelism must be >= 1")
    if not re.fullmatch(r"[A-Za-z0-9_./-]+", log_path):
        raise ValueError(f"unsafe log path {log_path!r}")
    head = (
        _FUNCTIONS.replace("__LOG__", log_path)
        .replace("__TIMEOUT__", str(timeout_seconds))
        .replace("__PAYLOAD__", UDP_PAYLOAD)
        .replace("__PARALLEL__", str(parallelism))
    )
    lines = [head]
    if rechecks:
        lines.append(_RECHECK)
        lines.append("X=\"" + " ".join(f"{i}{'c' if t.expect else 'd'}" for i, t in checked) + "\"")
    if start_delay_seconds > 0:
        lines.append(f"sleep {start_delay_seconds:g}")
    for i, t in enumerate(targets):
        lines.append(f"run probe {i} {_call(t)}")
    lines.append("wait; n=0")
    for at in rechecks:
        lines.append("if pending; then")
        lines.append(f"  pause {at}")
        lines += [f"  run again {at} {i} {'c' if t.expect else 'd'} {_call(t)}" for i, t in checked]
        lines.append("  wait; n=0")
        lines.append("fi")
    lines.append(f'echo "#{len(targets)}" >>"$L"')
    return "\n".join(lines) + "\n"


def _call(t: ScriptTarget) -> str:
    host = t.socat_host if t.protocol is not Protocol.TCP else t.host
    return f"{t.protocol.value.lower()} {host} {t.port}"


_RESPONDER_HEAD = r"""L=__LOG__
v6=
if grep -q . /proc/net/if_inet6 2>/dev/null; then v6=1; fi
pids=
listen() {
  if [ -n "$v6" ]; then f=6; o=,ipv6only=0; else f=4; o=; fi
  case "$1" in
    tcp) socat "TCP$f-LISTEN:$2$o,fork,reuseaddr,backlog=1024" 'SYSTEM:echo __REPLY__' 2>>"$L" & ;;
    udp) socat -T1 "UDP$f-RECVFROM:$2$o,fork" EXEC:cat 2>>"$L" & ;;
    sctp) socat "SCTP$f-LISTEN:$2$o,fork,reuseaddr,backlog=1024" 'SYSTEM:echo __REPLY__' 2>>"$L" & ;;
  esac
  pids="$pids $!"
}
"""

# A listener that dies takes the container down with its error as the termination message: the prober then sees
# `responder_failed` (or `sctp_unavailable`) instead of reading every connection to it as a denial.
_RESPONDER_TAIL = r"""sleep 1
while :; do
  for p in $pids; do
    if ! kill -0 "$p" 2>/dev/null; then echo "listener stopped" >>"$L"; exit 1; fi
  done
  sleep 2
done
"""


def responder_script(ports: Sequence[PortProtocol], log_path: str = TERMINATION_LOG) -> str:
    """The ``sh -c`` script of a responder container: listen on every port, answer, stay up until deleted.

    Listeners accept IPv4 and, where the pod's network namespace has IPv6, IPv6 too (one dual-stack socket,
    ``ipv6only=0``). A listener that cannot start or stops later ends the container with its error as the
    termination message, so a broken responder is never mistaken for a policy's DROP.
    """
    if not re.fullmatch(r"[A-Za-z0-9_./-]+", log_path):
        raise ValueError(f"unsafe log path {log_path!r}")
    # backlog: socat listens with a backlog of 5 by default; many probes connecting at once would overflow it and
    # see their SYN dropped (a time-out that looks like a filtered port)
    lines = [_RESPONDER_HEAD.replace("__LOG__", log_path).replace("__REPLY__", RESPONDER_REPLY)]
    lines += [f"listen {pp.protocol.value.lower()} {pp.port}" for pp in sorted(set(ports))]
    lines.append(_RESPONDER_TAIL)
    return "\n".join(lines)


def responder_check_script(ports: Sequence[PortProtocol], timeout_seconds: int = 1) -> str:
    """The readiness check of a responder container, run by the kubelet inside the pod's own network namespace:
    every listener accepts (TCP, SCTP) or echoes (UDP) on 127.0.0.1 and, where the pod has IPv6, on ::1. Until it
    passes the container is not ready, and the prober does not aim a probe at it."""
    checks = []
    for pp in sorted(set(ports)):
        if pp.protocol is Protocol.TCP:
            checks.append(f'nc -z -w {timeout_seconds} "$h" {pp.port}')
        elif pp.protocol is Protocol.UDP:
            checks.append(f'[ -n "$(printf x | socat -T{timeout_seconds} - "UDP:$b:{pp.port}" 2>/dev/null)" ]')
        else:
            checks.append(f'socat -T{timeout_seconds} /dev/null "SCTP-CONNECT:$b:{pp.port},'
                          f'connect-timeout={timeout_seconds}"')
    body = " && ".join(checks) or "true"
    return (
        'hs=127.0.0.1; if grep -q . /proc/net/if_inet6 2>/dev/null; then hs="127.0.0.1 ::1"; fi\n'
        'for h in $hs; do\n'
        '  b=$h; case "$h" in *:*) b="[$h]" ;; esac\n'
        f'  {body} || exit 1\n'
        "done\n"
    )


#: one connection of a target: the second after the script started it ran (None: the first, after the start
#: delay) and its result
Attempt = tuple[int | None, ProbeResult]


@dataclass(frozen=True)
class ProbeReport:
    """What one probe pod reported: every attempt per target index, in order (none: the pod ended first)."""

    attempts: tuple[tuple[Attempt, ...], ...]
    complete: bool

    @property
    def results(self) -> tuple[ProbeResult | None, ...]:
        """The latest result per target (None = no line)."""
        return tuple(a[-1][1] if a else None for a in self.attempts)

    def missing(self) -> int:
        return sum(1 for a in self.attempts if not a)


_LINE = re.compile(r"(\d+)([ctre])(?:@(\d+))?")


def parse_report(message: str | None, count: int) -> ProbeReport:
    """Parse a termination message written by `probe_script` for `count` targets. Unknown lines are ignored."""
    attempts: list[list[Attempt]] = [[] for _ in range(count)]
    complete = False
    for raw in (message or "").splitlines():
        line = raw.strip()
        if line.startswith("#"):
            complete = line[1:] == str(count)
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            continue
        i = int(m[1])
        if 0 <= i < count:
            attempts[i].append((int(m[3]) if m[3] else None, _RESULT_BY_CODE[m[2]]))
    for a in attempts:
        a.sort(key=lambda x: -1 if x[0] is None else x[0])  # parallel writers: order by when they ran
    return ProbeReport(tuple(tuple(a) for a in attempts), complete and all(attempts))
