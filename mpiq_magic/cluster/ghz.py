"""``%mpiq ghz``: the paper's distributed GHZ (``mpiq_magic.ghz.pipeline``) on the cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ClusterStateError, ClusterUsageError
from . import engine as E

if TYPE_CHECKING:  # pragma: no cover
    from .lifecycle import HybridCluster


def ghz(cluster: "HybridCluster", qubits: int, *, nodes, blocks, shots, serial, timeout, progress):
    """The client's side; see ``HybridCluster.ghz``."""
    from .collect import check_shots, cluster_error

    if isinstance(qubits, bool) or not isinstance(qubits, int) or qubits < 1:
        raise ClusterUsageError(f"The GHZ needs at least 1 qubit, got {qubits!r}.")
    if nodes is not None and not 1 <= nodes <= cluster.quantum:
        raise ClusterUsageError(
            f"--nodes {nodes} is more than the {cluster.quantum} quantum monitor engine(s) of this "
            f"cluster (or less than 1); start one with -q {nodes} or pass --nodes 1..{cluster.quantum}."
        )
    if cluster.quantum == 0:
        raise ClusterStateError("The GHZ pipeline needs quantum monitor engines; this cluster has none.")
    check_shots(shots)
    timeout = cluster._timeout(timeout)
    deadline = cluster._engine_deadline(timeout)
    tasks = {
        e: cluster._apply(e, ghz_task, qubits, blocks=blocks, shots=shots, serial=serial, deadline=deadline,
                          nodes=nodes)
        for e in cluster._live("ghz", cluster._ids("all"))
    }
    out = cluster._collect("ghz", tasks, timeout, progress)
    if out.failures:
        raise cluster_error(f"The {qubits}-qubit GHZ run failed.", out)
    return out.values[0]


def ghz_task(qubits: int, *, blocks: int | None, shots: int, serial: bool, deadline: float, nodes: int | None = None) -> Any:
    """Collective: the distributed GHZ pipeline; rank 0 returns the GHZResult."""
    from ..ghz.pipeline import run_ghz

    hc = E.hc()
    result = run_ghz(
        hc, qubits, blocks, shots=shots, serial=serial,
        cache=E.dispatcher().cache if hc.rank == 0 else None,
        timeout=max(E.remaining(deadline), 0.05), progress=lambda event, info: E.publish(event, **info),
        nodes=nodes,
    )
    if result is not None:
        E.publish("result", result=result.to_dict(top=64))
    return result
