"""Errors of the device-ready path, in the one hierarchy of :mod:`mpiq_magic.kernel.errors`."""

from __future__ import annotations

from mpiq_magic.kernel.errors import MPIQError, UsageError


class MonitorError(MPIQError):
    """Base class for errors raised by monitor_engine."""


class CircuitTooWideError(MonitorError, UsageError):
    """A circuit has more qubits than the device it is meant for; nothing was sent."""


class CompileError(MonitorError):
    """The classical side could not compile a circuit for a device's Target."""


class PayloadError(MonitorError, UsageError):
    """A monitor refused a payload (wrong device, not in its ISA, malformed)."""


class WrongDeviceError(PayloadError):
    """The payload was compiled for another device's Target."""


class ISAError(PayloadError):
    """The payload contains an operation that is not in the device's ISA."""


class BackendError(MonitorError):
    """The device backend failed to execute a valid payload."""
