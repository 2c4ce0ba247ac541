"""Errors of the partitioner, in mpiq_magic's one hierarchy (``kernel.errors``)."""

from __future__ import annotations

from ..kernel.errors import UsageError


class PartitionError(UsageError):
    """A circuit, a network or an option cannot be partitioned as asked; nothing was run."""


class CapacityError(PartitionError):
    """No assignment fits: some time layer needs more qubits than the QPUs hold together.

    ``layer`` is the first layer that cannot fit, ``needed`` the qubits live there, ``available``
    the QPUs' total capacity.
    """

    def __init__(self, message: str, *, layer: int, needed: int, available: int):
        super().__init__(message)
        self.layer = layer
        self.needed = needed
        self.available = available
