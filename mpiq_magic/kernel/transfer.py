"""The wire format of MPI-Q objects: pickle protocol 5 with out-of-band buffers.

As in ``mpi4py.util.pkl5``: an object is pickled with protocol 5; every buffer of at least
:data:`THRESHOLD` bytes that the object exposes through ``PickleBuffer`` (numpy arrays, also
nested inside lists, dicts, dataclasses ...) stays *out of band*: it travels as a raw MPI
message straight from the sender's memory and is received into fresh memory that the
unpickled object then uses, so dtype, shape and bandwidth are kept with no copies.

One object is one message on the point-to-point context ``comm``: either the pickle itself
(received with mpi4py's ``Message.recv``), or, when there are out-of-band buffers, an
:class:`OOBHeader` naming their sizes, followed by the buffers on a second context ``data``
with the same tag. Nobody ever receives on ``data`` with a wildcard: the receiver of a header
knows the source and tag of its buffers, and MPI's order between a pair on one tag keeps them
in step with the headers. So wildcard receives on ``comm`` can never take a buffer meant for
another receive.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from mpi4py import MPI

#: Buffers at least this large travel out of band (same default as mpi4py's ``Pickle``).
THRESHOLD = 256 * 1024

# Types whose pickle can never hold an out-of-band buffer: sent with mpi4py's C pickling.
_SIMPLE = frozenset({bytes, str, int, float, bool, complex, type(None)})

_allocate = MPI.buffer.allocate


def dumps(obj: Any) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj`` with protocol 5; large buffers are returned apart, never copied."""
    bufs: list[memoryview] = []

    def out_of_band(pb: pickle.PickleBuffer) -> bool:
        raw = pb.raw()
        if raw.nbytes < THRESHOLD:
            return True  # in band
        bufs.append(raw)
        return False

    return pickle.dumps(obj, 5, buffer_callback=out_of_band), bufs


def loads(data: bytes, bufs: list) -> Any:
    return pickle.loads(data, buffers=bufs)


class OOBHeader:
    """First message of an object with out-of-band buffers: the pickle and the buffer sizes."""

    __slots__ = ("data", "sizes")

    def __init__(self, data: bytes, sizes: tuple[int, ...]):
        self.data, self.sizes = data, sizes

    def __reduce__(self):
        return (OOBHeader, (self.data, self.sizes))


class Frame:
    """An object already pickled (``data`` + out-of-band ``bufs``), forwarded as is.

    Collectives pickle each item once at the root; the processes on the way forward frames
    without unpickling them, and pickling a frame keeps its buffers out of band.
    """

    __slots__ = ("data", "bufs")

    def __init__(self, data: bytes, bufs: list):
        self.data, self.bufs = data, bufs

    @classmethod
    def of(cls, obj: Any) -> "Frame":
        return cls(*dumps(obj))

    def load(self) -> Any:
        return loads(self.data, self.bufs)

    def __reduce__(self):
        return (Frame, (self.data, [pickle.PickleBuffer(b) for b in self.bufs]))


class RemoteFailure:
    """Sent instead of an item when the sender failed, so receivers raise instead of waiting."""

    __slots__ = ("origin", "message")

    def __init__(self, origin: str, message: str):
        self.origin, self.message = origin, message

    def __reduce__(self):
        return (RemoteFailure, (self.origin, self.message))


def is_buffer_array(item: Any) -> bool:
    return isinstance(item, np.ndarray) and not item.dtype.hasobject


def post_object(comm: MPI.Comm, data_comm: MPI.Comm, obj: Any, dest: int, tag: int) -> list[MPI.Request]:
    """Start sending ``obj``; returns the MPI requests to complete (they keep their buffers alive)."""
    if type(obj) in _SIMPLE:
        return [comm.isend(obj, dest, tag)]
    data, bufs = dumps(obj)
    if not bufs:
        return [comm.Isend(data, dest, tag)]
    reqs = [comm.isend(OOBHeader(data, tuple(b.nbytes for b in bufs)), dest, tag)]
    reqs.extend(data_comm.Isend(b, dest, tag) for b in bufs)
    return reqs


def start_buffers(data_comm: MPI.Comm, header: OOBHeader, source: int, tag: int) -> tuple[list, list[MPI.Request]]:
    """Post the receives of the out-of-band buffers that follow ``header``."""
    bufs = [_allocate(n) for n in header.sizes]
    return bufs, [data_comm.Irecv(b, source, tag) for b in bufs]
