"""The heterogeneous hybrid communicator (paper section 3.1) and its operations (section 4).

Library traffic never shares a context with user traffic: point-to-point calls made through
``hc`` use one duplicate of the parent communicator, collectives another, barriers their own
sub-communicators. Every blocking call polls with a deadline and names the peers that did not
answer when it expires.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from mpi4py import MPI

from . import barrier as _barrier
from .addressing import ANY_SOURCE, ANY_TAG, Address, Device, QRank, Rank, as_address
from .config import DeviceSpec
from .errors import AddressError, MPIQError, MPIQTimeoutError
from .topology import Topology
from .transfer import (
    ArrayHeader,
    RemoteFailure,
    finish_array,
    is_buffer_array,
    pending,
    post_item,
    try_receive_item,
    wait_requests,
)
from .waiting import DEFAULT_TIMEOUT, Deadline, poll

_TAG_SPACE = 16384

#: Library layers that get their own communication context at :func:`~mpiq_magic.kernel.init`
#: (a collective ``Dup`` then, so no layer ever needs one later). Every tag on every context
#: stays the user's or the layer's own: nothing is reserved from users.
LIBRARY_LAYERS = ("dispatch", "cluster")


class Request:
    """A non-blocking MPI-Q operation; ``wait`` takes a timeout like every blocking call."""

    def __init__(self, test, describe: str, default_timeout: float):
        self._test = test
        self._describe = describe
        self._timeout = default_timeout
        self._done = False
        self._value: Any = None

    def test(self) -> tuple[bool, Any]:
        if not self._done:
            result = self._test()
            if result is not None:
                self._done, self._value = True, result[0]
        return self._done, self._value

    def wait(self, timeout: float | None = None) -> Any:
        deadline = Deadline(self._timeout if timeout is None else timeout)
        if poll(lambda: True if self.test()[0] else None, deadline) is None:
            raise MPIQTimeoutError(
                f"{self._describe} did not complete within {deadline.timeout:g} s.", [self._describe]
            )
        return self._value


def _wait_or_raise(reqs: list[MPI.Request], timeout: float, describe, status: MPI.Status | None = None) -> None:
    deadline = Deadline(timeout)
    if len(reqs) == 1:
        (req,) = reqs
        done = poll(lambda: True if req.Test(status) else None, deadline)
    else:
        done = poll(lambda: True if MPI.Request.Testall(reqs) else None, deadline)
    if done is None:
        what = describe()
        raise MPIQTimeoutError(f"{what} did not complete within {deadline.timeout:g} s.", [what])


class HybridComm:
    """Classical ranks and quantum processes in one domain; see :func:`mpiq_magic.kernel.init`."""

    def __init__(
        self,
        parent: MPI.Intracomm,
        classical_ranks: Sequence[int],
        devices: Sequence[DeviceSpec],
        topology: Topology,
        timeout: float | None = None,
    ):
        self._parent = parent
        self._me = parent.Get_rank()
        self._classical = tuple(classical_ranks)
        self._quantum = tuple(r for r in range(parent.Get_size()) if r not in set(self._classical))
        self.devices: tuple[DeviceSpec, ...] = tuple(devices)
        self.topology = topology
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        self._by_device = {spec.key: j for j, spec in enumerate(self.devices)}
        self.rank = self._classical.index(self._me) if self._me in self._classical else None
        self.qrank = self._quantum.index(self._me) if self._me in self._quantum else None
        self.role = "classical" if self.rank is not None else "quantum"
        self.device = self.devices[self.qrank] if self.qrank is not None else None
        # Private contexts: user messages on the parent comm can never match library traffic.
        self._p2p = parent.Dup()
        self._coll = parent.Dup()
        self._ccomm = self._coll.Split(0 if self.rank is not None else MPI.UNDEFINED, self._me)
        self._qcomm = self._coll.Split(0 if self.qrank is not None else MPI.UNDEFINED, self._me)
        self._all_comm = parent.Dup()  # ALL barriers: their own context, fixed tags
        self._layer_comms = {name: parent.Dup() for name in LIBRARY_LAYERS}
        self._layer_views: dict[str, HybridComm] = {}
        self._layer_name: str | None = None
        self._seq = 0
        self._barriers = _barrier.BarrierState()
        self._freed = False
        # Collective set-up now, not on first use, so every barrier call is cheap and no
        # process can skip a set-up the others are waiting in.
        if self.qrank is not None:
            self._barriers.qsync(self, Deadline(self.timeout))
        else:
            self._barriers.arrivals(self._ccomm)

    # ----------------------------------------------------------------- attributes
    @property
    def classical_size(self) -> int:
        return len(self._classical)

    @property
    def quantum_size(self) -> int:
        return len(self._quantum)

    @property
    def size(self) -> int:
        return len(self._classical) + len(self._quantum)

    @property
    def comm_rank(self) -> int:
        """This process's rank in the parent communicator."""
        return self._me

    @property
    def is_classical(self) -> bool:
        return self.rank is not None

    @property
    def is_quantum(self) -> bool:
        return self.qrank is not None

    @property
    def me(self) -> Rank | QRank:
        return Rank(self.rank) if self.rank is not None else QRank(self.qrank)

    def __repr__(self) -> str:
        where = f"rank={self.rank}" if self.is_classical else f"qrank={self.qrank}, device={self.device.key}"
        return (
            f"<HybridComm {self.role} {where}: {self.classical_size} classical, "
            f"{self.quantum_size} quantum>"
        )

    # ----------------------------------------------------------------- library contexts
    def layer(self, name: str) -> "HybridComm":
        """This communicator seen by library layer ``name``: same processes and addresses, but
        its point-to-point traffic runs on the layer's own context.

        Messages of a layer never match user messages or another layer's, whatever their tags
        (as ``mpi4py.util.pkl5`` keeps its own context). The layers in :data:`LIBRARY_LAYERS`
        exist from ``init``; the first call for any other name is collective over the parent
        communicator (it duplicates it). Views are cached and freed with ``hc``.
        """
        self._check_open()
        owner = self if self._layer_name is None else self._owner
        view = owner._layer_views.get(name)
        if view is not None:
            return view
        comm = owner._layer_comms.get(name)
        if comm is None:
            comm = owner._layer_comms[name] = owner._parent.Dup()
        view = object.__new__(type(self))
        view.__dict__.update(owner.__dict__)
        view._p2p = comm
        view._layer_name = name
        view._owner = owner
        owner._layer_views[name] = view
        return view

    @property
    def layer_name(self) -> str | None:
        """The library layer this view belongs to, or None for the user's communicator."""
        return self._layer_name

    def _check_open(self) -> None:
        if self._freed:
            raise MPIQError("This hybrid communicator was freed; create a new one with init().")

    # ----------------------------------------------------------------- addressing
    def resolve(self, peer: Address) -> int:
        """The parent-communicator rank of a peer given as Rank, QRank, Device, tuple or int."""
        kind = type(peer)
        if kind is QRank and 0 <= peer.index < len(self._quantum):
            return self._quantum[peer.index]
        if kind is Rank and 0 <= peer.index < len(self._classical):
            return self._classical[peer.index]
        if kind is int and 0 <= peer < self.size:
            return peer
        addr = as_address(peer)
        if isinstance(addr, Rank):
            if not 0 <= addr.index < len(self._classical):
                raise AddressError(
                    f"{addr} does not exist: this communicator has {len(self._classical)} classical rank(s)."
                )
            return self._classical[addr.index]
        if isinstance(addr, QRank):
            if not 0 <= addr.index < len(self._quantum):
                raise AddressError(
                    f"{addr} does not exist: this communicator has {len(self._quantum)} quantum process(es)."
                )
            return self._quantum[addr.index]
        if isinstance(addr, Device):
            if addr not in self._by_device:
                known = ", ".join(f"({h}, {d})" for h, d in self._by_device) or "none"
                raise AddressError(f"No quantum process is bound to {addr}; bound devices: {known}.")
            return self._quantum[self._by_device[addr]]
        if addr == ANY_SOURCE:
            return ANY_SOURCE
        if not 0 <= addr < self.size:
            raise AddressError(f"Comm rank {addr} is out of range for a communicator of size {self.size}.")
        return addr

    def address_of(self, comm_rank: int) -> Rank | QRank:
        """The Rank or QRank of a parent-communicator rank."""
        if comm_rank in self._classical:
            return Rank(self._classical.index(comm_rank))
        if comm_rank in self._quantum:
            return QRank(self._quantum.index(comm_rank))
        raise AddressError(f"Comm rank {comm_rank} is not part of this hybrid communicator.")

    def describe(self, comm_rank: int) -> str:
        """'rank 0' or 'qrank 2 (device 127.0.0.1:2)', for error messages."""
        addr = self.address_of(comm_rank)
        if isinstance(addr, QRank):
            return f"{addr} (device {self.devices[addr.index].name})"
        return str(addr)

    # ----------------------------------------------------------------- point-to-point
    def send(self, obj: Any, dest: Address, tag: int = 0, timeout: float | None = None) -> None:
        """MPIQ_Send for a Python object (numpy arrays travel as raw buffers)."""
        if not is_buffer_array(obj):
            req = self._p2p.isend(obj, self.resolve(dest), tag)
            if req.Test():  # eager protocol: small messages complete at once
                return
            reqs = [req]
        else:
            reqs = post_item(self._p2p, obj, self.resolve(dest), tag)
        _wait_or_raise(reqs, timeout or self.timeout, lambda: f"send to {self.describe(self.resolve(dest))} (tag {tag})")

    def isend(self, obj: Any, dest: Address, tag: int = 0) -> Request:
        r = self.resolve(dest)
        reqs = post_item(self._p2p, obj, r, tag)
        done = lambda: (None,) if MPI.Request.Testall(reqs) else None  # noqa: E731
        return Request(done, f"send to {self.describe(r)} (tag {tag})", self.timeout)

    def recv(
        self,
        source: Address = ANY_SOURCE,
        tag: int = ANY_TAG,
        timeout: float | None = None,
        status: MPI.Status | None = None,
    ) -> Any:
        """MPIQ_Recv for a Python object; ``status`` gets the source and tag as in mpi4py."""
        src = self.resolve(source)
        st = status if status is not None else MPI.Status()
        msg = self._p2p.improbe(src, tag, st)
        if msg is not None:
            item = msg.recv()
            if not isinstance(item, ArrayHeader):
                return item
            # The raw buffer of an array travels right behind its header, from the same source.
            return finish_array(self._p2p, item, st.Get_source(), st.Get_tag(), Deadline(timeout or self.timeout))
        deadline = Deadline(timeout or self.timeout)
        got = poll(lambda: try_receive_item(self._p2p, src, tag, deadline, st), deadline)
        if got is None:
            who = "any process" if src == ANY_SOURCE else self.describe(src)
            what = f"receive from {who} (tag {'any' if tag == ANY_TAG else tag})"
            raise MPIQTimeoutError(f"{what} did not complete within {deadline.timeout:g} s.", [what])
        return got[0]

    def irecv(self, source: Address = ANY_SOURCE, tag: int = ANY_TAG, status: MPI.Status | None = None) -> Request:
        src = self.resolve(source)
        deadline = Deadline(self.timeout)
        who = "any process" if src == ANY_SOURCE else self.describe(src)
        return Request(
            lambda: try_receive_item(self._p2p, src, tag, deadline, status),
            f"receive from {who} (tag {'any' if tag == ANY_TAG else tag})",
            self.timeout,
        )

    def Send(self, buf: Any, dest: Address, tag: int = 0, timeout: float | None = None) -> None:
        """MPIQ_Send for a buffer (no pickling)."""
        r = self.resolve(dest)
        req = self._p2p.Isend(buf, r, tag)
        if not req.Test():
            _wait_or_raise([req], timeout or self.timeout, lambda: f"Send to {self.describe(r)} (tag {tag})")

    def Isend(self, buf: Any, dest: Address, tag: int = 0) -> Request:
        r = self.resolve(dest)
        req = self._p2p.Isend(buf, r, tag)
        return Request(lambda: (None,) if req.Test() else None, f"Send to {self.describe(r)} (tag {tag})", self.timeout)

    def Recv(
        self,
        buf: Any,
        source: Address = ANY_SOURCE,
        tag: int = ANY_TAG,
        timeout: float | None = None,
        status: MPI.Status | None = None,
    ) -> None:
        """MPIQ_Recv into a buffer (no pickling)."""
        src = self.resolve(source)
        req = self._p2p.Irecv(buf, src, tag)
        if not req.Test(status):
            who = "any process" if src == ANY_SOURCE else self.describe(src)
            _wait_or_raise([req], timeout or self.timeout, lambda: f"Recv from {who} (tag {tag})", status)

    def Irecv(self, buf: Any, source: Address = ANY_SOURCE, tag: int = ANY_TAG, status: MPI.Status | None = None) -> Request:
        src = self.resolve(source)
        req = self._p2p.Irecv(buf, src, tag)
        who = "any process" if src == ANY_SOURCE else self.describe(src)
        return Request(lambda: (None,) if req.Test(status) else None, f"Recv from {who} (tag {tag})", self.timeout)

    # ----------------------------------------------------------------- collectives
    def _next_tag(self) -> int:
        self._seq += 1
        return self._seq % _TAG_SPACE

    def _root(self, root: Address, op: str) -> int:
        r = self.resolve(root)
        if r not in self._classical:
            raise AddressError(f"The root of {op} must be a classical rank, got {self.describe(r)}.")
        return r

    def _fan_out(self, op: str, items: dict[int, Any], tag: int, deadline: Deadline) -> None:
        reqs = {r: post_item(self._coll, item, r, tag) for r, item in items.items()}
        if not wait_requests([q for rs in reqs.values() for q in rs], deadline):
            missing = [self.describe(r) for r in pending(reqs)]
            raise MPIQTimeoutError(
                f"{op} from {self.describe(self._me)} timed out after {deadline.timeout:g} s: "
                f"{', '.join(missing)} did not receive.",
                missing,
            )

    def _fail_fan_out(self, op: str, exc: BaseException, receivers: Sequence[int], tag: int) -> None:
        """Tell every receiver that the root failed, so none of them waits for its timeout."""
        failure = RemoteFailure(self.describe(self._me), f"{type(exc).__name__}: {exc}")
        reqs = [q for r in receivers for q in post_item(self._coll, failure, r, tag)]
        wait_requests(reqs, Deadline(min(self.timeout, 5.0)))

    def _receive_from(self, op: str, src: int, tag: int, deadline: Deadline) -> Any:
        got = poll(lambda: try_receive_item(self._coll, src, tag, deadline), deadline)
        if got is None:
            who = self.describe(src)
            raise MPIQTimeoutError(
                f"{op} on {self.describe(self._me)} timed out after {deadline.timeout:g} s waiting for {who}.",
                [who],
            )
        item = got[0]
        if isinstance(item, RemoteFailure):
            raise MPIQError(f"{op} failed on {item.origin}: {item.message}")
        return item

    def _fan_in(self, op: str, sources: Sequence[int], tag: int, deadline: Deadline) -> list[Any]:
        results: dict[int, Any] = {}

        def step() -> bool:
            for src in sources:
                if src not in results:
                    got = try_receive_item(self._coll, src, tag, deadline)
                    if got is not None:
                        results[src] = got[0]
            return len(results) == len(sources)

        complete = poll(lambda: True if step() else None, deadline) is not None
        ordered = [results.get(src) for src in sources]
        if not complete:
            missing = [self.describe(s) for s in sources if s not in results]
            err = MPIQTimeoutError(
                f"{op} on {self.describe(self._me)} timed out after {deadline.timeout:g} s; "
                f"no contribution from {', '.join(missing)}. "
                f"{len(results)} of {len(sources)} contribution(s) arrived and are kept in .partial.",
                missing,
            )
            err.partial = ordered
            raise err
        return ordered

    def bcast(self, obj: Any = None, root: Address = Rank(0), timeout: float | None = None) -> Any:
        """MPIQ_Bcast: the classical root's object reaches every process."""
        tag, r = self._next_tag(), self._root(root, "bcast")
        deadline = Deadline(self.timeout if timeout is None else timeout)
        if self._me == r:
            self._fan_out("bcast", {p: obj for p in range(self.size) if p != r}, tag, deadline)
            return obj
        return self._receive_from("bcast", r, tag, deadline)

    def scatter(
        self,
        items: Any = None,
        root: Address = Rank(0),
        send_q: Sequence[Sequence[int]] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """MPIQ_Scatter: item j goes to qrank j; with ``send_q`` one circuit is split by qubit groups."""
        tag, r = self._next_tag(), self._root(root, "scatter")
        deadline = Deadline(self.timeout if timeout is None else timeout)
        if self._me == r:
            try:
                chunks = self._scatter_chunks(items, send_q)
            except Exception as exc:
                self._fail_fan_out("scatter", exc, self._quantum, tag)
                raise
            self._fan_out("scatter", dict(zip(self._quantum, chunks)), tag, deadline)
            return None
        if self.qrank is None:
            return None
        return self._receive_from("scatter", r, tag, deadline)

    def _scatter_chunks(self, items: Any, send_q: Sequence[Sequence[int]] | None) -> list[Any]:
        if send_q is not None:
            from .sendq import split_circuit

            items = split_circuit(items, send_q)
        items = list(items)
        if len(items) != self.quantum_size:
            raise ValueError(
                f"scatter needs one item per quantum process: got {len(items)} item(s) for "
                f"{self.quantum_size} qrank(s)."
            )
        return items

    def gather(self, obj: Any = None, root: Address = Rank(0), timeout: float | None = None) -> list[Any] | None:
        """MPIQ_Gather: quantum contributions reach the classical root, ordered by qrank."""
        tag, r = self._next_tag(), self._root(root, "gather")
        deadline = Deadline(self.timeout if timeout is None else timeout)
        if self.qrank is not None:
            self._fan_out("gather", {r: obj}, tag, deadline)
            return None
        if self._me == r:
            return self._fan_in("gather", self._quantum, tag, deadline)
        return None

    def allgather(self, obj: Any = None, timeout: float | None = None) -> list[Any] | None:
        """MPIQ_Allgather: gather to classical rank 0, then distribute to every classical rank."""
        deadline = Deadline(self.timeout if timeout is None else timeout)
        gathered = self.gather(obj, Rank(0), timeout=deadline.timeout)
        tag = self._next_tag()
        if self.qrank is not None:
            return None
        root = self._classical[0]
        remaining = max(deadline.end - time.monotonic(), 1e-3)
        stage2 = Deadline(remaining)
        if self._me == root:
            self._fan_out("allgather", {p: gathered for p in self._classical if p != root}, tag, stage2)
            return gathered
        return self._receive_from("allgather", root, tag, stage2)

    # ----------------------------------------------------------------- barrier
    def barrier(self, flag: int = _barrier.ALL, timeout: float | None = None, record: bool = True) -> _barrier.BarrierRecord:
        """MPIQ_Barrier: CC among classical ranks, QQ among quantum processes, ALL for both."""
        return _barrier.run(self, flag, Deadline(self.timeout if timeout is None else timeout), record)

    # ----------------------------------------------------------------- lifetime
    def free(self) -> None:
        """Release the private communicators and the QQ socket layer (idempotent).

        On a layer view it frees the communicator the view belongs to.
        """
        if self._layer_name is not None:
            self._owner.free()
            return
        if self._freed:
            return
        self._freed = True
        for view in self._layer_views.values():
            view._freed = True
        self._barriers.close()
        layers = tuple(self._layer_comms.values())
        for comm in (self._ccomm, self._qcomm, self._all_comm, self._coll, self._p2p, *layers):
            if comm != MPI.COMM_NULL:
                comm.Free()

    def __enter__(self) -> "HybridComm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()
