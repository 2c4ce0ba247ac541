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

from .collectives import int64_board, shared_node
from .errors import MPIQError, MPIQTimeoutError, UsageError
from .waiting import Deadline, poll

if TYPE_CHECKING:
    from .comm import HybridComm

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

    def __getattribute__(self, name: str):
        if name == "releases":  # a CC record's releases are collected after the barrier returned
            d = object.__getattribute__(self, "__dict__")
            pending = d.get("_pending")
            if pending is not None:
                del d["_pending"]
                d["releases"] = pending()
        return object.__getattribute__(self, name)

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
        self.exchanges: dict[tuple[int, int, int], _Exchange] = {}
        self._names: dict[BarrierFlag, list[str]] = {}
        self._board: _ArrivalBoard | None = None
        self._qsync = None

    def next_seq(self, flag: BarrierFlag) -> int:
        """The sequence number of the next ``flag`` barrier (every process counts every call)."""
        self.seq[flag] += 1
        return self.seq[flag]

    def arrivals(self, ccomm: MPI.Intracomm) -> _ArrivalBoard:
        """The CC arrival board (built on first use: a collective over the classical ranks)."""
        if self._board is None:
            self._board = _ArrivalBoard(ccomm)
        return self._board

    def names(self, hc: "HybridComm", flag: BarrierFlag) -> list[str]:
        """Member labels of a flag's group, in the order of its communicator (cached)."""
        if flag not in self._names:
            self._names[flag] = {
                CC: lambda: [f"rank {i}" for i in range(hc.classical_size)],
                QQ: lambda: [f"qrank {j}" for j in range(hc.quantum_size)],
                ALL: lambda: [hc.describe(r) for r in range(hc.size)],
            }[flag]()
        return self._names[flag]

    def qsync(self, hc: "HybridComm", deadline: Deadline):
        if self._qsync is None:
            from .qsync import QQSync

            self._qsync = QQSync.create(hc._qcomm, timeout=deadline.timeout)
        return self._qsync

    def close(self) -> None:
        for ex in self.exchanges.values():
            ex.free()
        self.exchanges.clear()
        if self._board is not None:
            self._board.free()
            self._board = None
        if self._qsync is not None:
            self._qsync.close()
            self._qsync = None


def _empty(flag: BarrierFlag, seq: int) -> BarrierRecord:
    return BarrierRecord(flag.name, seq, [], [], None, None, None, None)


class _Exchange:
    """Persistent requests posting one timestamp to every member of a communicator.

    Each message carries the barrier's sequence number, so a late message from a barrier that
    timed out is recognised instead of completing a later barrier by mistake. A ring of
    ``_RING`` request sets (tags ``base + k``) lets consecutive barriers overlap safely.
    """

    def __init__(self, comm: MPI.Intracomm, tag: int):
        n, self.me = comm.Get_size(), comm.Get_rank()
        self.table = np.empty((n, 2), dtype=np.float64)
        self.mine = np.empty(2, dtype=np.float64)
        self.peers = [p for p in range(n) if p != self.me]
        self.recvs = [comm.Recv_init(self.table[p], p, tag) for p in self.peers]
        self.requests = self.recvs + [comm.Send_init(self.mine, p, tag) for p in self.peers]

        self.active: int | None = None  # seq of a started exchange not finished yet
        self.waiting: BarrierRecord | None = None  # the record whose releases it will give

    def run(self, seq: int, value: float, deadline: Deadline, label: str, names: list[str]) -> np.ndarray:
        self.start(seq, value)
        return self.finish(seq, deadline, label, names)

    def start(self, seq: int, value: float) -> None:
        self.mine[0], self.mine[1] = seq, value
        self.table[self.me] = self.mine
        if self.peers:
            MPI.Prequest.Startall(self.requests)
            self.active = seq

    def settle(self, timeout: float) -> None:
        """Finish the exchange started for an earlier record before the requests are reused."""
        rec, self.waiting = self.waiting, None
        if rec is not None and "_pending" in rec.__dict__:
            rec.releases  # noqa: B018 - resolves the record from this exchange
        elif self.active is not None:
            self.finish(self.active, Deadline(timeout), f"barrier #{self.active}", [f"member {i}" for i in range(len(self.table))])

    def finish(self, seq: int, deadline: Deadline, label: str, names: list[str]) -> np.ndarray:
        self.active = None
        if not self.peers:
            return self.table[:, 1].copy()
        if not MPI.Request.Testall(self.requests) and poll(
            lambda: True if MPI.Request.Testall(self.requests) else None, deadline
        ) is None:
            missing = [names[p] for p, req in zip(self.peers, self.recvs) if not req.Test()]
            for req in self.recvs:
                if not req.Test():
                    req.Cancel()
                    req.Wait()
            raise MPIQTimeoutError(
                f"{label} on {names[self.me]} timed out after {deadline.timeout:g} s; "
                f"{', '.join(missing)} did not arrive.",
                missing,
            )
        stale = [names[p] for p in self.peers if self.table[p, 0] != seq]
        if stale:
            raise MPIQError(
                f"{label} on {names[self.me]} received a message of an earlier barrier from "
                f"{', '.join(stale)}; the processes are out of step after an earlier timeout."
            )
        return self.table[:, 1].copy()

    def free(self) -> None:
        for req in self.requests:
            req.Free()
        self.requests = []


class _ArrivalBoard:
    """The fast CC barrier: ``MPI_Ibarrier`` plus an arrival board in node-shared memory.

    Entering barrier #seq is one store of ``seq`` into this rank's slot of an MPI shared-memory
    window; the synchronisation itself is a non-blocking MPI barrier polled with the deadline.
    On timeout the board names the ranks of this node that never entered; ranks on other nodes
    cannot be inspected without their help and are named as unconfirmed. An abandoned Ibarrier
    cannot be cancelled (MPI forbids it); it is kept and completes when the late rank arrives,
    so later barriers still match in order.
    """

    def __init__(self, comm: MPI.Intracomm):
        self.comm = comm
        self.node = shared_node(comm)
        self.node_ranks = self.node.allgather(comm.Get_rank())
        self.win, self.board = int64_board(self.node)
        self.slot = self.node.Get_rank()
        self.board[self.slot] = 0
        # Timestamps of the timed CC barrier: [ring slot, node slot, arrival/release] as
        # (seq, time) pairs; used when every classical rank is on this node.
        nn = self.node.Get_size()
        self.local = nn == comm.Get_size()
        shape = (_RING, nn, 2, 2)
        tsize = 8 * int(np.prod(shape)) if self.node.Get_rank() == 0 else 0
        self.twin = MPI.Win.Allocate_shared(tsize, 8, comm=self.node)
        tbuf, _ = self.twin.Shared_query(0)
        self.stamps = np.ndarray(shape, dtype=np.float64, buffer=tbuf)
        self.stamps[:, self.slot] = -1.0
        self.flat = memoryview(tbuf).cast("B").cast("d")  # plain indexing: cheaper than numpy here
        self.nn = nn
        # node slot of each comm rank, so a read gives the times in comm-rank order
        self.order = [self.node_ranks.index(r) for r in range(comm.Get_size())] if self.local else []
        self.waiting: dict[int, BarrierRecord] = {}
        self.node.Barrier()
        self.abandoned: list[MPI.Request] = []

    def _cell(self, seq: int, slot: int, kind: int) -> int:
        return (((seq % _RING) * self.nn + slot) * 2 + kind) * 2

    def stamp(self, seq: int, kind: int, value: float) -> None:
        i = self._cell(seq, self.slot, kind)
        flat = self.flat
        flat[i + 1] = value  # the time first, then the seq that validates it (x86 keeps store order)
        flat[i] = seq

    def read(self, seq: int, kind: int) -> list[float] | None:
        """Every rank's time of barrier ``seq`` (comm-rank order), or None if one is not there yet."""
        flat, out = self.flat, []
        for slot in self.order:
            i = self._cell(seq, slot, kind)
            if flat[i] != seq:
                return None
            out.append(flat[i + 1])
        return out

    def releases(self, seq: int, timeout: float, label: str, names: list[str]) -> list[float]:
        got = self.read(seq, 1)
        if got is None:
            deadline = Deadline(timeout)
            got = poll(lambda: self.read(seq, 1), deadline)
            if got is None:
                missing = [names[r] for r, slot in enumerate(self.order)
                           if self.flat[self._cell(seq, slot, 1)] != seq]
                raise MPIQTimeoutError(
                    f"{label} on {names[self.comm.Get_rank()]}: the release times of {', '.join(missing)} "
                    f"did not arrive within {deadline.timeout:g} s.",
                    missing,
                )
        return got

    def arrive_and_wait(self, seq: int, deadline: Deadline, label: str, names: list[str]) -> None:
        self.board[self.slot] = seq
        req = self.comm.Ibarrier()
        if req.Test() or poll(lambda: True if req.Test() else None, deadline) is not None:
            return
        self.abandoned.append(req)
        here = {r for r, s in zip(self.node_ranks, self.board.tolist()) if s < seq}
        elsewhere = [r for r in range(self.comm.Get_size()) if r not in self.node_ranks]
        missing = [names[r] for r in sorted(here)]
        unknown = f"; not confirmed (other nodes): {', '.join(names[r] for r in elsewhere)}" if elsewhere else ""
        raise MPIQTimeoutError(
            f"{label} on {names[self.comm.Get_rank()]} timed out after {deadline.timeout:g} s; "
            f"{', '.join(missing) or 'no rank of this node'} did not arrive{unknown}.",
            missing + [names[r] for r in elsewhere],
        )

    def free(self) -> None:
        """Nothing to do: ``MPI_Win_free`` synchronises the node's ranks, and a rank that failed
        before ``hc.free()`` would leave the others waiting in it forever; the windows live until
        ``MPI_Finalize``."""


_RING = 8


def _slot(state: "BarrierState", comm: MPI.Intracomm, round_: int, seq: int) -> "_Exchange":
    key = (comm.py2f(), round_, seq % _RING)
    ex = state.exchanges.get(key)
    if ex is None:
        ex = state.exchanges[key] = _Exchange(comm, 2 * (seq % _RING) + round_)
    return ex


def _exchange(state: "BarrierState", comm: MPI.Intracomm, seq: int, round_: int, value: float,
              deadline: Deadline, label: str, names: list[str]) -> np.ndarray:
    """Post ``value`` to every member of ``comm`` and collect theirs: completes only once all arrived."""
    key = (comm.py2f(), round_, seq % _RING)
    ex = _slot(state, comm, round_, seq)
    if ex.active is not None:
        ex.settle(deadline.timeout)
    try:
        return ex.run(seq, value, deadline, label, names)
    except MPIQError:
        del state.exchanges[key]  # its requests may still be active; never start them again
        ex.free()
        raise


def _cc(hc: "HybridComm", deadline: Deadline, record: bool) -> BarrierRecord:
    state = hc._barriers
    seq = state.next_seq(CC)
    if not hc.is_classical:
        return _empty(CC, seq)
    names = state.names(hc, CC)
    label = f"CC barrier #{seq}"
    arrival = time.monotonic()
    board = state.arrivals(hc._ccomm)
    if not record:
        board.arrive_and_wait(seq, deadline, label, names)
        return BarrierRecord("CC", seq, list(names), [], None, None, arrival, time.monotonic())
    if board.local:
        return _cc_local(board, seq, arrival, deadline, label, names)
    arrivals = _exchange(state, hc._ccomm, seq, 0, arrival, deadline, label, names)
    release = time.monotonic()
    # The release timestamps travel after the barrier has returned: the exchange is started
    # here and finished when the record's ``releases`` is first read (or before its requests
    # are reused, _RING barriers later), so the barrier itself costs one exchange.
    ex = _slot(state, hc._ccomm, 1, seq)
    if ex.active is not None:
        ex.settle(deadline.timeout)
    ex.start(seq, release)
    rec = BarrierRecord("CC", seq, list(names), arrivals.tolist(), None, None, arrival, release)
    timeout = deadline.timeout

    def releases() -> list[float]:
        if ex.waiting is rec:
            ex.waiting = None
        try:
            return ex.finish(seq, Deadline(timeout), label + " (release times)", names).tolist()
        except MPIQError:
            state.exchanges.pop((hc._ccomm.py2f(), 1, seq % _RING), None)
            ex.free()
            raise

    rec.__dict__["_pending"] = releases
    ex.waiting = rec
    return rec


def _cc_local(board: "_ArrivalBoard", seq: int, arrival: float, deadline: Deadline, label: str,
              names: list[str]) -> BarrierRecord:
    """The timed CC barrier when every classical rank shares this node: the fast barrier, with
    each rank's arrival and release times stamped into node-shared memory. Arrivals are read once
    the barrier completes (every rank stamped before entering it); releases when the record's
    ``releases`` is first read, or before their ring slot is reused, ``_RING`` barriers later."""
    old = board.waiting.pop(seq % _RING, None)
    if old is not None:
        old.releases  # noqa: B018 - settle before the slot is overwritten
    board.stamp(seq, 0, arrival)
    board.arrive_and_wait(seq, deadline, label, names)
    arrivals = board.read(seq, 0)
    if arrivals is None:
        raise MPIQError(f"{label} on {names[board.comm.Get_rank()]}: arrival times missing after the barrier.")
    release = time.monotonic()
    board.stamp(seq, 1, release)
    rec = BarrierRecord("CC", seq, list(names), arrivals, None, None, arrival, release)
    timeout = deadline.timeout

    def releases() -> list[float]:
        if board.waiting.get(seq % _RING) is rec:
            del board.waiting[seq % _RING]
        return board.releases(seq, timeout, label, names)

    rec.__dict__["_pending"] = releases
    board.waiting[seq % _RING] = rec
    return rec


def _qq(hc: "HybridComm", deadline: Deadline, record: bool) -> BarrierRecord:
    state = hc._barriers
    seq = state.next_seq(QQ)
    if not hc.is_quantum:
        return _empty(QQ, seq)
    out = state.qsync(hc, deadline).barrier(seq, timeout=deadline.timeout, record=record)
    names = list(state.names(hc, QQ))
    return BarrierRecord(
        "QQ", seq, names, list(out["arrivals"]), out["releases"], out["trigger"],
        out["local_arrival"], out["local_release"],
    )


def _all(hc: "HybridComm", deadline: Deadline, record: bool) -> BarrierRecord:
    state = hc._barriers
    seq = state.next_seq(ALL)
    names = list(state.names(hc, ALL))
    label = f"ALL barrier #{seq}"
    arrival = time.monotonic()
    arrivals = _exchange(state, hc._all_comm, seq, 0, arrival, deadline, label, names)
    trigger = None
    if hc.is_quantum:
        out = _qq(hc, deadline, record=False)
        trigger, release = out.trigger, out.local_release
    else:
        hc._barriers.seq[QQ] += 1  # keep QQ numbering aligned on every process
        release = time.monotonic()
    releases = _exchange(state, hc._all_comm, seq, 1, release, deadline, label, names).tolist() if record else None
    return BarrierRecord("ALL", seq, names, arrivals.tolist(), releases, trigger, arrival, release)


_BY_FLAG = {CC: _cc, QQ: _qq, ALL: _all}


def run(hc: "HybridComm", flag: int, deadline: Deadline, record: bool) -> BarrierRecord:
    try:
        fn = _BY_FLAG[flag]
    except KeyError:
        raise UsageError(f"A barrier flag is CC (0), ALL (1) or QQ (2), got {flag!r}.") from None
    return fn(hc, deadline, record)
