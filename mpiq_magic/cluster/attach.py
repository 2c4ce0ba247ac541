"""``%mpiq attach`` / ``%mpiq release``: the notebook's classical engines attach to a quantum
service (``mpiq serve``, :mod:`monitor_engine.attach`) and release it when their quantum blocks
are done, while the cluster goes on.

The cluster must be classical only (``%mpiq start -c C -q 0``): its ``COMM_WORLD`` is the client
job. After attaching, each engine's ``hc`` (and ``hc`` in the cell namespace) is the hybrid
communicator over both jobs, the service's monitors stand in the dispatch path, so
``%%mpiq scatter`` / ``bcast`` and ``%%mpiq run`` cells reach them; ``%mpiq ghz`` and ``%mpiq
barrier`` run as collectives of both jobs (:func:`ghz`, :func:`barrier`: the service's monitors
call the same function by name); other collective workloads run with
``mpiq_attachment.collective(fn, ...)`` in a ``%%mpiq run`` cell. ``%mpiq release`` hands the
service back (its job ends, or serves its next client) and restores the engines' own ``hc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ClusterStateError
from . import engine as E

if TYPE_CHECKING:  # pragma: no cover
    from .lifecycle import HybridCluster


@dataclass(frozen=True)
class Attached:
    """What ``%mpiq attach`` got: the service and the hybrid communicator's shape."""

    rendezvous: str  # "the port directory ..." or "the name ... at the name server ..."
    service: str
    classical: int
    quantum: int
    devices: tuple[str, ...]

    def __str__(self) -> str:
        return (f"Attached {self.classical} classical engine(s) to {self.service} found at {self.rendezvous}: "
                f"{self.quantum} monitor(s) on {', '.join(self.devices)}; `hc` spans both jobs until "
                "`%mpiq release`.")


@dataclass(frozen=True)
class Released:
    """What ``%mpiq release`` saw on classical rank 0."""

    attached_seconds: float
    disconnect_seconds: float

    def __str__(self) -> str:
        return (f"Released the quantum service after {self.attached_seconds:.1f} s attached "
                f"(disconnect {self.disconnect_seconds * 1e3:.0f} ms); the engines' own `hc` is back.")


def attach(cluster: "HybridCluster", port_dir: str | None, *, wait: float | None, timeout: float | None) -> Attached:
    """Attach every engine of ``cluster`` to the service in ``port_dir`` (collective).

    Raises:
        ClusterStateError: the cluster has quantum engines of its own, or is attached already.
        HybridClusterError: the attach failed (no service, stale port file, busy service ...).
    """
    from .collect import cluster_error

    if cluster.quantum:
        raise ClusterStateError(
            f"Only a classical-only cluster attaches to a quantum service; this one has {cluster.quantum} "
            "quantum engine(s). Start one with `%mpiq start -c C -q 0`."
        )
    if getattr(cluster, "attached", None) is not None:
        raise ClusterStateError(f"The cluster is attached already ({cluster.attached.service}); `%mpiq release` first.")
    limit = cluster._timeout(timeout)
    patience = limit if wait is None else float(wait)
    tasks = {e: cluster._apply(e, attach_task, port_dir, wait=patience, timeout=limit) for e in cluster._ids("all")}
    out = cluster._collect("attach", tasks, patience + limit)
    if out.failures or out.unanswered:
        raise cluster_error(f"Attaching to the quantum service in {port_dir or '$MPIQ_PORT_DIR'} failed.", out)
    cluster.attached = out.values[0]
    return cluster.attached


def release(cluster: "HybridCluster", timeout: float | None = None) -> Released:
    """Release the service the cluster is attached to (collective).

    Raises:
        ClusterStateError: the cluster is not attached.
        HybridClusterError: the release failed on an engine.
    """
    from .collect import cluster_error

    if getattr(cluster, "attached", None) is None:
        raise ClusterStateError("The cluster is not attached to a quantum service; `%mpiq attach DIR` first.")
    limit = cluster._timeout(timeout)
    tasks = {e: cluster._apply(e, release_task) for e in cluster._ids("all")}
    out = cluster._collect("release", tasks, limit + 60)
    if out.failures or out.unanswered:
        raise cluster_error("Releasing the quantum service failed.", out)
    cluster.attached = None
    return out.values[0]


def ghz(cluster: "HybridCluster", qubits: int, *, nodes, blocks, shots, serial, timeout, progress):
    """``%mpiq ghz`` on an attached cluster: :func:`mpiq_magic.ghz.pipeline.run_ghz` as a collective
    of both jobs (``Attachment.collective``); returns the GHZResult of classical rank 0.

    Raises:
        ClusterUsageError: bad ``qubits``/``shots``, or ``nodes`` beyond the service's monitors.
        HybridClusterError: the run failed.
    """
    from ..errors import ClusterUsageError
    from .collect import check_shots, cluster_error

    if isinstance(qubits, bool) or not isinstance(qubits, int) or qubits < 1:
        raise ClusterUsageError(f"The GHZ needs at least 1 qubit, got {qubits!r}.")
    monitors = cluster.attached.quantum
    if nodes is not None and not 1 <= nodes <= monitors:
        raise ClusterUsageError(f"--nodes {nodes} is more than the {monitors} monitor(s) of the attached service "
                                f"(or less than 1); pass --nodes 1..{monitors}.")
    check_shots(shots)
    limit = cluster._timeout(timeout)
    kwargs = {"shots": shots, "serial": serial, "timeout": max(limit - 1.0, limit / 2), "nodes": nodes}
    tasks = {e: cluster._apply(e, collective_task, "mpiq_magic.ghz.pipeline:run_ghz", (qubits, blocks), kwargs)
             for e in cluster._ids("all")}
    out = cluster._collect("ghz", tasks, limit, progress)
    if out.failures:
        raise cluster_error(f"The {qubits}-qubit GHZ run across the attached service failed.", out)
    return out.values[0]


def barrier(cluster: "HybridCluster", flag: str, repeat: int, timeout: float | None, progress):
    """``%mpiq barrier`` on an attached cluster: :func:`monitor_engine.attach_workloads.barriers`
    as a collective of both jobs; the reporter's records (for ``QQ`` the service's qrank 0).

    Raises:
        ClusterUsageError: unknown flag or bad ``repeat``.
        HybridClusterError: a barrier failed or timed out.
    """
    from ..errors import ClusterUsageError
    from .barrier import BARRIER_FLAGS, BarrierRecords
    from .collect import cluster_error

    flag = str(flag).upper()
    if flag not in BARRIER_FLAGS:
        raise ClusterUsageError(f"Unknown barrier flag {flag!r}; use one of {', '.join(BARRIER_FLAGS)}.")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ClusterUsageError(f"repeat must be a positive integer, got {repeat!r}.")
    limit = cluster._timeout(timeout)
    args = (flag, repeat, max(limit - 1.0, limit / 2))
    tasks = {e: cluster._apply(e, collective_task, "monitor_engine.attach_workloads:barriers", args, {})
             for e in cluster._ids("all")}
    out = cluster._collect("barrier", tasks, limit, progress)
    if out.failures:
        raise cluster_error(f"The {flag} barrier across the attached service failed.", out)
    return BarrierRecords(out.values[0])


def collective_task(name: str, args: tuple, kwargs: dict):
    """Engine side: ``name`` (``module:function``) as a collective of both jobs; rank 0 publishes
    what the progress views show (GHZ result, barrier records)."""
    from monitor_engine.attach_service import _resolve

    att = E._STATE.get("attachment")
    if att is None:
        raise ClusterStateError("This engine is not attached to a quantum service.")
    value = att.collective(_resolve(name), *args, **kwargs)
    if value is not None and att.hc.rank == 0:
        if hasattr(value, "to_dict"):
            E.publish("result", result=value.to_dict(top=64))
        elif isinstance(value, list):
            for k, record in enumerate(value):
                E.publish("barrier", record=record, index=k, of=len(value))
    return value


def attach_task(port_dir: str | None, *, wait: float, timeout: float) -> Attached:
    """Engine side: attach over ``COMM_WORLD`` and make the merged ``hc`` this engine's."""
    from monitor_engine.attach import attach as attach_service

    att = attach_service(port_dir, wait=wait, timeout=timeout)
    E._STATE["own_hc"], E._STATE["hc"], E._STATE["attachment"] = E._STATE["hc"], att.hc, att
    E._STATE.pop("dispatcher", None)  # the next one is over the merged communicator
    ns = E.user_ns()
    ns["hc"], ns["mpiq_attachment"] = att.hc, att
    return Attached(att.rendezvous.where, att.service.describe(), att.hc.classical_size, att.hc.quantum_size,
                    tuple(d.name for d in att.hc.devices))


def release_task() -> Released:
    """Engine side: release the service and restore this engine's own ``hc``."""
    att = E._STATE.pop("attachment")
    E._STATE.pop("dispatcher", None)
    try:
        report = att.release()
    finally:
        E._STATE["hc"] = E._STATE.pop("own_hc")
        ns = E.user_ns()
        ns["hc"] = E._STATE["hc"]
        ns.pop("mpiq_attachment", None)
    return Released(report.attached_seconds, report.disconnect_seconds)
