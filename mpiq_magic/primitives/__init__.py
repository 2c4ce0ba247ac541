"""Qiskit primitives on MPI-Q: ``SamplerV2`` and ``EstimatorV2`` over the one dispatch path.

Three ways to get one, same classes::

    sampler = SamplerV2(hc)               # headless: classical rank 0, monitors in serve(hc)
    sampler = cluster.sampler()           # a HybridCluster (== SamplerV2(cluster))
    sampler = mpiq_cluster.sampler()      # in a notebook, after %mpiq start

Parameterized circuits are compiled once per (structure, device target) on classical rank 0;
monitors cache the payloads and later runs send only payload ids and parameter values. See
docs/primitives.md.
"""

from __future__ import annotations

from .base import MPIQJob
from .estimator import EstimatorV2
from .runner import HeadlessTransport, PrimitiveRunError, RunReport, Task, TaskResult, run_tasks
from .sampler import SamplerV2

__all__ = [
    "SamplerV2", "EstimatorV2", "MPIQJob", "HeadlessTransport", "PrimitiveRunError", "RunReport",
    "Task", "TaskResult", "run_tasks",
]
