"""Moving one item between two processes with a deadline.

numpy arrays travel as a small pickled header followed by the raw buffer (no pickling of the
data); anything else is pickled. Receives probe first (``improbe``), so messages of any size
arrive without a preallocated buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from mpi4py import MPI

from .waiting import Deadline, poll


@dataclass(frozen=True)
class ArrayHeader:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RemoteFailure:
    """Sent instead of an item when the sender failed, so receivers raise instead of waiting."""

    origin: str
    message: str


def is_buffer_array(item: Any) -> bool:
    return isinstance(item, np.ndarray) and not item.dtype.hasobject


def post_item(comm: MPI.Comm, item: Any, dest: int, tag: int) -> list[MPI.Request]:
    """Start sending ``item``; returns the requests to complete."""
    if is_buffer_array(item):
        data = np.ascontiguousarray(item)
        return [
            comm.isend(ArrayHeader(data.dtype.str, data.shape), dest, tag),
            comm.Isend(data, dest, tag),
        ]
    return [comm.isend(item, dest, tag)]


def try_receive_item(comm: MPI.Comm, source: int, tag: int, deadline: Deadline, status: MPI.Status | None = None):
    """One non-blocking attempt: returns ``(item,)`` if a message was there, else None."""
    st = status if status is not None else MPI.Status()
    msg = comm.improbe(source, tag, st)
    if msg is None:
        return None
    item = msg.recv()
    if isinstance(item, ArrayHeader):
        item = finish_array(comm, item, st.Get_source(), st.Get_tag(), deadline)
    return (item,)


def finish_array(comm: MPI.Comm, header: ArrayHeader, source: int, tag: int, deadline: Deadline) -> np.ndarray:
    """Receive the raw buffer that follows an :class:`ArrayHeader` from ``source``."""
    from .errors import MPIQTimeoutError

    array = np.empty(header.shape, dtype=np.dtype(header.dtype))
    req = comm.Irecv(array, source, tag)
    if poll(lambda: True if req.Test() else None, deadline) is None:
        req.Cancel()
        req.Wait()
        raise MPIQTimeoutError(
            f"The data of a {header.shape} {header.dtype} array from comm rank {source} did not arrive "
            f"within {deadline.timeout:g} s after its header.",
            [f"comm rank {source}"],
        )
    return array


def wait_requests(requests: list[MPI.Request], deadline: Deadline) -> bool:
    """Complete every request before the deadline; False if some did not complete."""
    return poll(lambda: True if MPI.Request.Testall(requests) else None, deadline) is not None


def pending(requests_by_peer: dict[Any, list[MPI.Request]]) -> list[Any]:
    """Peers whose requests have not completed yet."""
    return [peer for peer, reqs in requests_by_peer.items() if not MPI.Request.Testall(reqs)]
