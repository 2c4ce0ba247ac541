"""Peer addresses: a classical rank, a quantum rank, or a device ``(host, device_id)``."""

from __future__ import annotations

from typing import NamedTuple, Union

from mpi4py import MPI

ANY_SOURCE = MPI.ANY_SOURCE
ANY_TAG = MPI.ANY_TAG


class Rank(NamedTuple):
    """A classical process, by classical rank."""

    index: int

    def __str__(self) -> str:
        return f"rank {self.index}"


class QRank(NamedTuple):
    """A quantum process, by qrank."""

    index: int

    def __str__(self) -> str:
        return f"qrank {self.index}"


class Device(NamedTuple):
    """A quantum process, by the device it is bound to (the paper's ``{IP, device_id}``)."""

    host: str
    device_id: int

    def __str__(self) -> str:
        return f"device ({self.host}, {self.device_id})"


Address = Union[Rank, QRank, Device, tuple, int]


def as_address(peer: Address) -> Rank | QRank | Device | int:
    """Normalise a peer given as an address object, a ``(host, device_id)`` tuple or an int."""
    if isinstance(peer, (Rank, QRank, Device)):
        return peer
    if isinstance(peer, bool):
        raise TypeError(f"A peer address cannot be a bool, got {peer!r}.")
    if isinstance(peer, int):
        return peer
    if isinstance(peer, tuple) and len(peer) == 2 and isinstance(peer[0], str) and isinstance(peer[1], int):
        return Device(*peer)
    raise TypeError(
        f"A peer must be Rank(i), QRank(j), Device(host, device_id), a (host, device_id) tuple "
        f"or an int comm rank, got {peer!r}."
    )
