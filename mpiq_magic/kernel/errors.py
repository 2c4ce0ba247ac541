"""Exceptions raised by the MPI-Q core. Messages are full sentences with the offending values."""

from __future__ import annotations


class MPIQError(RuntimeError):
    """Base class for every MPI-Q error."""


class ConfigError(MPIQError, ValueError):
    """A devices file or an init argument is wrong; the message names file, entry and field."""


class BindingError(MPIQError):
    """A quantum process cannot be bound to the device the configuration gives it."""


class AddressError(MPIQError, ValueError):
    """A peer address (Rank, QRank, Device) does not name a process of this communicator."""


class SendQError(MPIQError, ValueError):
    """A ``send_q`` qubit grouping does not partition the circuit, or a gate crosses groups."""


class MPIQTimeoutError(MPIQError, TimeoutError):
    """A blocking operation did not complete in time; ``missing`` lists the peers that never arrived."""

    def __init__(self, message: str, missing: list[str] | None = None):
        super().__init__(message)
        self.missing = list(missing or [])
