"""``cluster.sampler()`` / ``cluster.estimator()``: Qiskit primitives whose runs go through rank 0.

Client side: :class:`ClusterTransport` is the transport of a :class:`~mpiq_magic.primitives.SamplerV2`
or :class:`~mpiq_magic.primitives.EstimatorV2` built on a cluster. Each run sends classical rank 0
the tasks (a logical circuit travels once per structure: later runs name it by its structure key
and send only parameter values) and starts every live monitor serving the job. Engine side:
:func:`primitive_task` — rank 0 runs :func:`~mpiq_magic.primitives.runner.run_tasks` on its one
Dispatcher (compile once per device target, monitors cache payloads, values only afterwards); the
monitors ``serve`` the job. Typed reply: :class:`PrimitiveReply` (rank 0's RunReport).
Progress reaches the cluster's progress view as ``executed`` events, like a scatter.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from . import engine as E

if TYPE_CHECKING:  # pragma: no cover
    from .lifecycle import HybridCluster

#: Logical circuits rank 0 keeps for later runs (least recently used dropped first).
CIRCUIT_SLOTS = 256


@dataclass(frozen=True)
class PrimitiveRequest:
    """What rank 0 needs for one run: tasks as ``(key, values, shots, seed, pin)`` and the
    circuits it does not hold yet, by structure key."""

    tasks: tuple
    circuits: dict
    dead_qranks: tuple[int, ...] = ()


@dataclass(frozen=True)
class PrimitiveReply:
    """Rank 0's answer: the RunReport, or why the run failed (``unknown`` keys: send circuits again)."""

    report: Any = None
    error: str | None = None
    unknown: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- client
class ClusterTransport:
    """The transport of primitives on a running :class:`~mpiq_magic.cluster.HybridCluster`."""

    def __init__(self, cluster: "HybridCluster", timeout: float | None = None, progress: Any = None):
        cluster._require()
        self.cluster = cluster
        self.timeout = timeout
        #: Extra receiver of this primitive's progress events (besides ``cluster.progress``): a
        #: callable, or a live view with an ``event`` method (e.g. ``widgets.ProgressWidget``).
        handler = getattr(progress, "event", progress)
        self.progress = handler if callable(handler) else None
        self._sent: set[str] = set()
        self._keys: dict[int, tuple[Any, str]] = {}

    @property
    def devices(self):
        return list(self.cluster.devices)

    def run(self, tasks: Sequence[Any]):
        """Run the tasks on the cluster; returns rank 0's RunReport.

        Raises:
            PrimitiveRunError: elements failed on the monitors (``partial``: the report).
            HybridClusterError / ClusterTimeoutError: an engine failed, died or did not answer.
        """
        reply = self._once(tasks)
        if reply.unknown:  # rank 0 lost circuits (e.g. a new cluster): send them all again
            self._sent.clear()
            reply = self._once(tasks)
        if reply.error is not None:
            from ..primitives.runner import PrimitiveRunError

            raise PrimitiveRunError(reply.error, [], partial=reply.report)
        return reply.report

    def _once(self, tasks: Sequence[Any]) -> PrimitiveReply:
        from .collect import cluster_error

        cluster = self.cluster
        timeout = cluster._timeout(self.timeout)
        job = cluster._next_job()
        deadline = cluster._engine_deadline(timeout)
        root = cluster._ids("classical")[0]
        dead = set(cluster._dead_engines(range(cluster.size)))
        if root in dead:
            raise cluster._dead_error("primitive", [root])
        wire, circuits = [], {}
        for task in tasks:
            key = self._key(task.circuit)
            if key not in self._sent:
                circuits[key] = task.circuit
            wire.append((key, task.values, task.shots, task.seed, task.pin))
        dead_qranks = tuple(sorted(cluster.engines[e].qrank for e in dead if cluster.engines[e].role == "quantum"))
        request = PrimitiveRequest(tuple(wire), circuits, dead_qranks)
        monitors = [i.engine for i in cluster.engines if i.role == "quantum" and i.engine not in dead]
        handles = {e: cluster._apply(e, primitive_task, job, deadline, request if e == root else None) for e in [root, *monitors]}
        from .collect import track_executed

        progress = self.progress
        cluster._emit({"event": "scatter", "monitors": len(monitors), "job": job}, progress)
        seen: dict[int, int] = {}
        out = cluster._collect("primitive", handles, timeout, track_executed(progress, seen))
        reply = out.values.get(root)
        if reply is None:
            raise cluster_error("The primitive run failed on classical rank 0; no result.", out)
        self._sent.update(circuits)
        # rank 0 publishes progress only on runs longer than EVENT_INTERVAL: the last event of
        # each monitor comes from the report, so every run shows in the progress view
        per_qrank: dict[int, int] = {}
        for q in getattr(reply.report, "placement", None) or ():
            if q is not None:
                per_qrank[q] = per_qrank.get(q, 0) + 1
        for q, done in sorted(per_qrank.items()):
            if seen.get(q, 0) < done:
                cluster._emit({"event": "executed", "qrank": q, "done": done, "total": done, "job": job}, progress)
        cluster._emit({"event": "gather", "monitors": len(monitors), "job": job}, progress)
        return reply

    def _key(self, circuit) -> str:
        cached = self._keys.get(id(circuit))
        if cached is not None and cached[0] is circuit:
            return cached[1]
        from monitor_engine.payload import structure_key

        key = structure_key(circuit)
        if len(self._keys) > 4 * CIRCUIT_SLOTS:
            self._keys.clear()
        self._keys[id(circuit)] = (circuit, key)
        return key

    def close(self, shutdown: bool = True) -> None:
        """Nothing to release: the cluster owns its monitors (``cluster.stop()`` ends them)."""


def sampler(cluster: "HybridCluster", **options: Any):
    """``SamplerV2`` on ``cluster``; see :class:`mpiq_magic.primitives.SamplerV2`."""
    from ..primitives import SamplerV2

    return SamplerV2(cluster, **options)


def estimator(cluster: "HybridCluster", **options: Any):
    """``EstimatorV2`` on ``cluster``; see :class:`mpiq_magic.primitives.EstimatorV2`."""
    from ..primitives import EstimatorV2

    return EstimatorV2(cluster, **options)


# ----------------------------------------------------------------------------- engines
def primitive_task(job: int, deadline: float, request: PrimitiveRequest | None):
    """Monitors serve the job; rank 0 runs the tasks and returns a :class:`PrimitiveReply`."""
    hc = E.hc()
    if hc.is_quantum:
        return E.serve_job(job, deadline)
    if hc.rank != 0:
        return None
    return _root(job, deadline, request)


def _root(job: int, deadline: float, request: PrimitiveRequest) -> PrimitiveReply:
    from ..primitives.runner import PrimitiveRunError, Task, run_tasks
    from .scatter import _ProgressTicker

    hc = E.hc()
    dispatcher = E.dispatcher()
    job_id = ("cluster", job)
    live = [q for q in range(hc.quantum_size) if q not in set(request.dead_qranks)]
    store: OrderedDict = E._STATE.setdefault("primitive_circuits", OrderedDict())
    for key, circuit in request.circuits.items():
        store[key] = circuit
        store.move_to_end(key)
    while len(store) > CIRCUIT_SLOTS:
        store.popitem(last=False)
    unknown = tuple(sorted({key for key, *_ in request.tasks if key not in store}))
    if unknown:
        dispatcher.abort(job_id, live, "circuits unknown on rank 0; the client sends them again")
        return PrimitiveReply(unknown=unknown)
    tasks = [Task(store[key], values, shots, seed, pin) for key, values, shots, seed, pin in request.tasks]
    ticker = _ProgressTicker(job)
    try:
        report = run_tasks(
            dispatcher, tasks, job=job_id, participants=live, live=live, deadline=deadline,
            on_result=ticker.result, on_idle=ticker.flush,
        )
    except PrimitiveRunError as exc:
        return PrimitiveReply(report=exc.partial, error=str(exc))
    except BaseException as exc:
        dispatcher.abort(job_id, live, f"{type(exc).__name__}: {exc}")
        raise
    return PrimitiveReply(report=report)
