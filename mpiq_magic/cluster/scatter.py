"""``%%mpiq scatter`` / ``%%mpiq bcast``: circuits built on classical rank 0 run on the monitors.

MPIQ_Scatter semantics on the one dispatch path (``monitor_engine.dispatch``): rank 0 runs the
cell, compiles each circuit for the device of the monitor it is placed on and sends the payload
over MPI-Q; each monitor serves the job (``monitor_engine.serve``); results stream back to rank 0;
the client receives rank 0's :class:`~monitor_engine.dispatch.DispatchResult` — results, never
payloads. A list of circuits is dealt over the live monitors (least-loaded first, so equal devices
take circuits round-robin); with ``send_q`` one circuit is split and sub-circuit *j* goes to
qrank *j*; a bcast sends one circuit to every monitor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import ClusterTimeoutError, EngineFailure, HybridClusterError
from . import engine as E

if TYPE_CHECKING:  # pragma: no cover
    from .lifecycle import HybridCluster

#: Rank 0 publishes the monitors' progress at most once per interval (nothing for shorter jobs;
#: the client emits the final events from the results).
EVENT_INTERVAL = 0.1


@dataclass
class ScatterResult:
    """Results of a scatter/bcast, in circuit order (``None`` where a circuit got no result)."""

    results: list[Any]
    missing: dict[int, int] = field(default_factory=dict)  # circuit index -> qrank
    errors: dict[int, str] = field(default_factory=dict)  # circuit index -> message
    payload_bytes: int = 0
    compile_cache: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    job: int = 0
    stdout: str = ""  # what the cell printed on classical rank 0
    failed_over: dict[int, tuple[int, int]] = field(default_factory=dict)  # circuit -> (dead qrank, new qrank)
    notices: list[str] = field(default_factory=list)  # deaths the job survived, one line each

    @property
    def ok(self) -> bool:
        return not self.missing and not self.errors

    @property
    def counts(self) -> list[dict[str, int] | None]:
        return [getattr(r, "counts", None) for r in self.results]


@dataclass(frozen=True)
class ScatterRequest:
    """What rank 0 needs for one scatter/bcast job."""

    code: str | None
    var: str
    mode: str = "scatter"  # "scatter" | "bcast"
    send_q: Sequence[Sequence[int]] | None = None
    shots: int = 1024
    dead_qranks: tuple[int, ...] = ()
    circuits: Any = None  # given by the client instead of built by ``code``
    failover: bool = True  # re-run a dead monitor's circuits on survivors that fit


# ----------------------------------------------------------------------------- client
def scatter(cluster: "HybridCluster", request: ScatterRequest, timeout: float | None, progress) -> ScatterResult:
    """The client's side of a scatter/bcast; see ``HybridCluster.scatter``."""
    from .collect import check_shots, cluster_error, track_executed

    timeout = cluster._timeout(timeout)
    check_shots(request.shots)
    job = cluster._next_job()
    deadline = cluster._engine_deadline(timeout)
    root = cluster._ids("classical")[0]
    dead = set(cluster._dead_engines(range(cluster.size)))
    if root in dead:
        raise cluster._dead_error(request.mode, [root])
    dead_qranks = tuple(sorted(cluster.engines[e].qrank for e in dead if cluster.engines[e].role == "quantum"))
    request = ScatterRequest(**{**request.__dict__, "dead_qranks": dead_qranks})
    monitors = [i.engine for i in cluster.engines if i.role == "quantum" and i.engine not in dead]
    if request.circuits is None and monitors:
        # one request for all: serialised once, rank 0 and the monitors start together
        ids = [root, *monitors]
        ar = cluster.view(ids).apply_async(scatter_task, job, deadline, request)
        tasks = dict(zip(ids, ar.split()))
    else:  # client-side circuits (or no monitor engines: an attached service) go to rank 0 only
        tasks = {e: cluster._apply(e, scatter_task, job, deadline, request if e == root else None) for e in [root, *monitors]}
    cluster._emit({"event": "scatter", "monitors": len(monitors), "job": job}, progress)
    seen: dict[int, int] = {}
    out = cluster._collect(request.mode, tasks, timeout, track_executed(progress, seen))
    outcome = out.values.get(root)
    if outcome is None:  # rank 0 failed or did not answer: nothing to keep
        raise cluster_error(f"%%mpiq {request.mode} failed on classical rank 0; no circuit ran.", out)
    _finish_events(cluster, outcome, seen, job, progress)
    result = ScatterResult(
        results=outcome.results, missing=outcome.missing, errors=outcome.errors,
        payload_bytes=outcome.payload_bytes,
        compile_cache={"hits": outcome.compile_cache.hits, "misses": outcome.compile_cache.misses},
        timings=outcome.timings.to_dict(), job=job, stdout=tasks[root].stdout or "",
        failed_over=dict(outcome.failed_over),
    )
    failures, notices = _failures(cluster, request.mode, outcome, out)
    result.notices = [n.line() for n in notices]
    cluster._remember(notices)
    if failures:
        done = sum(r is not None and getattr(r, "error", None) is None for r in result.results)
        kind = ClusterTimeoutError if any(f.kind in ("timeout", "dead") for f in failures) else HybridClusterError
        err = kind(
            f"%%mpiq {request.mode}: {done} of {len(result.results)} circuit(s) returned a result; "
            "the results that did are kept.",
            failures,
            partial=result,
        )
        cluster._remember(err.failures)
        raise err
    return result


def _finish_events(cluster, outcome, seen, job: int, progress) -> None:
    """Emit the last ``executed`` event of each monitor (rank 0 skips them on short jobs), then ``gather``."""
    per_qrank: dict[int, list[Any]] = {}
    for index, result in enumerate(outcome.results):
        q = outcome.placement[index]
        if q is not None:
            per_qrank.setdefault(q, []).append(result)
    for q, results in sorted(per_qrank.items()):
        done = sum(r is not None for r in results)
        if done and seen.get(q, 0) < done:
            last = [r for r in results if r is not None][-1]
            cluster._emit({
                "event": "executed", "qrank": q, "done": done, "total": len(results),
                "seconds": last.timings.get("execute"), "job": job,
            }, progress)
    cluster._emit({"event": "gather", "monitors": len(per_qrank), "job": job}, progress)


def _failures(cluster, mode: str, outcome, out) -> tuple[list[EngineFailure], list[EngineFailure]]:
    """(failures, notices): what went wrong, and the deaths whose circuits re-ran elsewhere."""
    by_qrank = {i.qrank: i for i in cluster.engines if i.role == "quantum"}
    moved: dict[int, list[int]] = {}
    for index, (old, new) in sorted(outcome.failed_over.items()):
        moved.setdefault(old, []).append(index)
    notices = [
        EngineFailure(
            by_qrank[q].engine, mode,
            f"{by_qrank[q].label()} died (pid {by_qrank[q].pid}); circuit(s) {indices} re-ran on "
            f"qrank(s) {sorted({outcome.failed_over[i][1] for i in indices})}.",
            "dead",
        )
        for q, indices in sorted(moved.items()) if q not in set(outcome.missing.values())
    ]
    covered = {n.engine for n in notices}
    missing_by_q: dict[int, list[int]] = {}
    for index, q in outcome.missing.items():
        missing_by_q.setdefault(q, []).append(index)
    failures: list[EngineFailure] = []
    dead = set(out.dead) | {by_qrank[q].engine for q in outcome.dead}
    for q, indices in sorted(missing_by_q.items()):
        info = by_qrank[q]
        if info.engine in dead:
            msg = f"{info.label()} died (pid {info.pid}); circuit(s) {indices} got no result."
            failures.append(EngineFailure(info.engine, mode, msg, "dead"))
        else:
            msg = f"{info.label()} did not answer in time; circuit(s) {indices} got no result."
            failures.append(EngineFailure(info.engine, mode, msg, "timeout"))
    named = {f.engine for f in failures}
    for index, message in sorted(outcome.errors.items()):
        info = by_qrank.get(outcome.placement[index])
        failures.append(EngineFailure(info.engine if info else None, mode, f"circuit {index}: {message}"))
        named.add(info.engine if info else None)
    for f in out.failures:  # engine-level failures not already explained by a missing circuit
        if f.engine not in named and f.engine not in covered:
            failures.append(f)
    return failures, notices


# ----------------------------------------------------------------------------- engines
def scatter_task(job: int, deadline: float, request: ScatterRequest | None):
    """One request for every engine of a scatter/bcast: each takes its part by role."""
    hc = E.hc()
    if hc.is_quantum:
        return E.serve_job(job, deadline)
    if hc.rank == 0:
        return _root(job, deadline, request)
    return None


def _root(job: int, deadline: float, request: ScatterRequest):
    """Classical rank 0: build the shares, dispatch them, return the DispatchResult."""
    hc = E.hc()
    quantum = hc.quantum_size
    live = [j for j in range(quantum) if j not in set(request.dead_qranks)]
    dispatcher = E.dispatcher()
    job_id = ("cluster", job)
    try:
        if quantum < 1:
            raise ValueError("The cluster has no quantum monitor engine to run circuits on.")
        E.run_code(request.code)
        circuits = request.circuits
        if circuits is None:
            ns = E.user_ns()
            if request.var not in ns:
                raise NameError(
                    f"The cell did not define '{request.var}' on classical rank 0; assign the circuit(s) to "
                    f"'{request.var}' or name another variable with --var."
                )
            circuits = ns[request.var]
        if not live:
            raise RuntimeError(f"Every quantum monitor ({quantum}) is dead; restart the cluster.")
        shares = _shares(circuits, request, quantum)
    except BaseException as exc:
        dispatcher.abort(job_id, live, f"{type(exc).__name__}: {exc}")
        raise
    ticker = _ProgressTicker(job)
    return dispatcher.run(
        shares, job=job_id, participants=live, deadline=deadline, on_result=ticker.result,
        on_idle=ticker.flush, failover=request.failover,
    )


class _ProgressTicker:
    """Publishes each monitor's latest ``executed`` event at most every :data:`EVENT_INTERVAL`."""

    def __init__(self, job: int):
        self.job = job
        self.latest: dict[int, dict[str, Any]] = {}
        self.last = time.perf_counter()

    def result(self, index: int, qrank: int, result: Any, done: int, total: int) -> None:
        self.latest[qrank] = {
            "qrank": qrank, "block": index, "done": done, "total": total,
            "seconds": result.timings.get("execute"), "job": self.job,
        }
        self.flush()

    def flush(self) -> None:
        now = time.perf_counter()
        if self.latest and now - self.last >= EVENT_INTERVAL:
            self.last = now
            for info in self.latest.values():
                E.publish("executed", **info)
            self.latest = {}


def _shares(obj: Any, request: ScatterRequest, quantum: int) -> list:
    """The job's shares: one per circuit, pinned to a qrank for a bcast or with ``send_q``."""
    from monitor_engine.dispatch import Share
    from qiskit import QuantumCircuit

    var, send_q = request.var, request.send_q
    if request.mode == "bcast":
        if not isinstance(obj, QuantumCircuit):
            raise TypeError(f"%%mpiq bcast needs '{var}' to be one QuantumCircuit, got {type(obj).__name__}.")
        return [Share(circuit=obj, qrank=j, shots=request.shots) for j in range(quantum)]
    if send_q is not None:
        if not isinstance(obj, QuantumCircuit):
            raise TypeError(
                f"With --send-q, '{var}' must be one QuantumCircuit to split, got {type(obj).__name__}."
            )
        if len(send_q) > quantum:
            raise ValueError(
                f"--send-q gives {len(send_q)} qubit groups but the cluster has {quantum} monitor(s); "
                "give at most one group per monitor."
            )
        from ..kernel.sendq import split_circuit

        return [Share(circuit=c, qrank=j, shots=request.shots) for j, c in enumerate(split_circuit(obj, send_q))]
    if isinstance(obj, QuantumCircuit):
        circuits = [obj]
    else:
        try:
            circuits = list(obj)
        except TypeError:
            raise TypeError(
                f"'{var}' must be a QuantumCircuit or a list of them, got {type(obj).__name__}."
            ) from None
        bad = [i for i, c in enumerate(circuits) if not isinstance(c, QuantumCircuit)]
        if bad:
            raise TypeError(
                f"'{var}'[{bad[0]}] is a {type(circuits[bad[0]]).__name__}, not a QuantumCircuit."
            )
    if not circuits:
        raise ValueError(f"'{var}' holds no circuit; nothing to scatter.")
    return [Share(circuit=c, shots=request.shots) for c in circuits]
