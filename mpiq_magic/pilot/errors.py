"""Errors of the pilot layer, in the one hierarchy of :mod:`mpiq_magic.kernel.errors`."""

from __future__ import annotations

from ..kernel.errors import MPIQError, UsageError


class PilotUsageError(UsageError):
    """A bad pilot description, task or placement request; nothing was started or sent."""


class NoPlacementError(PilotUsageError):
    """No pilot/device can take a quantum task; ``reasons`` maps each candidate to why not."""

    def __init__(self, message: str, reasons: dict | None = None):
        super().__init__(message)
        self.reasons = dict(reasons or {})


class PilotStateError(MPIQError):
    """The pilot is not in a state that allows the call (not started, already stopped)."""


class PilotStoppedError(MPIQError):
    """The pilot stopped (``stop``/``cancel``) while the task was running; its result is lost."""


class RemoteTaskError(MPIQError):
    """A task raised an exception that could not be sent back as itself; ``remote_traceback`` keeps it."""

    def __init__(self, message: str, remote_traceback: str = ""):
        super().__init__(message)
        self.remote_traceback = remote_traceback


class PilotEngineLostError(MPIQError):
    """The engine running the task died or unregistered before answering; its result is lost."""
