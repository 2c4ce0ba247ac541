"""``HybridCluster.distribute``: a circuit across the monitors with exact feed-forward cuts, or
quasi-probability cuts for expectation values where feed-forward does not apply
(``mpiq_magic.distribute.execute.distribute``) on the cluster's engines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ClusterStateError, ClusterUsageError
from . import engine as E

if TYPE_CHECKING:  # pragma: no cover
    from .lifecycle import HybridCluster


def distribute(cluster: "HybridCluster", circuit, *, shots, partition, monitors, max_variants,
               optimization_level, timeout, progress, observables=None, max_overhead=1000.0, mode="auto",
               batches=10):
    """The client's side; see ``HybridCluster.distribute``. Returns the ``DistributeResult`` (or
    ``QPDResult``)."""
    from qiskit import QuantumCircuit

    from .collect import check_shots, cluster_error

    if not isinstance(circuit, QuantumCircuit):
        raise ClusterUsageError(
            f"distribute() takes a qiskit QuantumCircuit, got {type(circuit).__name__}; load OpenQASM "
            "with qiskit.qasm2.loads / qiskit.qasm3.loads first."
        )
    if cluster.quantum == 0:
        raise ClusterStateError("Distributing a circuit needs quantum monitor engines; this cluster has none.")
    if monitors is not None and not 1 <= monitors <= cluster.quantum:
        raise ClusterUsageError(
            f"monitors={monitors} must be between 1 and the {cluster.quantum} quantum monitor engine(s) "
            "of this cluster."
        )
    if mode not in ("auto", "feed-forward", "qpd"):
        raise ClusterUsageError(f"mode={mode!r} is not one of auto, feed-forward, qpd.")
    check_shots(shots)
    timeout = cluster._timeout(timeout)
    deadline = cluster._engine_deadline(timeout)
    options = dict(shots=shots, partition=partition, monitors=monitors, max_variants=max_variants,
                   optimization_level=optimization_level, deadline=deadline, observables=observables,
                   max_overhead=max_overhead, mode=mode, batches=batches)
    tasks = {
        e: cluster._apply(e, distribute_task, circuit if e == 0 else None, **options)
        for e in cluster._live("distribute", cluster._ids("all"))
    }
    out = cluster._collect("distribute", tasks, timeout, progress)
    if out.failures:
        raise cluster_error(f"Distributing the {circuit.num_qubits}-qubit circuit failed.", out)
    return out.values[0]


def distribute_task(circuit, *, shots: int, partition: Any, monitors: int | None, max_variants: int,
                    optimization_level: int, deadline: float, observables: Any = None,
                    max_overhead: float | None = 1000.0, mode: str = "auto", batches: int = 10) -> Any:
    """Collective on every engine: rank 0 plans, dispatches and stitches; returns its result."""
    from ..distribute.execute import distribute as run

    hc = E.hc()
    result = run(
        hc, circuit, shots=shots, partition=partition, monitors=monitors, max_variants=max_variants,
        optimization_level=optimization_level,
        cache=E.dispatcher().cache if hc.is_classical and hc.rank == 0 else None,
        timeout=max(E.remaining(deadline), 0.05), progress=lambda event, info: E.publish(event, **info),
        observables=observables, max_overhead=max_overhead, mode=mode, batches=batches,
    )
    if result is not None:
        E.publish("result", result=result.to_dict(top=64))
    return result
