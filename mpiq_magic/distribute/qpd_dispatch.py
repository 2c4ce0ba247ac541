"""Quasi-probability cutting as the fallback of ``distribute`` (classical rank 0's side).

When no partition of a circuit runs with feed-forward cuts (:class:`~.feedforward.FeedForwardError`)
and the caller asked for ``observables``, :func:`plan_qpd_for_devices` cuts it for the monitors:
two candidates, the partitioner's static assignment (METIS on the interaction graph, every gate
between partitions cut, :func:`.qpd.plan_cuts` with ``partition=``) and qiskit-addon-cutting's
``find_cuts`` (gate and wire cuts) with the same per-monitor width; the one with the lower sampling
overhead wins (then fewer subexperiments). The overhead is known before anything is generated and
is checked against ``max_overhead`` (:class:`~.qpd.OverheadError` names it). :func:`run_qpd_plan`
runs the plan's parameterized families (:mod:`.families`) as primitive tasks on the job's
monitors (one compilation per family and device target, then value rows) and reconstructs.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from .errors import PartitionError
from .qpd import OverheadError, QPDError, QPDPlan, QPDResult, estimate, observable_texts, plan_cuts

Progress = Callable[[str, dict], None]


def _caps(circuit, devices: Sequence[Any]) -> list[int]:
    """Widths of the monitors filled evenly (as feed-forward's automatic partitions)."""
    Q = len(devices)
    n = circuit.num_qubits
    caps = [min(int(d.num_qubits), math.ceil(n / Q)) for d in devices[:Q]]
    if sum(caps) < n:
        raise PartitionError(
            f"The circuit has {n} qubits but {Q} monitor(s) hold {sum(caps)} (widths "
            f"{[d.num_qubits for d in devices[:Q]]}); use more or wider devices."
        )
    return caps


def plan_qpd_for_devices(
    circuit,
    devices: Sequence[Any],
    observables,
    *,
    partition: Any = None,
    max_overhead: float | None = 1000.0,
    num_samples: float = np.inf,
) -> tuple[QPDPlan, str, list[dict]]:
    """The cheapest quasi-probability plan of ``circuit`` over ``devices`` (DeviceSpecs of the
    monitors to use, in qrank order), the name of its candidate, and every candidate tried (name, overhead or error).

    Raises:
        OverheadError: the cheapest candidate's overhead exceeds ``max_overhead`` (nothing ran).
        QPDError: no candidate can cut the circuit (each candidate's reason in the message).
        PartitionError: the circuit does not fit the monitors.
    """
    qc = circuit.remove_final_measurements(inplace=False)
    narrowest = min(int(d.num_qubits) for d in devices)
    candidates: list[tuple[str, dict]] = []
    if partition is not None:
        candidates.append(("given", {"partition": partition}))
    else:
        caps = _caps(qc, devices)
        try:
            from .partition import partition_circuit

            static = partition_circuit(qc, caps, method="static", restarts=1)
            candidates.append(("static", {"partition": static}))
        except PartitionError as exc:
            candidates.append(("static", {"error": str(exc)}))
        candidates.append(("find_cuts", {"max_qubits": max(caps)}))
    tried, plans = [], []
    for name, options in candidates:
        if "error" in options:
            tried.append({"candidate": name, "error": options["error"]})
            continue
        try:
            plan = plan_cuts(qc, observables, max_overhead=None, generate=False, num_samples=num_samples, **options)
        except QPDError as exc:
            tried.append({"candidate": name, "error": str(exc)})
            continue
        tried.append({"candidate": name, "overhead": plan.overhead, "cuts": len(plan.cuts)})
        plans.append((plan.overhead, len(plan.cuts), name, options))
    if not plans:
        raise QPDError("No quasi-probability cut of the circuit was found: "
                       + "; ".join(f"{t['candidate']}: {t['error']}" for t in tried))
    _, _, name, options = min(plans, key=lambda p: (p[0], p[1]))
    plan = plan_cuts(qc, observables, max_overhead=max_overhead, num_samples=num_samples,
                     defer_width=narrowest, **options)
    return plan, name, tried


def run_qpd_plan(hc, dispatcher, job, plan: QPDPlan, *, shots: int, batches: int, deadline: float,
                 participants: Sequence[int], live: Sequence[int], report: Progress) -> tuple[np.ndarray, np.ndarray, dict]:
    """Run the families of ``plan`` on the job's monitors and reconstruct: values, standard
    errors, and what ran (qranks per partition, transfer counts, timings).

    Raises:
        PrimitiveRunError: rows failed or got no answer on the monitors.
    """
    from ..primitives.runner import Task, run_tasks

    fams = plan.families.families
    tasks = [Task(f.circuit, f.values, int(shots)) for f in fams]

    per_qrank: dict[int, int] = {}

    def on_result(index, qrank, result, done, total):  # chunks done per monitor (placement is dynamic)
        per_qrank[qrank] = per_qrank.get(qrank, 0) + 1
        report("executed", {"mode": "qpd", "qrank": qrank, "done": per_qrank[qrank], "total": None,
                            "chunks_done": done, "chunks": total,
                            "seconds": result.timings.get("execute") if hasattr(result, "timings") else None})

    t0 = time.perf_counter()
    run = run_tasks(dispatcher, tasks, job=job, participants=participants, live=list(live), deadline=deadline,
                    on_result=on_result, retry=False)
    t_run = time.perf_counter() - t0
    from .families import register_arrays

    arrays = [register_arrays(r.memory, f.circuit) for f, r in zip(fams, run.results)]
    t1 = time.perf_counter()
    values, errors = estimate(plan, arrays, int(shots), int(batches))
    qranks: dict[str, set[int]] = {}
    for f, r in zip(fams, run.results):
        qranks.setdefault(str(f.label), set()).update(int(q) for q in r.qranks if q >= 0)
    info = {
        "qranks": {k: sorted(v) for k, v in qranks.items()},
        "transfer": {"compile_cache": dict(run.compile_cache), "payloads_sent": int(sum(run.payloads_sent.values())),
                     "bytes": {"payloads": run.payload_bytes, "values": run.values_bytes}, "chunks": run.chunks},
        "timings": {"execute": t_run, "reconstruct": time.perf_counter() - t1,
                    "dispatch": run.timings.get("send", 0.0)},
    }
    return values, errors, info


def qpd_result(plan: QPDPlan, values, errors, info: dict, *, shots: int, batches: int, name: str,
               timings: dict[str, float]) -> QPDResult:
    return QPDResult(
        expectation_values=np.asarray(values), standard_errors=np.asarray(errors), overhead=plan.overhead,
        num_subexperiments=plan.num_subexperiments, cuts=plan.cuts, partition_labels=plan.partition_labels,
        subcircuit_widths=plan.subcircuit_widths, shots=int(shots), num_samples=plan.num_samples,
        batches=int(batches), timings=timings, qranks=info["qranks"], observables=observable_texts(plan),
        num_families=plan.num_families, deferred=sum(f.deferred > 0 for f in plan.families.families),
        transfer=info["transfer"], partition=name,
    )


__all__ = ["OverheadError", "plan_qpd_for_devices", "qpd_result", "run_qpd_plan"]
