"""MPIQ_Barrier (paper section 3.3, Algorithm 1).

* ``CC``: the classical ranks synchronise over MPI. Each rank posts its arrival timestamp to
  every other classical rank (raw buffers, non-blocking) and leaves once all arrivals are in;
  on timeout the missing ranks are exactly those whose arrival never came.
* ``QQ``: the quantum processes synchronise over the socket layer of :mod:`.qsync` and
  release together at one agreed trigger instant.
* ``ALL``: an arrival exchange over the whole hybrid communicator, then the quantum
  processes align their release on a QQ trigger.

Timestamps are ``time.monotonic()`` seconds; processes on one host share that clock.
"""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py import MPI

from .errors import MPIQTimeoutError
from .waiting import Deadline, poll

if TYPE_CHECKING:
    from .comm import HybridComm

_TAG_SPACE = 16384


class BarrierFlag(enum.IntEnum):
    CC = 0
    ALL = 1
    QQ = 2


CC, ALL, QQ = BarrierFlag.CC, BarrierFlag.ALL, BarrierFlag.QQ


@dataclass
class BarrierRecord:
    """What one barrier looked like: who took part, when each arrived and was released."""

    flag: str
    seq: int
    members: list[str]
    arrivals: list[float]
    releases: list[float] | None
    trigger: float | None
    local_arrival: float | None
    local_release: float | None

    @property
    def participated(self) -> bool:
        return bool(self.members)

    @property
    def skew(self) -> float | None:
        """Release skew: latest minus earliest release (seconds)."""
        return max(self.releases) - min(self.releases) if self.releases else None

    @property
    def wait(self) -> float | None:
        """Time from the first arrival to the last release (seconds)."""
        if not self.arrivals:
            return None
        last = max(self.releases) if self.releases else self.local_release
        return last - min(self.arrivals)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "skew": self.skew}


class BarrierState:
    """Per-communicator barrier bookkeeping: sequence numbers and the lazily built QQ layer."""

    def __init__(self) -> None:
        self.seq = {CC: 0, QQ: 0, ALL: 0}
        self._qsync = None

    def qsync(self, hc: "HybridComm", deadline: Deadline):
        if self._qsync is None:
            from .qsync import QQSync

            self._qsync = QQSync.create(hc._qcomm, timeout=deadline.timeout)
        return self._qsync

    def close(self) -> None:
        if self._qsync is not None:
            self._qsync.close()
            self._qsync = None


def _empty(flag: BarrierFlag, seq: int) -> BarrierRecord:
    return BarrierRecord(flag.name, seq, [], [], None, None, None, None)


def _exchange(comm: MPI.Intracomm, value: float, tag: int, deadline: Deadline, label: str, names: list[str]) -> np.ndarray:
    """Post ``value`` to every member of ``comm`` and collect theirs: completes only once all arrived."""
    n, me = comm.Get_size(), comm.Get_rank()
    table = np.empty(n, dtype=np.float64)
    table[me] = value
    if n == 1:
        return table
    mine = np.array([value], dtype=np.float64)
    recvs = {p: comm.Irecv(table[p : p + 1], p, tag) for p in range(n) if p != me}
    sends = [comm.Isend(mine, p, tag) for p in range(n) if p != me]
    everything = list(recvs.values()) + sends
    if poll(lambda: True if MPI.Request.Testall(everything) else None, deadline) is None:
        missing = [names[p] for p, req in recvs.items() if not req.Test()]
        for p, req in recvs.items():
            if names[p] in missing:
                req.Cancel()
                req.Wait()
        raise MPIQTimeoutError(
            f"{label} on {names[me]} timed out after {deadline.timeout:g} s; "
            f"{', '.join(missing)} did not arrive.",
            missing,
        )
    return table


def _cc(hc: "HybridComm", deadline: Deadline, record: bool) -> BarrierRecord:
    state = hc._barriers
    state.seq[CC] += 1
    seq = state.seq[CC]
    if not hc.is_classical:
        return _empty(CC, seq)
    names = [f"rank {i}" for i in range(hc.classical_size)]
    label = f"CC barrier #{seq}"
    arrival = time.monotonic()
    arrivals = _exchange(hc._ccomm, arrival, (2 * seq) % _TAG_SPACE, deadline, label, names)
    release = time.monotonic()
    releases = None
    if record:
        releases = _exchange(hc._ccomm, release, (2 * seq + 1) % _TAG_SPACE, deadline, label, names).tolist()
    return BarrierRecord("CC", seq, names, arrivals.tolist(), releases, None, arrival, release)


def _qq(hc: "HybridComm", deadline: Deadline, record: bool) -> BarrierRecord:
    state = hc._barriers
    state.seq[QQ] += 1
    seq = state.seq[QQ]
    if not hc.is_quantum:
        return _empty(QQ, seq)
    out = state.qsync(hc, deadline).barrier(seq, timeout=deadline.timeout, record=record)
    names = [f"qrank {j}" for j in range(hc.quantum_size)]
    return BarrierRecord(
        "QQ", seq, names, list(out["arrivals"]), out["releases"], out["trigger"],
        out["local_arrival"], out["local_release"],
    )


def _all(hc: "HybridComm", deadline: Deadline, record: bool) -> BarrierRecord:
    state = hc._barriers
    state.seq[ALL] += 1
    seq = state.seq[ALL]
    names = [hc.describe(r) for r in range(hc.size)]
    label = f"ALL barrier #{seq}"
    arrival = time.monotonic()
    arrivals = _exchange(hc._coll, arrival, hc._next_tag(), deadline, label, names)
    trigger = None
    if hc.is_quantum:
        out = _qq(hc, deadline, record=False)
        trigger, release = out.trigger, out.local_release
    else:
        hc._barriers.seq[QQ] += 1  # keep QQ numbering aligned on every process
        release = time.monotonic()
    tag = hc._next_tag()
    releases = _exchange(hc._coll, release, tag, deadline, label, names).tolist() if record else None
    return BarrierRecord("ALL", seq, names, arrivals.tolist(), releases, trigger, arrival, release)


def run(hc: "HybridComm", flag: BarrierFlag, deadline: Deadline, record: bool) -> BarrierRecord:
    return {CC: _cc, QQ: _qq, ALL: _all}[flag](hc, deadline, record)
