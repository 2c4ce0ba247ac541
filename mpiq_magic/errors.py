"""Errors of the cluster layer, in the one hierarchy of :mod:`mpiq_magic.kernel.errors`.

Every line of a :class:`HybridClusterError` starts with ``[rank:operation]`` (the engine id,
which is the MPI rank, and the cluster operation); IPython shows the lines only, the engine
tracebacks stay available in ``.failures[i].traceback``.
"""

from __future__ import annotations

from typing import Any, Sequence

from .kernel.errors import MPIQError, MPIQTimeoutError, ProcessFailure, ProcessFailures, UsageError


class EngineFailure(ProcessFailure):
    """One engine's part of a failed operation (``who`` is the engine id, None when no engine's)."""

    @property
    def engine(self) -> int | None:
        return self.who  # type: ignore[return-value]


class HybridClusterError(ProcessFailures):
    """An operation failed on one or more engines; ``failures`` holds one entry per engine and
    ``partial`` what the operation produced before it failed (e.g. the results that arrived)."""

    @property
    def engines(self) -> list[int]:
        """Engine ids named by the failures, in order, without repeats."""
        seen: list[int] = []
        for f in self.failures:
            if isinstance(f.who, int) and f.who not in seen:
                seen.append(f.who)
        return seen


class ClusterTimeoutError(HybridClusterError, MPIQTimeoutError):
    """An operation did not finish in time, or an engine died; ``missing`` lists those engines."""

    def __init__(self, summary: str, failures: Sequence[ProcessFailure] = (), partial: Any = None):
        HybridClusterError.__init__(self, summary, failures, partial)
        self.missing = [f.who for f in self.failures if f.kind in ("timeout", "dead") and f.who is not None]


class ClusterStateError(MPIQError):
    """The cluster is not in a state that allows the operation (not started, already running...)."""


class ClusterUsageError(UsageError):
    """An argument of a cluster operation is wrong (checked before anything is sent to the engines)."""
