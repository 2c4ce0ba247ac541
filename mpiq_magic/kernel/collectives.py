"""MPI-Q collectives on binomial trees over the private collective context.

Every collective is point-to-point traffic on ``hc._coll`` with a tag of its own (the
collective's sequence number), along a binomial tree of its members rooted at the root: the
root sends or receives ``ceil(log2 P)`` messages, every other member at most as many, so the
root's cost grows as O(log P). Items are pickled once, where they are made (pickle protocol 5,
large buffers out of band, :class:`~.transfer.Frame`), forwarded as frames without being
unpickled on the way, and unpickled only by the process that keeps them.

Timeouts: every wait has the collective's deadline. On entry each process stores the
collective's sequence number in its slot of an *entry board* in node-shared memory, so on
expiry the error names the members that never entered (members on other nodes, which the board
cannot see, are named only when this process was waiting for them directly). A gather keeps the
contributions that reached the root in ``.partial``. A root that fails before sending (bad
items, a ``send_q`` that does not partition the circuit) sends a :class:`~.transfer.RemoteFailure`
down the tree instead, so every member raises at once instead of waiting.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from mpi4py import MPI

from .errors import MPIQError, MPIQTimeoutError
from .requests import Engine, ObjectReceive
from .transfer import Frame, OOBHeader, RemoteFailure, dumps, loads, post_object, start_buffers
from .waiting import Deadline, poll

if TYPE_CHECKING:
    from .comm import HybridComm

_Testall = MPI.Request.Testall
_FAILURE_NOTICE_S = 5.0


def shared_node(comm: MPI.Intracomm) -> MPI.Intracomm:
    """The processes of ``comm`` that can share memory with this one: those on this node
    (``COMM_TYPE_SHARED``) *and* in this process's ``MPI_COMM_WORLD``.

    Two separately launched jobs on one host (a classical job attached to a quantum service, MPI
    DPM) share a node but not a shared-memory domain: ``Win.Allocate_shared`` fails across them.
    Membership of each node peer in this world is a local group translation, and it is an
    equivalence (every world is disjoint from the others), so each job's processes agree on one
    colour (their first node rank) without communicating.
    """
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    group, world = node.Get_group(), MPI.COMM_WORLD.Get_group()
    try:
        in_world = MPI.Group.Translate_ranks(group, list(range(group.Get_size())), world)
    finally:
        group.Free()
        world.Free()
    if MPI.UNDEFINED not in in_world:  # one job on this node: the usual case
        return node
    colour = next(i for i, r in enumerate(in_world) if r != MPI.UNDEFINED)
    mine = node.Split(colour, node.Get_rank())
    node.Free()
    return mine


def int64_board(node: MPI.Intracomm) -> tuple[MPI.Win, np.ndarray]:
    """A node-shared int64 slot per process of ``node`` (allocated by its rank 0): (window, array)."""
    item = np.dtype(np.int64).itemsize
    size = item * node.Get_size() if node.Get_rank() == 0 else 0
    win = MPI.Win.Allocate_shared(size, item, comm=node)
    buf, _ = win.Shared_query(0)
    return win, np.ndarray((node.Get_size(),), dtype=np.int64, buffer=buf)


class EntryBoard:
    """One int64 slot per process of ``comm`` on its node: the last collective it entered."""

    def __init__(self, comm: MPI.Intracomm):
        self.node = shared_node(comm)
        ranks = self.node.allgather(comm.Get_rank())
        self.slot_of = {r: i for i, r in enumerate(ranks)}
        self.win, self.board = int64_board(self.node)
        self.slot = self.node.Get_rank()
        self.board[self.slot] = 0
        self.node.Barrier()

    def enter(self, seq: int) -> None:
        self.board[self.slot] = seq

    def absent(self, members: Sequence[int], seq: int) -> tuple[list[int], list[int]]:
        """(members on this node that have not entered collective ``seq``, members elsewhere)."""
        here, elsewhere = [], []
        for r in members:
            i = self.slot_of.get(r)
            if i is None:
                elsewhere.append(r)
            elif self.board[i] < seq:
                here.append(r)
        return here, elsewhere

    def free(self) -> None:
        """Nothing to do here: ``MPI_Win_free`` synchronises every process of the node, so one
        peer that failed before ``hc.free()`` would make the others wait forever in it. The
        window (a few bytes per process) lives until ``MPI_Finalize`` releases it."""


class CollState:
    """Collective bookkeeping shared by a communicator and its layer views."""

    def __init__(self, hc: "HybridComm"):
        self.seq = 0
        self.board = EntryBoard(hc._coll)
        self.engine = Engine(hc._coll, hc._coll_data)
        self.trees: dict[tuple, tuple[list[int], int]] = {}
        # More processes on this node than cores: a tree's hops wait for each other's time
        # slices, so scatter and gather go flat (every item moves once, root <-> member).
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        crowded = int(self.board.node.Get_size() > cores)
        self.flat = bool(hc._coll.allreduce(crowded, op=MPI.MAX)) if _FLAT is None else _FLAT

    def free(self) -> None:
        self.engine.close()
        self.board.free()


_TAG_SPACE = 1 << 20
#: ``MPIQ_COLLECTIVES=tree|flat`` forces a pattern for scatter/gather (default: flat only on an
#: oversubscribed node).
_FLAT = {"tree": False, "flat": True}.get(os.environ.get("MPIQ_COLLECTIVES", ""), None)


def _tree(n: int, v: int) -> tuple[int | None, list[int]]:
    """Parent and children (largest subtree first) of vrank ``v`` in a binomial tree of ``n``."""
    if v:
        low = v & -v
        parent = v - low
    else:
        low, parent = 1 << max(n - 1, 0).bit_length(), None
    children = []
    k = low >> 1
    while k:
        if v + k < n:
            children.append(v + k)
        k >>= 1
    return parent, children


def _end(n: int, c: int) -> int:
    """One past the last vrank of the subtree rooted at ``c`` (> 0)."""
    return min(c + (c & -c), n)


class _Op:
    """One collective call on one process: members, tree position, tag, deadline, errors."""

    __slots__ = ("hc", "name", "seq", "tag", "members", "v", "parent", "children", "deadline", "engine", "flat")

    def __init__(self, hc: "HybridComm", name: str, members_key: tuple, members: Callable[[], list[int]],
                 timeout: float | None, flat: bool = False):
        st = hc._cstate
        st.seq += 1
        self.seq = st.seq
        self.tag = st.seq % _TAG_SPACE
        st.board.enter(st.seq)
        self.hc, self.name, self.engine = hc, name, st.engine
        self.deadline = Deadline(hc.timeout if timeout is None else timeout)
        cached = st.trees.get(members_key)
        if cached is None:
            ms = members()
            cached = st.trees[members_key] = (ms, {r: i for i, r in enumerate(ms)})
        self.members, index = cached
        self.v = index.get(hc._me)
        self.flat = flat
        if self.v is not None:
            if flat:
                self.parent, self.children = (None, list(range(1, len(self.members)))) if self.v == 0 else (0, [])
            else:
                self.parent, self.children = _tree(len(self.members), self.v)

    def end(self, c: int) -> int:
        return c + 1 if self.flat else _end(len(self.members), c)

    # -------------------------------------------------------------- messaging
    def post(self, obj: Any, v: int, tag: int | None = None) -> list[MPI.Request]:
        hc = self.hc
        return post_object(hc._coll, hc._coll_data, obj, self.members[v], self.tag if tag is None else tag)

    def post_all(self, obj: Any, vranks: Sequence[int]) -> dict[int, list[MPI.Request]]:
        """Send one object to several members, pickled once."""
        if not vranks:
            return {}
        hc = self.hc
        data, bufs = dumps(obj)
        out = {}
        for v in vranks:
            dest = self.members[v]
            if not bufs:
                out[v] = [hc._coll.Isend(data, dest, self.tag)]
            else:
                out[v] = [hc._coll.isend(OOBHeader(data, tuple(b.nbytes for b in bufs)), dest, self.tag)]
                out[v].extend(hc._coll_data.Isend(b, dest, self.tag) for b in bufs)
        return out

    def receive(self, v: int, tag: int | None = None) -> ObjectReceive:
        r = ObjectReceive(self.engine, self.members[v], self.tag if tag is None else tag, None, "", 0.0)
        self.engine.post(r)
        return r

    def wait_sends(self, sends: dict[int, list[MPI.Request]], deadline: Deadline | None = None) -> None:
        reqs = [q for qs in sends.values() for q in qs]
        if not reqs or _Testall(reqs):
            return
        deadline = deadline or self.deadline
        if poll(lambda: True if _Testall(reqs) else None, deadline) is None:
            pending = [v for v, qs in sends.items() if not _Testall(qs)]
            raise self.timeout_error(pending, "did not receive", deadline)

    def wait_receives(self, recvs: dict[int, ObjectReceive], deadline: Deadline | None = None,
                      flush: ObjectReceive | None = None) -> bool:
        """Wait for every receive; False on expiry or when ``flush`` completes first (the
        received ones stay done)."""
        def complete():
            if all([r._advance() for r in recvs.values()]):
                return True
            if flush is not None and flush._advance():
                return False
            return None

        got = complete()
        if got is None:
            got = poll(complete, deadline or self.deadline)
        return bool(got)

    # -------------------------------------------------------------- errors
    def who(self, vranks: Sequence[int]) -> list[str]:
        return [self.hc.describe(self.members[v]) for v in vranks]

    def absent(self, waiting_for: Sequence[int]) -> list[str]:
        """Members that did not take part: those of this node that never entered, else the peers
        this process was waiting for (and their subtrees' members on other nodes)."""
        here, elsewhere = self.hc._cstate.board.absent(self.members, self.seq)
        if here:
            return [self.hc.describe(r) for r in here]
        return self.who(waiting_for)

    def timeout_error(self, waiting_for: Sequence[int], verb: str, deadline: Deadline | None = None) -> MPIQTimeoutError:
        missing = self.absent(waiting_for)
        deadline = deadline or self.deadline
        return MPIQTimeoutError(
            f"{self.name} on {self.hc.describe(self.hc._me)} timed out after {deadline.timeout:g} s; "
            f"{', '.join(missing)} {'did not take part' if verb is None else verb}.",
            missing,
        )

    def failure(self, exc: BaseException) -> RemoteFailure:
        return RemoteFailure(self.hc.describe(self.hc._me), f"{type(exc).__name__}: {exc}")

    def notify(self, failure: RemoteFailure) -> None:
        """Pass a failure down the tree; best effort within a few seconds."""
        sends = {c: self.post(failure, c) for c in self.children}
        try:
            self.wait_sends(sends, Deadline(min(self.deadline.timeout, _FAILURE_NOTICE_S)))
        except MPIQTimeoutError:
            pass

    def raise_remote(self, failure: RemoteFailure):
        raise MPIQError(f"{self.name} failed on {failure.origin}: {failure.message}")

    def receive_from_parent(self) -> Any:
        """The one message from the parent: probed directly (the tag is this collective's own)."""
        hc, src, tag = self.hc, self.members[self.parent], self.tag
        comm = hc._coll
        msg = comm.improbe(src, tag)
        if msg is None:
            msg = poll(lambda: comm.improbe(src, tag), self.deadline)
            if msg is None:
                raise self.timeout_error([self.parent], None)
        value = msg.recv()
        if type(value) is OOBHeader:
            bufs, reqs = start_buffers(hc._coll_data, value, src, tag)
            if not _Testall(reqs) and poll(lambda: True if _Testall(reqs) else None, self.deadline) is None:
                self.engine.abandon(reqs)
                raise self.timeout_error([self.parent], None)
            value = loads(value.data, bufs)
        return value


def everyone(hc: "HybridComm", root: int) -> list[int]:
    return [root] + [p for p in range(hc.size) if p != root]


def skip(hc: "HybridComm") -> None:
    """Use up one collective number without communicating (a step that was not reached)."""
    st = hc._cstate
    st.seq += 1
    st.board.enter(st.seq)


def down(hc: "HybridComm", name: str, root: int, members: Callable[[], list[int]], key: tuple,
         make: Callable[[], Any] | None, split: bool, timeout: float | None, flat: bool = False) -> Any:
    """Root-to-members along the tree. ``make()`` (root only) returns one Frame (``split=False``:
    every member gets it) or one Frame per non-root member in vrank order (``split=True``).
    Returns what this member keeps: the root's None, a Frame, or None for non-members."""
    op = _Op(hc, name, key, members, timeout, flat)
    if op.v is None:
        return None
    if op.v == 0:
        try:
            payload = make()
        except Exception as exc:
            op.notify(op.failure(exc))
            raise
    else:
        payload = op.receive_from_parent()
        if type(payload) is RemoteFailure:
            op.notify(payload)
            op.raise_remote(payload)
    if split:
        base = op.v if op.v else 1  # the root's payload starts at vrank 1
        sends = {c: op.post(payload[c - base:op.end(c) - base], c) for c in op.children}
        mine = payload[0] if op.v else None
    else:
        sends = op.post_all(payload, op.children)
        mine = payload if op.v else None
    op.wait_sends(sends)
    return mine


def up(hc: "HybridComm", name: str, root: int, members: Callable[[], list[int]], key: tuple,
       obj: Any, timeout: float | None, flat: bool = False) -> list[Any] | None:
    """Members-to-root along the tree: the root returns every non-root member's object in vrank
    order. On expiry the root *flushes* the tree: the members still waiting for a child pass up
    what they have within a short grace, so ``.partial`` holds every contribution that was sent,
    wherever it was held up; only the members that never sent are missing. Members other than
    the root return None, also when the gather fails: their part was delivered."""
    op = _Op(hc, name, key, members, timeout, flat)
    if op.v is None:
        return None
    v = op.v
    failure = mine = None
    if v:
        try:
            mine = Frame.of(obj)
        except Exception as exc:
            failure = op.failure(exc)
    if op.flat and v == 0:
        return _flat_root(op)
    recvs = {c: op.receive(c) for c in op.children}
    flush = None
    if v and op.children:
        flush = op.receive(op.parent, op.tag + _TAG_SPACE)
    # The root gives up at its deadline and flushes; the others wait longer, for its flush.
    root_grace = min(1.0, max(0.2, op.deadline.timeout / 4))
    complete = op.wait_receives(recvs, Deadline(op.deadline.timeout + 2 * root_grace) if v else None, flush)
    flushed = flush is not None and flush._state == 2
    grace = None
    if not complete:  # timed out, or flushed by the parent: flush the subtrees still missing
        grace = flush._value if flushed else root_grace
        waiting = [c for c, r in recvs.items() if r._state != 2]
        sends = {c: op.post(grace / 2, c, op.tag + _TAG_SPACE) for c in waiting}
        complete = op.wait_receives(recvs, deadline=Deadline(grace * 0.9))
        try:
            op.wait_sends(sends, Deadline(grace * 0.2))
        except MPIQTimeoutError:
            pass
    if flush is not None and flush._state != 2:
        flush.cancel()
    got: dict[int, Any] = {}
    for c, r in recvs.items():
        if r._state == 2:
            value = r._value
            if type(value) is RemoteFailure:
                failure = failure or value
            else:
                got.update(zip(range(c, op.end(c)), value))
        else:
            r.abandon()
    if v:
        if failure is not None:
            op.wait_sends({op.parent: op.post(failure, op.parent)})
            op.raise_remote(failure)
        # Incomplete after the grace: pass up what arrived (None for the rest); the root names
        # the missing members in its error.
        bundle = [mine] + [got.get(u) for u in range(v + 1, op.end(v))]
        op.wait_sends({op.parent: op.post(bundle, op.parent)}, None if grace is None else Deadline(grace))
        return None
    if failure is not None:
        op.raise_remote(failure)
    return _gathered(op, got, complete)


def _flat_root(op: _Op) -> list[Any]:
    """The root of a flat gather: probes ``ANY_SOURCE`` on the collective's own tag (no other
    receive can want it), so each poll costs one probe whatever the number of members."""
    n = len(op.members)
    hc = op.hc
    comm, data, tag = hc._coll, hc._coll_data, op.tag
    index = {op.members[u]: u for u in range(1, n)}
    got: dict[int, Any] = {}
    failures: list[RemoteFailure] = []
    buffering: list[tuple] = []  # (vrank, header, bufs, reqs) of contributions with big buffers
    st = MPI.Status()

    def step():
        while True:
            msg = comm.improbe(MPI.ANY_SOURCE, tag, st)
            if msg is None:
                break
            value = msg.recv()
            src = st.Get_source()
            if type(value) is OOBHeader:
                buffering.append((index.get(src), value, *start_buffers(data, value, src, tag)))
            elif type(value) is RemoteFailure:
                failures.append(value)
            elif src in index:
                got[index[src]] = value[0]
        for item in list(buffering):
            if _Testall(item[3]):
                buffering.remove(item)
                if item[0] is not None:
                    got[item[0]] = loads(item[1].data, item[2])[0]
        return True if len(got) + len(failures) >= n - 1 else None

    complete = step() is not None or poll(step, op.deadline) is not None
    for item in buffering:
        op.engine.abandon(item[3])
    if failures:
        op.raise_remote(failures[0])
    return _gathered(op, got, complete)


def _gathered(op: _Op, got: dict[int, Any], complete: bool) -> list[Any]:
    n = len(op.members)
    frames = [got.get(u) for u in range(1, n)]
    values = [None if f is None else f.load() for f in frames]
    if not complete or None in frames:
        missing = [u for u in range(1, n) if frames[u - 1] is None]
        first = op.timeout_error(missing, None)
        arrived = n - 1 - len(missing)
        raise MPIQTimeoutError(
            f"{first} {arrived} of {n - 1} contribution(s) arrived and are kept in .partial.",
            first.missing,
            partial=values,
        )
    return values
