"""The one error hierarchy of mpiq_magic. Messages are full sentences with the offending values.

::

    MPIQError (RuntimeError)
    ├── UsageError (ValueError)        an argument or input is wrong; nothing was sent
    │   ├── ConfigError                devices file / init argument (names file, entry, field)
    │   ├── AddressError               a peer that is not part of the communicator
    │   ├── SendQError                 a send_q grouping that does not partition the circuit
    │   └── ... monitor_engine: PayloadError, CircuitTooWideError; cluster: ClusterUsageError; GHZ
    ├── BindingError                   a quantum process cannot be bound to its device
    ├── MPIQTimeoutError (TimeoutError)   ``missing``: who did not answer; ``partial``: what arrived
    └── ProcessFailures                one line ``[who:operation] message`` per failed process
        └── HybridClusterError, GHZRunError
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


class MPIQError(RuntimeError):
    """Base class for every mpiq_magic error."""


class UsageError(MPIQError, ValueError):
    """An argument or input is wrong; it was refused before anything was sent."""


class ConfigError(UsageError):
    """A devices file or an init argument is wrong; the message names file, entry and field."""


class BindingError(MPIQError):
    """A quantum process cannot be bound to the device the configuration gives it."""


class AddressError(UsageError):
    """A peer address (Rank, QRank, Device) does not name a process of this communicator."""


class SendQError(UsageError):
    """A ``send_q`` qubit grouping does not partition the circuit, or a gate crosses groups."""


class MPIQTimeoutError(MPIQError, TimeoutError):
    """A blocking operation did not complete in time.

    ``missing`` names the processes that never arrived (as the layer names them: descriptions
    such as ``"qrank 2 (127.0.0.1:2)"`` in the core, engine ids in the cluster); ``partial``
    keeps what did arrive (e.g. a gather's contributions, None where one is missing).
    """

    def __init__(self, message: str, missing: Sequence[Any] | None = None, partial: Any = None):
        super().__init__(message)
        self.missing = list(missing or [])
        self.partial = partial


@dataclass(frozen=True)
class ProcessFailure:
    """One process's part of a failed operation."""

    who: int | str | None  # engine id == MPI rank, or "qrank 2"; None when no process is to blame
    operation: str
    message: str
    kind: str = "error"  # "error" | "timeout" | "dead"
    traceback: str | None = None

    def line(self) -> str:
        who = "-" if self.who is None else str(self.who)
        return f"[{who}:{self.operation}] {self.message}"


class ProcessFailures(MPIQError):
    """An operation failed on one or more processes; ``failures`` holds one entry per process,
    shown as ``[who:operation] message`` lines (like ipyparallel's ``CompositeError``, without a
    wall of tracebacks: they stay in ``failures[i].traceback``). ``partial`` keeps what the
    operation produced before it failed, or None.
    """

    def __init__(self, summary: str, failures: Sequence[ProcessFailure] = (), partial: Any = None):
        self.summary = summary
        self.failures = list(failures)
        self.partial = partial
        MPIQError.__init__(self, "\n".join([*([summary] if summary else []), *(f.line() for f in self.failures)]))

    def _render_traceback_(self) -> list[str]:
        """IPython shows these lines instead of a traceback."""
        return [f"{type(self).__name__}: {self.summary}".rstrip(": "), *(f.line() for f in self.failures)]
