"""Errors of the notebook layer: per-engine failures gathered into one error.

Every line of a :class:`HybridClusterError` starts with ``[rank:operation]`` (the engine id,
which is the MPI rank, and the cluster operation), like ipyparallel's ``CompositeError``, but
without a wall of tracebacks: IPython shows the lines only (``_render_traceback_``); the
engine tracebacks stay available in ``.failures[i].traceback``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .kernel.errors import MPIQError


@dataclass(frozen=True)
class EngineFailure:
    """One engine's part of a failed operation."""

    engine: int | None  # engine id == MPI rank; None when the failure is not an engine's
    operation: str
    message: str
    kind: str = "error"  # "error" | "timeout" | "dead"
    traceback: str | None = None

    def line(self) -> str:
        who = "-" if self.engine is None else str(self.engine)
        return f"[{who}:{self.operation}] {self.message}"


class HybridClusterError(MPIQError):
    """An operation failed on one or more engines; ``failures`` holds one entry per engine.

    ``partial`` keeps what the operation produced before it failed (e.g. the results the
    monitors that did answer returned), or None.
    """

    def __init__(self, summary: str, failures: Sequence[EngineFailure] = (), partial: Any = None):
        self.summary = summary
        self.failures = list(failures)
        self.partial = partial
        super().__init__(self._text())

    def _text(self) -> str:
        return "\n".join([self.summary, *(f.line() for f in self.failures)])

    @property
    def engines(self) -> list[int]:
        """Engine ids named by the failures, in order, without repeats."""
        seen: list[int] = []
        for f in self.failures:
            if f.engine is not None and f.engine not in seen:
                seen.append(f.engine)
        return seen

    def _render_traceback_(self) -> list[str]:
        """IPython shows these lines instead of a traceback."""
        return [f"{type(self).__name__}: {self.summary}", *(f.line() for f in self.failures)]


class ClusterTimeoutError(HybridClusterError, TimeoutError):
    """An operation did not finish within its timeout; ``missing`` lists engines that did not answer."""

    @property
    def missing(self) -> list[int]:
        return [f.engine for f in self.failures if f.kind in ("timeout", "dead") and f.engine is not None]


class ClusterStateError(MPIQError):
    """The cluster is not in a state that allows the operation (not started, already running...)."""


class ClusterUsageError(MPIQError, ValueError):
    """An argument of a cluster operation is wrong (checked before anything is sent to the engines)."""
