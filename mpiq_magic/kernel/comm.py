"""The heterogeneous hybrid communicator (paper section 3.1) and its operations (section 4).

Library traffic never shares a context with user traffic: point-to-point calls made through
``hc`` use one duplicate of the parent communicator, collectives another, barriers their own
sub-communicators. Every blocking call polls with a deadline and names the peers that did not
answer when it expires.
"""

from __future__ import annotations

import operator
import time
from typing import Any, Sequence

from mpi4py import MPI

from . import barrier as _barrier
from . import collectives as _coll
from .addressing import ANY_SOURCE, ANY_TAG, Address, Device, QRank, Rank, as_address
from .config import DeviceSpec
from .errors import AddressError, MPIQError, MPIQTimeoutError, UsageError
from .requests import (
    BufferReceive,
    Engine,
    ObjectReceive,
    PostedReceive,
    Request,
    SendRequest,
)
from .topology import Topology
from .transfer import _SIMPLE, OOBHeader, Frame, post_object
from .waiting import DEFAULT_TIMEOUT, ENGINES as _ENGINES, Deadline, poll

#: Library layers that get their own communication context at :func:`~mpiq_magic.kernel.init`
#: (a collective ``Dup`` then, so no layer ever needs one later). Every tag on every context
#: stays the user's or the layer's own: nothing is reserved from users.
LIBRARY_LAYERS = ("dispatch", "cluster")

_Testall = MPI.Request.Testall
_QUICK_PROBES = 64  # ~10 µs of probing before a receive sets up its deadline-polled wait
_TAG_UB = int(MPI.COMM_WORLD.Get_attr(MPI.TAG_UB) or 32767)


def _wait_or_raise(reqs: list[MPI.Request], timeout: float, describe, status: MPI.Status | None = None) -> None:
    deadline = Deadline(timeout)
    if len(reqs) == 1:
        (req,) = reqs
        done = poll(lambda: True if req.Test(status) else None, deadline)
    else:
        done = poll(lambda: True if _Testall(reqs) else None, deadline)
    if done is None:
        what = describe()
        raise MPIQTimeoutError(f"{what} did not complete within {deadline.timeout:g} s.", [what])


def _check_tag(tag: Any, receive: bool) -> int:
    """The tag as an int, or a UsageError (an MPIQError) naming it (a raw MPI error stack otherwise)."""
    try:
        value = operator.index(tag) if not isinstance(tag, bool) else None
    except TypeError:
        value = None
    if value is None:
        raise UsageError(f"A tag is an int in 0..{_TAG_UB}, got {tag!r}.")
    if receive and value == ANY_TAG:
        return value
    if value < 0:
        raise UsageError(
            f"Tag {value} is negative; tags are 0..{_TAG_UB}" + (" or ANY_TAG." if receive else ".")
        )
    if value > _TAG_UB:
        raise UsageError(f"Tag {value} is above this MPI's largest tag, {_TAG_UB}.")
    return value


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
        self._n = parent.Get_size()
        self.rank = self._classical.index(self._me) if self._me in self._classical else None
        self.qrank = self._quantum.index(self._me) if self._me in self._quantum else None
        self.role = "classical" if self.rank is not None else "quantum"
        self.device = self.devices[self.qrank] if self.qrank is not None else None
        # Private contexts: user messages on the parent comm can never match library traffic.
        self._p2p = parent.Dup()
        self._p2p_data = parent.Dup()  # out-of-band buffers of objects sent on _p2p
        self._coll = parent.Dup()
        self._coll_data = parent.Dup()
        self._ccomm = self._coll.Split(0 if self.rank is not None else MPI.UNDEFINED, self._me)
        self._qcomm = self._coll.Split(0 if self.qrank is not None else MPI.UNDEFINED, self._me)
        self._all_comm = parent.Dup()  # ALL barriers: their own context, fixed tags
        self._layer_comms = {name: (parent.Dup(), parent.Dup()) for name in LIBRARY_LAYERS}
        self._layer_views: dict[str, HybridComm] = {}
        self._layer_name: str | None = None
        self._engine = Engine(self._p2p, self._p2p_data)
        self._cstate = _coll.CollState(self)
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
        comms = owner._layer_comms.get(name)
        if comms is None:
            comms = owner._layer_comms[name] = (owner._parent.Dup(), owner._parent.Dup())
        view = object.__new__(type(self))
        view.__dict__.update(owner.__dict__)
        view._p2p, view._p2p_data = comms
        view._engine = Engine(*comms)
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
        kind = peer.__class__
        if kind is int and 0 <= peer < self._n:
            return peer
        if kind is QRank and 0 <= peer.index < len(self._quantum):
            return self._quantum[peer.index]
        if kind is Rank and 0 <= peer.index < len(self._classical):
            return self._classical[peer.index]
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
    def _who(self, src: int) -> str:
        return "any process" if src == ANY_SOURCE else self.describe(src)

    def send(self, obj: Any, dest: Address, tag: int = 0, timeout: float | None = None) -> None:
        """MPIQ_Send for a Python object (large buffers such as numpy arrays travel raw, uncopied)."""
        if self._freed:
            self._check_open()
        if tag.__class__ is not int or not 0 <= tag <= _TAG_UB:
            tag = _check_tag(tag, False)
        d = self.resolve(dest)
        if type(obj) in _SIMPLE:
            req = self._p2p.isend(obj, d, tag)
            if req.Test():  # eager protocol: small messages complete at once
                return
            reqs = [req]
        else:
            reqs = post_object(self._p2p, self._p2p_data, obj, d, tag)
            if _Testall(reqs):
                return
        _wait_or_raise(reqs, timeout or self.timeout, lambda: f"send to {self.describe(d)} (tag {tag})")

    def isend(self, obj: Any, dest: Address, tag: int = 0) -> Request:
        """Non-blocking send of a Python object; returns a :class:`Request`."""
        self._check_open()
        tag = _check_tag(tag, False)
        d = self.resolve(dest)
        reqs = post_object(self._p2p, self._p2p_data, obj, d, tag)
        return SendRequest(reqs, lambda: f"send to {self.describe(d)} (tag {tag})", self.timeout)

    def recv(
        self,
        source: Address = ANY_SOURCE,
        tag: int = ANY_TAG,
        timeout: float | None = None,
        status: MPI.Status | None = None,
    ) -> Any:
        """MPIQ_Recv for a Python object; ``status`` gets the source and tag as in mpi4py."""
        if self._freed:
            self._check_open()
        if tag.__class__ is not int or not ANY_TAG <= tag <= _TAG_UB:
            tag = _check_tag(tag, True)
        src = self.resolve(source)
        engine = self._engine
        if not engine.queue:
            # Nothing posted ahead of this receive on this context, and nothing can be posted
            # while it blocks: matching directly is exact (other engines progress in poll).
            # A status is needed only to learn a wildcard's source and tag (for out-of-band buffers).
            st = status if status is not None or (src != ANY_SOURCE and tag != ANY_TAG) else MPI.Status()
            comm = self._p2p
            msg = comm.improbe(src, tag, st)
            if msg is None and not _ENGINES:  # a short inline spin catches a prompt reply cheaply
                for _ in range(_QUICK_PROBES):
                    msg = comm.improbe(src, tag, st)
                    if msg is not None:
                        break
            if msg is None:
                deadline = Deadline(timeout or self.timeout)
                msg = poll(lambda: comm.improbe(src, tag, st), deadline)
                if msg is None:
                    what = self._recv_label(src, tag)
                    raise MPIQTimeoutError(f"{what} did not complete within {deadline.timeout:g} s.", [what])
            obj = msg.recv()
            if type(obj) is not OOBHeader:
                return obj
            r = ObjectReceive(engine, src, tag, None, lambda: self._recv_label(src, tag), self.timeout)
            r.match_header(obj, *((src, tag) if st is None else (st.Get_source(), st.Get_tag())))
            return self._complete(r, timeout)
        r = ObjectReceive(engine, src, tag, status, lambda: self._recv_label(src, tag), self.timeout)
        engine.post(r)
        return self._complete(r, timeout)

    def _recv_label(self, src: int, tag: int) -> str:
        return f"receive from {self._who(src)} (tag {'any' if tag == ANY_TAG else tag})"

    @staticmethod
    def _complete(r, timeout: float | None) -> Any:
        try:
            return r.wait(timeout)
        except MPIQTimeoutError:
            r.abandon()  # a blocking receive that gave up must not take a later message
            raise

    def irecv(self, source: Address = ANY_SOURCE, tag: int = ANY_TAG, status: MPI.Status | None = None) -> Request:
        """Post a receive of a Python object; it matches messages while this process waits in
        any MPI-Q call. ``wait()`` returns the object."""
        self._check_open()
        tag = _check_tag(tag, True)
        src = self.resolve(source)
        r = ObjectReceive(self._engine, src, tag, status, lambda: self._recv_label(src, tag), self.timeout)
        self._engine.post(r)
        return r

    def Send(self, buf: Any, dest: Address, tag: int = 0, timeout: float | None = None) -> None:
        """MPIQ_Send for a buffer (no pickling)."""
        if self._freed:
            self._check_open()
        if tag.__class__ is not int or not 0 <= tag <= _TAG_UB:
            tag = _check_tag(tag, False)
        r = self.resolve(dest)
        req = self._p2p.Isend(buf, r, tag)
        if not req.Test():
            _wait_or_raise([req], timeout or self.timeout, lambda: f"Send to {self.describe(r)} (tag {tag})")

    def Isend(self, buf: Any, dest: Address, tag: int = 0) -> Request:
        self._check_open()
        tag = _check_tag(tag, False)
        r = self.resolve(dest)
        req = self._p2p.Isend(buf, r, tag)
        return SendRequest([req], lambda: f"Send to {self.describe(r)} (tag {tag})", self.timeout)

    def Recv(
        self,
        buf: Any,
        source: Address = ANY_SOURCE,
        tag: int = ANY_TAG,
        timeout: float | None = None,
        status: MPI.Status | None = None,
    ) -> None:
        """MPIQ_Recv into a buffer (no pickling)."""
        if self._freed:
            self._check_open()
        if tag.__class__ is not int or not ANY_TAG <= tag <= _TAG_UB:
            tag = _check_tag(tag, True)
        src = self.resolve(source)
        if not self._engine.queue:
            req = self._p2p.Irecv(buf, src, tag)
            if req.Test(status):
                return
            r = PostedReceive(req, status, f"Recv from {self._who(src)} (tag {tag})", self.timeout)
        else:
            r = BufferReceive(self._engine, buf, src, tag, status, f"Recv from {self._who(src)} (tag {tag})", self.timeout)
            self._engine.post(r)
        try:
            r.wait(timeout)
        except MPIQTimeoutError:
            if isinstance(r, PostedReceive):
                r.cancel()
            else:
                r.abandon()
            raise

    def Irecv(self, buf: Any, source: Address = ANY_SOURCE, tag: int = ANY_TAG, status: MPI.Status | None = None) -> Request:
        """Post a receive into a buffer; posted to MPI at once unless other receives are pending."""
        self._check_open()
        tag = _check_tag(tag, True)
        src = self.resolve(source)
        label = lambda: f"Recv from {self._who(src)} (tag {'any' if tag == ANY_TAG else tag})"  # noqa: E731
        if not self._engine.queue:
            return PostedReceive(self._p2p.Irecv(buf, src, tag), status, label, self.timeout)
        r = BufferReceive(self._engine, buf, src, tag, status, label, self.timeout)
        self._engine.post(r)
        return r

    # ----------------------------------------------------------------- collectives
    def _root(self, root: Address, op: str) -> int:
        r = self.resolve(root)
        if r not in self._classical:
            raise AddressError(f"The root of {op} must be a classical rank, got {self.describe(r)}.")
        return r

    def bcast(self, obj: Any = None, root: Address = Rank(0), timeout: float | None = None) -> Any:
        """MPIQ_Bcast: the classical root's object reaches every process."""
        self._check_open()
        r = self._root(root, "bcast")
        got = _coll.down(self, "bcast", r, lambda: _coll.everyone(self, r), ("all", r),
                         lambda: Frame.of(obj), False, timeout)
        return obj if self._me == r else got.load()

    def scatter(
        self,
        items: Any = None,
        root: Address = Rank(0),
        send_q: Sequence[Sequence[int]] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """MPIQ_Scatter: item j goes to qrank j; with ``send_q`` one circuit is split by qubit groups."""
        self._check_open()
        r = self._root(root, "scatter")

        def make():
            return [Frame.of(x) for x in self._scatter_chunks(items, send_q)]

        got = _coll.down(self, "scatter", r, lambda: [r, *self._quantum], ("q", r), make, True, timeout, self._cstate.flat)
        return None if got is None else got.load()

    def _scatter_chunks(self, items: Any, send_q: Sequence[Sequence[int]] | None) -> list[Any]:
        if send_q is not None:
            from .sendq import split_circuit

            items = split_circuit(items, send_q)
        items = list(items)
        if len(items) != self.quantum_size:
            raise UsageError(
                f"scatter needs one item per quantum process: got {len(items)} item(s) for "
                f"{self.quantum_size} qrank(s)."
            )
        return items

    def gather(self, obj: Any = None, root: Address = Rank(0), timeout: float | None = None) -> list[Any] | None:
        """MPIQ_Gather: quantum contributions reach the classical root, ordered by qrank."""
        self._check_open()
        r = self._root(root, "gather")
        return _coll.up(self, "gather", r, lambda: [r, *self._quantum], ("q", r), obj, timeout, self._cstate.flat)

    def allgather(self, obj: Any = None, timeout: float | None = None) -> list[Any] | None:
        """MPIQ_Allgather: gather to classical rank 0, then a bcast among the classical ranks."""
        self._check_open()
        deadline = Deadline(self.timeout if timeout is None else timeout)
        try:
            gathered = self.gather(obj, Rank(0), timeout=deadline.timeout)
        except MPIQError:
            _coll.skip(self)  # keep the collective numbering aligned with the other processes
            raise
        root = self._classical[0]
        remaining = max(deadline.end - time.monotonic(), 1e-3)
        got = _coll.down(self, "allgather", root, lambda: list(self._classical), ("c", root),
                         lambda: Frame.of(gathered), False, remaining)
        if self.qrank is not None:
            return None
        return gathered if self._me == root else got.load()

    # ----------------------------------------------------------------- barrier
    def barrier(self, flag: int = _barrier.ALL, timeout: float | None = None, record: bool = True) -> _barrier.BarrierRecord:
        """MPIQ_Barrier: CC among classical ranks, QQ among quantum processes, ALL for both."""
        if self._freed:
            self._check_open()
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
        self._engine.close()
        for view in self._layer_views.values():
            view._engine.close()
        self._cstate.free()
        layers = tuple(c for pair in self._layer_comms.values() for c in pair)
        for comm in (self._ccomm, self._qcomm, self._all_comm, self._coll, self._coll_data,
                     self._p2p, self._p2p_data, *layers):
            if comm != MPI.COMM_NULL:
                comm.Free()

    def __enter__(self) -> "HybridComm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()
